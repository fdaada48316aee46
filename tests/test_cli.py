"""The `duet` command line end to end: help, lazy imports, `infer` on tiny-llava, --json/--out, and bad input.

Most runs go through Typer's CliRunner or `duet_cli.cli.main` in-process (one torch import for the whole
file); a few run the real console script to prove that no traceback ever reaches the terminal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_runs import plain, run_main
from PIL import Image
from typer.testing import CliRunner

from duet_cli import cli, errors

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.png"
DUET = Path(sys.executable).parent / "duet"
ENV = {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}  # wide, plain help and tables
RUN = ["--max-new-tokens", "3", "--device", "cpu"]  # every model run: short and on the CPU
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def lines_of(text: str) -> list[str]:
    """Non-empty lines, ANSI codes removed."""
    return [line for line in plain(text).splitlines() if line.strip()]


def invoke(args: list[str]) -> Any:
    """`duet ARGS` in-process through Typer's CliRunner (stdout and stderr kept apart)."""
    return CliRunner(env=ENV).invoke(cli.app, args)


def infer_ok(args: list[str]) -> Any:
    result = invoke(["infer", *RUN, *args])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def infer_json(args: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(infer_ok([*args, "--json"]).stdout)
    return doc


def table_rows(text: str) -> dict[str, list[str]]:
    """The infer table as {row label: cells}, read from the box-drawn rows of the rendered output."""
    rows: dict[str, list[str]] = {}
    for line in plain(text).splitlines():
        if line.startswith("│"):
            label, *cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[label] = cells
    return rows


# ---------------------------------------------------------------------------------------------------------
# 1. help, 2. lazy imports


KEY_OPTIONS: dict[tuple[str, ...], list[str]] = {
    (): ["infer", "profiles", "--help"],
    ("infer",): [
        "--image",
        "--question",
        "--batch",
        "--model",
        "--profile",
        "--batch-size",
        "--max-new-tokens",
        "--dtype",
        "--device",
        "--seed",
        "--json",
        "--out",
    ],
    ("profiles",): ["list", "show", "check"],
    ("profiles", "list"): ["--json"],
    ("profiles", "show"): ["NAME", "--model", "--json"],
    ("profiles", "check"): ["FILE", "--model", "--json"],
}


def registered_commands() -> list[tuple[str, ...]]:
    """Every command path the app registers (groups included), found through Typer's click command."""
    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(cli.app), ())
    return paths


def test_every_key_command_is_registered() -> None:
    assert set(KEY_OPTIONS) <= set(registered_commands())


@pytest.mark.parametrize("path", registered_commands(), ids=lambda p: " ".join(p) or "duet")
def test_help(path: tuple[str, ...]) -> None:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "Usage:" in text
    assert "Traceback" not in text + result.stderr
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    for option in KEY_OPTIONS.get(path, []):
        if option.isupper():  # an argument: named in the usage line (Typer may print it in lower case)
            assert option.lower() in usage.lower(), usage
        else:
            assert option in text, f"`duet {' '.join(path)} --help` does not mention {option}"


