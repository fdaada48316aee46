"""Tiny hostile inputs: YAML bombs, FIFOs and devices, huge or deeply nested files, absurd aspect ratios and
thousands of errors each end in one short line naming the input, fast, without blocking or eating memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_runs import run_main
from PIL import Image
from pngs import png_header

from duet_cli import catalog
from duet_cli.benchmarks import hf
from duet_cli.benchmarks.registry import data_roots
from duet_cli.errors import InputError, ModelNotFoundError, ProfileError, UsageError
from duet_cli.inputs import userfiles
from duet_cli.inputs.batchfile import read_batch
from duet_cli.inputs.bounded import SHOW_CHARS, show
from duet_cli.inputs.media import MAX_ASPECT, check_image, load_image
from duet_cli.profiles import load_profile

DUET = Path(sys.executable).parent / "duet"
VZ = "vision:\n  method: visionzip\n"
SHORT = 600  # an error line about one input (tmp path included) stays under this many characters


def one_line(exc: BaseException, *fragments: str) -> str:
    message = str(exc)
    assert "\n" not in message and len(message) < SHORT, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def no_hang(call: Callable[[], Any], fifo: Path | None = None, seconds: float = 20.0) -> Any:
    """`call()` in a thread; fails the test (and unblocks a reader stuck on `fifo`) if it blocks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:  # a writer that closes at once: the blocked reader sees end of file
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still blocked after {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def fifo(tmp_path: Path, name: str) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / name
    os.mkfifo(path)
    return path


# ---- profiles: YAML bombs and strictness ----


def billion_laughs() -> str:
    """469 bytes that expand to 9**9 strings through anchors and aliases."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("vision: [*i]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_profile_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    assert path.stat().st_size < 500
    started = time.monotonic()
    result = subprocess.run(
        [str(DUET), "profiles", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line == f"error: {path}: line 1: YAML anchors are not allowed (found &a)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nvision: *a\n", "line 2: YAML aliases are not allowed (found *a)"),
        ("base: &b {method: visionzip}\nvision: {<<: *b}\n", "line 1: YAML anchors are not allowed"),
        (
            VZ + "  dominant: 3\n  dominant: 5\n  contextual: 1\n",
            "line 4: duplicate key 'dominant' (first on line 3)",
        ),
        ("vision: {}\nname: x\nvision: {}\n", "line 3: duplicate key 'vision' (first on line 1)"),
        ("vision: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        ("vision: " + "[" * 5000 + "]" * 5000 + "\n", "nesting depth"),
        ("vision:\n  dominant: " + "9" * 5000 + "\n", "line 2: number too long (5,000 characters)"),
        ("vision: 2020-13-45\n", "line 1: bad value (month must be in 1..12)"),
        ("name: x\n---\nname: y\n", "expected a single document"),
    ],
    ids=[
        "alias",
        "merge-alias",
        "duplicate",
        "duplicate-top",
        "nested-100",
        "nested-5000",
        "bigint",
        "bad-date",
        "two-docs",
    ],
)
def test_strict_yaml_is_one_line_naming_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value).startswith(f"{path}: ")
    one_line(info.value, expected)


def test_profile_fifo_is_refused_not_read(tmp_path: Path) -> None:
    path = fifo(tmp_path, "p.yaml")
    with pytest.raises(ProfileError) as info:
        no_hang(lambda: load_profile(str(path)), fifo=path)
    one_line(info.value, str(path), "is a FIFO (pipe): give a regular file")


def test_profile_device_is_refused_not_read() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(ProfileError) as info:
        no_hang(lambda: load_profile("/dev/zero"))
    one_line(info.value, "/dev/zero is a device: give a regular file")


def test_oversized_profile_is_refused_by_size_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"\n" * (userfiles.PROFILE_BYTES + 1))  # only blank lines: parsing would say "empty"
    started = time.monotonic()
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert time.monotonic() - started < 5
    one_line(info.value, str(path), "over the 256.0 KiB limit for a profile file")


def test_twenty_thousand_unknown_keys_is_a_short_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("".join(f"k{i}: 1\n" for i in range(20000)))
    started = time.monotonic()
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert time.monotonic() - started < 20
    message = one_line(
        info.value, "20,000 errors: k0: unknown field", "k4: unknown field", "; and 19,995 more"
    )
    assert "k5:" not in message


def test_thousands_of_errors_in_a_section_are_cut_to_a_few(tmp_path: Path) -> None:
    layers = ", ".join(str(1000 - i) for i in range(1000))
    path = tmp_path / "p.yaml"
    path.write_text(f"llm:\n  method: pyramiddrop\n  layers: [{layers}]\n  keep_ratios: [0.5]\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    one_line(info.value, "llm.layers[1]: must be > llm.layers[0] (999 <= 1000)", "more")


def test_wrong_typed_section_shows_a_bounded_value(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("vision: [" + ", ".join(["lol"] * 20000) + "]\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = one_line(info.value, "vision: expected a mapping with a 'method' key, got [\"lol\", ")
    assert message.endswith("...")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("? " + "x" * 5000 + "\n: 1\n", "x" * 20),  # an explicit key: implicit ones stop at 1024
        (VZ + "  ? " + "d" * 5000 + "\n  : 1\n  dominant: 3\n  contextual: 1\n", "vision." + "d" * 20),
        ("vision:\n  method: " + "v" * 5000 + "\n", "vision.method: unknown method 'vvvv"),
        (
            VZ + "  dominant: '" + "m" * 5000 + "'\n  contextual: 1\n",
            "vision.dominant: expected an integer, got 'mmm",
        ),
        (
            "llm:\n  method: pyramiddrop\n  layers: [8]\n  keep_ratios: [" + "9" * 60 + "]\n",
            "must be in [0, 1]",
        ),
        (
            "llm:\n  method: pyramiddrop\n  layers: [8]\n  keep_ratios: [1.0e+999]\n",
            "expected a finite number",
        ),
    ],
    ids=["long-top-key", "long-section-key", "long-method", "long-string-value", "huge-ratio", "inf-ratio"],
)
def test_long_keys_and_values_are_cut(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    one_line(info.value, expected)


def test_long_unknown_profile_name_is_cut() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("duet-" + "9" * 5000)
    one_line(info.value, "unknown profile 'duet-999")


def test_show_is_bounded_and_cheap() -> None:
    nested: list[Any] = []
    for _ in range(100000):
        nested = [nested]
    for value in (nested, list(range(10**6)), "x" * 10**6, {"k" * 10**5: 1}, 10**5000):
        assert len(show(value)) <= SHOW_CHARS
    assert show("many") == "'many'" and show([1, "a", None, True]) == '[1, "a", null, true]'


# ---- model cards ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: &n x\nfamily: *n\n", "YAML anchors are not allowed"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
    ],
)
def test_model_card_is_read_strictly(tmp_path: Path, text: str, expected: str) -> None:
    card = tmp_path / "card.yaml"
    card.write_text(text)
    with pytest.raises(ModelNotFoundError) as info:
        catalog._parse_card(card, tmp_path)
    one_line(info.value, f"model card {card}: ", expected)


# ---- images ----


def test_fifo_image_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    path = fifo(tmp_path, "pipe.png")
    with pytest.raises(InputError) as info:
        no_hang(lambda: load_image(path), fifo=path)
    message = one_line(info.value, str(path), "is a FIFO (pipe): give a regular file")
    assert "empty" not in message


def test_device_image_is_refused() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(InputError) as info:
        no_hang(lambda: load_image("/dev/zero"))
    one_line(info.value, "/dev/zero is a device")


def test_nul_in_image_path_is_one_line() -> None:
    with pytest.raises(InputError) as info:
        load_image("a\0b.png")
    one_line(info.value, "contains a NUL character")


@pytest.mark.parametrize(("width", "height"), [(30000, 2), (1, 4000), (2 * MAX_ASPECT + 1, 2)])
def test_absurd_aspect_ratio_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    path = png_header(tmp_path / f"strip{width}x{height}.png", width, height)
    assert path.stat().st_size < 300
    with pytest.raises(InputError) as info:
        load_image(path)
    one_line(info.value, str(path), f"is {width}x{height}, an aspect ratio of", f"(limit {MAX_ASPECT}:1")


def test_aspect_ratio_at_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "panorama.png"
    Image.new("RGB", (MAX_ASPECT, 1), "red").save(path)
    assert load_image(path).size == (MAX_ASPECT, 1)


def test_in_memory_images_are_checked_before_the_processor() -> None:
    from duet_cli.runtime import Prompt, build_inputs

    strip = Image.new("RGB", (3000, 2))
    with pytest.raises(InputError) as info:
        check_image(strip)
    one_line(info.value, "in memory", "3000x2")
    # build_inputs refuses it before it touches the model, the session or the processor
    with pytest.raises(InputError, match="aspect ratio of 1,500:1"):
        build_inputs(SimpleNamespace(), SimpleNamespace(), [Prompt("what?", [strip])])  # type: ignore[arg-type]


def test_cli_fifo_image_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fifo(tmp_path, "pipe.png")
    code, _, stderr = no_hang(
        lambda: run_main(monkeypatch, capsys, ["infer", "--device", "cpu", "-i", str(path), "-q", "hi"]),
        fifo=path,
        seconds=120,
    )
    assert code == 1
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "is a FIFO (pipe): give a regular file" in lines[0], stderr


# ---- batch files ----


def test_batch_fifo_is_refused(tmp_path: Path) -> None:
    path = fifo(tmp_path, "batch.jsonl")
    with pytest.raises(InputError) as info:
        no_hang(lambda: read_batch(path), fifo=path)
    one_line(info.value, "is a FIFO (pipe): give a regular file")


def test_batch_deeply_nested_line_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"question": "q", "image": "a.png"}\n' + "[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(InputError) as info:
        read_batch(path)
    one_line(info.value, f"{path}:2: JSON nested too deeply")


def test_batch_over_its_cap_is_refused_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userfiles, "JSON_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text('{"question": "q", "image": "a.png"}\n' * 100)
    with pytest.raises(InputError) as info:
        read_batch(path)
    one_line(info.value, "over the 1000 bytes limit for a batch file")


def test_batch_long_duplicate_id_and_nul_path_are_cut(tmp_path: Path) -> None:
    ident = "i" * 100000
    path = tmp_path / "b.jsonl"
    path.write_text(
        f'{{"question": "q", "image": "a.png", "id": "{ident}"}}\n'
        f'{{"question": "q", "image": "a.png", "id": "{ident}"}}\n'
    )
    with pytest.raises(InputError) as info:
        read_batch(path)
    one_line(info.value, ':2: duplicate "id" \'iii', "(first on line 1)")
    path.write_text('{"question": "q", "image": "a\\u0000b.png"}\n')
    with pytest.raises(InputError) as info:
        read_batch(path)
    one_line(info.value, ":1: image path 'a\\x00b.png' contains a NUL character")


# ---- videos ----


def test_fifo_video_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from duet_cli.inputs.video import load_video

    path = fifo(tmp_path, "clip.mp4")
    with pytest.raises(InputError) as info:
        no_hang(lambda: load_video(path, 2, backend="pyav"), fifo=path)
    message = one_line(info.value, str(path), "is a FIFO (pipe): give a regular file")
    assert "empty" not in message


# ---- benchmark data ----


def test_annotation_fifo_and_deep_json_are_one_line(tmp_path: Path) -> None:
    pipe = fifo(tmp_path, "q.json")
    with pytest.raises(InputError) as info:
        no_hang(lambda: hf.read_json("gqa", pipe), fifo=pipe)
    one_line(info.value, "gqa: annotation file", "is a FIFO (pipe)")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError) as info:
        hf.read_json("gqa", deep)
    one_line(info.value, f"gqa: {deep}: JSON nested too deeply")


def test_pope_deeply_nested_line_is_a_skipped_record(tmp_path: Path) -> None:
    import warnings

    from duet_cli.benchmarks.base import MalformedRecordWarning
    from duet_cli.benchmarks.registry import get_benchmark

    (tmp_path / "val2014").mkdir()
    good = '{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"}'
    (tmp_path / "coco_pope_random.json").write_text(good + "\n" + "[" * 100000 + "]" * 100000 + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MalformedRecordWarning)
        records = list(get_benchmark("pope").load(tmp_path, split="random"))
    assert [r.id for r in records] == ["random/1"]
    (warning,) = [str(w.message) for w in caught if issubclass(w.category, MalformedRecordWarning)]
    assert "coco_pope_random.json:2: JSON nested too deeply" in warning


def test_embedded_strip_image_becomes_a_failing_reference() -> None:
    buffer = io.BytesIO()
    Image.new("1", (30000, 2)).save(buffer, format="PNG")
    ref = hf.image_ref({"bytes": buffer.getvalue(), "path": None}, "t.parquet row 0")
    assert isinstance(ref, str) and ref.startswith("t.parquet row 0 (embedded image is 30000x2, an aspect")
    with pytest.raises(InputError):
        load_image(ref)


def test_misspelt_data_name_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        data_roots(["textvqa"], {"texvqa": tmp_path})
    one_line(info.value, "--data 'texvqa=", "unknown benchmark 'texvqa'. Did you mean: textvqa?")
    with pytest.raises(UsageError) as info:
        data_roots(["textvqa"], {"pope": tmp_path})
    one_line(info.value, "benchmark pope is not being run", "--benchmark pope")
    assert data_roots(["POPE "], {"pope": tmp_path}) == {"pope": tmp_path}


def test_eval_with_a_misspelt_data_name_fails_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli.evaluate.runner import EvalConfig, prepare

    with pytest.raises(UsageError, match="Did you mean: synth"):
        prepare(EvalConfig(benchmarks=["synth"], profiles=["baseline"], data={"synht": tmp_path}))
    out = tmp_path / "out"
    code, _, stderr = run_main(
        monkeypatch,
        capsys,
        [
            "eval",
            "-B",
            "synth",
            "--data",
            f"synht={tmp_path}",
            "--limit",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert code == 2
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "unknown benchmark 'synht'. Did you mean: synth?" in lines[0], stderr