def test_help_imports_no_torch() -> None:
    """`duet --help` stays instant: neither the CLI module nor help nor `profiles` import torch."""
    code = (
        "import sys\n"
        "import duet_cli.cli\n"
        "heavy = lambda: sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('import', heavy())\n"
        "from typer.testing import CliRunner\n"
        "runs = (['--help'], ['infer', '--help'], ['profiles', 'list'], ['profiles', 'show', 'duet-64'])\n"
        "for args in runs:\n"
        "    assert CliRunner().invoke(duet_cli.cli.app, args).exit_code == 0, args\n"
        "print('help', heavy())\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["import []", "help []"]


def test_version_names_duet_torch_and_transformers() -> None:
    from duet_cli import __version__
    from duet_cli.compat import TESTED_RANGE

    result = invoke(["--version"])
    assert result.exit_code == 0
    assert lines_of(result.stdout) == [
        f"duet {__version__} (torch {metadata.version('torch')}, transformers "
        f"{metadata.version('transformers')}; tested with transformers{TESTED_RANGE})"
    ]


def test_untested_transformers_warns_once_and_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import compat, console

    monkeypatch.setattr(compat, "installed_version", lambda: "5.99.0")
    monkeypatch.setattr(console, "_version_checked", False)
    result = infer_ok(["-i", str(SHAPES), "-q", "What is shown?", "--json"])
    warning = (
        f"warning: transformers 5.99.0 is outside duet's tested range ({compat.TESTED_RANGE}); results may "
        "be wrong. Reinstall with the project's constraints.txt to get the tested set"
    )
    assert lines_of(result.stderr) == [warning]
    assert json.loads(result.stdout)["provenance"]["transformers_tested"] == compat.TESTED_RANGE


# ---------------------------------------------------------------------------------------------------------
# 3. infer end to end on tiny-llava, 4. --out


def test_infer_text_table_matches_numbers(tmp_path: Path) -> None:
    """Text mode: notice, question, answer, table; every number of the run's JSON is in its table."""
    out_file = tmp_path / "run.json"
    result = infer_ok(["-i", str(SHAPES), "-q", "What color is the circle?", "--out", str(out_file)])
    stdout = plain(result.stdout)
    notice = "note: tiny-llava has random (untrained) weights; its answers are meaningless."
    assert lines_of(result.stderr) == [notice]
    doc = json.loads(out_file.read_text(encoding="utf-8"))  # the same run, as JSON
    answer = doc["results"][0]["answer"]
    assert lines_of(stdout)[:2] == ["What color is the circle?", answer.strip()]
    assert "tiny-llava · profile duet-192" in stdout

    rows = table_rows(stdout)
    assert rows["tokens entering the LLM"] == ["307 of 576 unreduced"]
    assert rows["average visual tokens"] == ["191.75"]
    numbers = doc["numbers"]
    (sample,) = numbers["samples"]
    assert numbers["mean"] == sample
    assert rows["tokens entering the LLM"] == [f"{sample['tokens_in']} of {sample['unreduced']} unreduced"]
    assert sample["segments"] == [[1, 4, 307], [5, 6, 153], [7, 8, 0]]
    for first, last, n in sample["segments"]:
        label = f"layer {first}" if first == last else f"layers {first}-{last}"
        assert rows[label] == [str(n)]
    assert rows["average visual tokens"] == [f"{sample['avg_visual_tokens']:.2f}"]
    assert rows["reduction vs unreduced"] == [f"{sample['reduction_pct']:.1f}%"]
    t = numbers["timings"]
    assert rows["vision encode"] == [f"{t['vision_ms']:.1f} ms"]
    assert rows["prefill"] == [f"{t['prefill_ms']:.1f} ms"]
    assert rows[f"decode ({t['decode_steps']} tokens)"] == [f"{t['decode_ms']:.1f} ms"]
    assert rows["decode per token"] == [f"{t['decode_ms_per_token']:.1f} ms"]


def test_infer_json_document(tmp_path: Path) -> None:
    from duet_cli import __version__
    from duet_cli.profiles import load_profile

    out_file = tmp_path / "deep" / "er" / "run.json"
    result = infer_ok(
        [
            "-i",
            str(SHAPES),
            "-q",
            "What color is the circle?",
            "--seed",
            "5",
            "--json",
            "--out",
            str(out_file),
        ]
    )
    assert lines_of(result.stderr) == []  # no notice, no progress: stdout is the document alone
    assert out_file.read_text(encoding="utf-8") == result.stdout  # --out writes the same document
    assert sorted(p.name for p in out_file.parent.iterdir()) == ["run.json"]  # no temporary file left
    doc = json.loads(result.stdout)
    assert list(doc) == ["provenance", "results", "numbers", "trace"]

    prov = doc["provenance"]
    assert prov["duet"] == __version__
    assert prov["torch"] == metadata.version("torch")
    assert prov["transformers"] == metadata.version("transformers")
    assert prov["profile_name"] == "duet-192"
    assert prov["profile_hash"] == load_profile("duet-192").hash
    assert prov["model"] == "tiny-llava"
    assert prov["dtype"] == "float32"
    assert prov["device"] == "cpu"
    assert prov["seed"] == 5

    (res,) = doc["results"]
    assert res["id"] is None
    assert res["question"] == "What color is the circle?"
    assert res["images"] == [str(SHAPES)]
    assert isinstance(res["answer"], str)

    numbers = doc["numbers"]
    assert numbers["profile"] == "duet-192"
    assert numbers["num_layers"] == 8
    (sample,) = numbers["samples"]
    assert sample["tokens_in"] == 307
    assert sample["unreduced"] == 576
    assert sample["segments"] == [[1, 4, 307], [5, 6, 153], [7, 8, 0]]
    assert sample["avg_visual_tokens"] == 191.75

    (s,) = doc["trace"]["samples"]
    assert s["visual_tokens_in"] == 307
    assert s["ledger"] == [307] * 4 + [153] * 2 + [0] * 2
    (img,) = s["images"]
    assert img["n_tokens"] == 577
    assert img["has_cls"] is True
    assert img["grid"] == [24, 24]
    dominant = img["dominant"]
    assert len(dominant) == 300
    assert dominant[0] == 0  # CLS is kept
    assert dominant == sorted(set(dominant))
    assert dominant[-1] < 577
    assert len(img["contextual"]) == 7
    drops = s["drops"]
    assert [(d["layer"], d["n_before"], len(d["kept"])) for d in drops] == [(4, 307, 153), (6, 153, 0)]
    kept = drops[0]["kept"]
    assert kept == sorted(set(kept))
    assert kept[0] >= 0 and kept[-1] < 307


def test_infer_baseline() -> None:
    doc = infer_json(["-i", str(SHAPES), "-q", "What is shown?", "--profile", "baseline"])
    assert doc["provenance"]["profile_name"] == "baseline"
    (sample,) = doc["numbers"]["samples"]
    assert sample["tokens_in"] == 576
    assert sample["segments"] == [[1, 8, 576]]
    assert sample["avg_visual_tokens"] == 576
    (s,) = doc["trace"]["samples"]
    assert s["images"] == [] and s["drops"] == []


@pytest.fixture
def noise_png(tmp_path: Path) -> Path:
    path = tmp_path / "noise.png"
    Image.effect_noise((96, 64), 60).convert("RGB").save(path)
    return path


def test_infer_two_images(noise_png: Path) -> None:
    doc = infer_json(["-i", str(SHAPES), "-i", str(noise_png), "-q", "Which picture has shapes?"])
    assert doc["results"][0]["images"] == [str(SHAPES), str(noise_png)]
    (sample,) = doc["numbers"]["samples"]
    assert sample["tokens_in"] == 614  # 2 x 307
    assert sample["unreduced"] == 1152
    (s,) = doc["trace"]["samples"]
    assert [len(img["dominant"]) for img in s["images"]] == [300, 300]
    assert [len(d["kept"]) for d in s["drops"]] == [307, 0]


def test_infer_batch_file(tmp_path: Path, noise_png: Path) -> None:
    """3 records in batches of 2: results in file order, answers as when each record runs alone (greedy)."""
    records = [
        {"id": "a", "image": str(SHAPES), "question": "What color is the circle?"},
        {"id": "b", "images": ["noise.png", str(SHAPES)], "question": "Compare the two pictures in detail."},
        {"id": "c", "image": "noise.png", "question": "Colors?"},
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    batched = infer_json(["--batch", str(batch), "--batch-size", "2"])
    alone = infer_json(["--batch", str(batch), "--batch-size", "1"])
    for doc in (batched, alone):
        assert [r["id"] for r in doc["results"]] == ["a", "b", "c"]
        assert [r["question"] for r in doc["results"]] == [r["question"] for r in records]
        assert doc["results"][1]["images"] == [str(noise_png), str(SHAPES)]
        assert [s["tokens_in"] for s in doc["numbers"]["samples"]] == [307, 614, 307]
    assert [r["answer"] for r in batched["results"]] == [r["answer"] for r in alone["results"]]
    assert batched["numbers"]["samples"] == alone["numbers"]["samples"]


def test_out_unwritable_fails_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loads = spy_load_model(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    target = blocker / "sub" / "run.json"
    code, stdout, stderr = run_main(
        monkeypatch, capsys, ["infer", "-i", str(SHAPES), "-q", "hi", "--json", "--out", str(target)]
    )
    assert code == 1
    assert stdout == ""
    assert lines_of(stderr) == [f"error: cannot write {target}: {blocker} is a file, not a folder"]
    assert loads == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert blocker.read_text(encoding="utf-8") == "x"


# ---------------------------------------------------------------------------------------------------------
# 5. bad input, 6. exit codes


def spy_load_model(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Record every model load `duet infer` makes (and still load)."""
    from duet_cli import api

    calls: list[str | None] = []
    real = api.load_model

    def spy(spec: str | None = None, **kwargs: Any) -> Any:
        calls.append(spec)
        return real(spec, **kwargs)

    monkeypatch.setattr(api, "load_model", spy)
    return calls


@pytest.fixture
def bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of broken inputs, made the working directory so messages name short relative paths."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(SHAPES, "ok.png")
    Path("empty.png").write_bytes(b"")
    Path("truncated.png").write_bytes(SHAPES.read_bytes()[:100])
    Path("notes.png").write_text("this is not an image\n", encoding="utf-8")
    Path("folder.png").mkdir()
    profiles = {
        "typo.yaml": "name: typo\nvison:\n  method: visionzip\n  dominant: 10\n  contextual: 2\n",
        "increasing.yaml": (
            "name: increasing\nllm:\n  method: pyramiddrop\n  layers: [2, 4]\n  keep_ratios: [0.3, 0.6]\n"
        ),
        "negative.yaml": "name: negative\nvision:\n  method: visionzip\n  dominant: -5\n  contextual: 2\n",
        "deep.yaml": "name: deep\nllm:\n  method: pyramiddrop\n  layers: [9]\n  keep_ratios: [0.5]\n",
    }
    for name, text in profiles.items():
        Path(name).write_text(text, encoding="utf-8")
    Path("bad.jsonl").write_text(
        '{"image": "ok.png", "question": "fine"}\n{"image": "ok.png", "question": \n', encoding="utf-8"
    )
    return tmp_path


ASK = ["-i", "ok.png", "-q", "What is shown?"]

# (id, argv after `duet infer`, exit code, fragments the error line names, whether the model must load)
BAD_INPUT: list[tuple[str, list[str], int, list[str], bool]] = [
    ("missing-image", ["-i", "missing.png", "-q", "hi"], 1, ["image not found", "missing.png"], False),
    ("empty-image", ["-i", "empty.png", "-q", "hi"], 1, ["empty (0 bytes)", "empty.png"], False),
    ("truncated-png", ["-i", "truncated.png", "-q", "hi"], 1, ["truncated", "truncated.png"], False),
    ("text-as-png", ["-i", "notes.png", "-q", "hi"], 1, ["not a recognized image", "notes.png"], False),
    ("directory-image", ["-i", "folder.png", "-q", "hi"], 1, ["directory", "folder.png"], False),
    ("unknown-model", [*ASK, "-m", "tiny-lava"], 1, ["'tiny-lava'", "Did you mean: tiny-llava"], True),
    (
        "hub-id-offline",
        [*ASK, "-m", "duet-test/not-a-real-model"],
        1,
        ["'duet-test/not-a-real-model'", "not available offline"],
        True,
    ),
    ("unknown-profile", [*ASK, "-p", "duet-19"], 1, ["'duet-19'", "Did you mean: duet-192?"], False),
    ("profile-typo-key", [*ASK, "-p", "typo.yaml"], 1, ["typo.yaml", "vison", "'vision'"], False),
    (
        "profile-ratios-increasing",
        [*ASK, "-p", "increasing.yaml"],
        1,
        ["increasing.yaml", "llm.keep_ratios[1]", "<= llm.keep_ratios[0]"],
        False,
    ),
    ("profile-negative-count", [*ASK, "-p", "negative.yaml"], 1, ["negative.yaml", "vision.dominant"], False),
    (
        "profile-layer-beyond-model",
        [*ASK, "-p", "deep.yaml"],
        1,
        ["deep.yaml", "llm.layers[0]", "layer 9", "8 decoder layers"],
        True,
    ),
    ("empty-question", ["-i", "ok.png", "-q", ""], 1, ["question is empty"], False),
    ("whitespace-question", ["-i", "ok.png", "-q", "  \t "], 1, ["question is empty"], False),
    ("batch-malformed-json", ["--batch", "bad.jsonl"], 1, ["bad.jsonl:2:", "not valid JSON"], False),
    ("batch-and-question", ["--batch", "bad.jsonl", "-q", "hi"], 2, ["--batch", "--question"], False),
    ("no-question-no-batch", ["-i", "ok.png"], 2, ["--question", "--batch"], False),
]


@pytest.mark.parametrize(
    ("argv", "code", "fragments", "loads_model"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_one_line(
    bad_inputs: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    fragments: list[str],
    loads_model: bool,
) -> None:
    loads = spy_load_model(monkeypatch)
    exit_code, stdout, stderr = run_main(monkeypatch, capsys, ["infer", *RUN, *argv])
    assert exit_code == code
    assert stdout.strip() == ""
    assert "Traceback" not in stdout + stderr
    (line,) = lines_of(stderr)
    assert line.startswith("error: "), line  # a DuetError, not "internal error: ..."
    for fragment in fragments:
        assert fragment in line, line
    if not loads_model:
        assert loads == [], "bad input found only after loading the model"


def run_duet(
    args: list[str], *, wide: bool = True, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "NO_COLOR": "1"} | (env or {})
    env.pop("DUET_DEBUG", None)
    if wide:
        env["COLUMNS"] = "1000"
    else:
        env.pop("COLUMNS", None)
    start = time.monotonic()
    proc = subprocess.run(
        [str(DUET), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        pytest.param(
            ["-i", "missing.png", "-q", "hi"], 1, "image not found: missing.png", id="missing-image"
        ),
        pytest.param(
            [*ASK, "-m", "duet-test/not-a-real-model"], 1, "not available offline", id="hub-id-offline"
        ),
        pytest.param(["--batch", "bad.jsonl", "-q", "hi"], 2, "not both", id="batch-and-question"),
    ],
)
def test_console_script_errors(bad_inputs: Path, args: list[str], code: int, fragment: str) -> None:
    """The real `duet` executable: one line on stderr, nothing on stdout, no traceback; the input is
    checked before any model loads (the default model is a missing folder here, so loading it first
    would give a different error)."""
    proc, _ = run_duet(["infer", *RUN, *args], env={"DUET_MODEL": str(bad_inputs / "no-such-model")})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = lines_of(proc.stderr)
    assert line.startswith("error: ") and fragment in line, line


def test_error_line_is_not_wrapped() -> None:
    """In a pipe (no COLUMNS, not a terminal) a long error message is still exactly one line."""
    proc, _ = run_duet(["profiles", "show", "duet-19"], wide=False)
    assert proc.returncode == 1
    line = "error: unknown profile 'duet-19'. Did you mean: duet-192? Available: "
    assert len(lines_of(proc.stderr)) == 1 and lines_of(proc.stderr)[0].startswith(line), proc.stderr


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.DuetError, 1),
        (errors.InputError, 1),
        (errors.ProfileError, 1),
        (errors.ModelNotFoundError, 1),
        (errors.UnsupportedSetupError, 1),
        (errors.HookError, 1),
        (errors.UsageError, 2),
    ],
)
def test_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: type[errors.DuetError],
    code: int,
) -> None:
    """DuetError exits 1, UsageError 2: one line, whatever the command was doing."""
    from duet_cli import api

    assert error.exit_code == code
    monkeypatch.setattr(api, "infer", raiser(error("it [broke] here")))
    exit_code, stdout, stderr = run_main(monkeypatch, capsys, ["infer", *RUN, "-i", str(SHAPES), "-q", "hi"])
    assert exit_code == code
    assert stdout == ""
    assert lines_of(stderr) == ["error: it [broke] here"]  # Rich markup in a message is printed as is


def test_stray_exception_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli import api

    monkeypatch.delenv("DUET_DEBUG", raising=False)
    monkeypatch.setattr(api, "infer", raiser(RuntimeError("boom")))
    exit_code, stdout, stderr = run_main(monkeypatch, capsys, ["infer", *RUN, "-i", str(SHAPES), "-q", "hi"])
    assert exit_code == 1
    assert stdout == ""
    assert lines_of(stderr) == ["internal error: RuntimeError: boom (set DUET_DEBUG=1 for the traceback)"]

    monkeypatch.setenv("DUET_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["duet", "infer", "-i", str(SHAPES), "-q", "hi"])
    with pytest.raises(RuntimeError, match="boom"):
        cli.main()


def raiser(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail
