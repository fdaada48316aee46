"""Output files and stdout under hostile conditions: `--out` naming an input, a symlink, a device, a FIFO
or a folder; a disk that fills up or a file-size limit; and `COLUMNS=0`, which used to blank all output.

Models load only where a run must finish (tiny-llava); every refusal is checked to come before any load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_runs import run_main

from duet_cli import api, console
from duet_cli.errors import InputError
from duet_cli.reports import jsonio

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.png"
DUET = Path(sys.executable).parent / "duet"
RUN = ["--max-new-tokens", "2", "--device", "cpu"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.usefixtures("one_thread")


def lines_of(text: str) -> list[str]:
    return [line for line in ANSI.sub("", text).splitlines() if line.strip()]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: refusals must come first."""
    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    shutil.copyfile(SHAPES, path)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------------
# --out naming an input


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_infer_out_is_the_input_image(
    how: str, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = image.read_bytes()
    out = image
    if how == "symlink":
        out = tmp_path / "run.json"
        out.symlink_to(image.name)
    elif how == "hard link":
        out = tmp_path / "run.json"
        os.link(image, out)
    code, stdout, stderr = run_main(
        monkeypatch, capsys, ["infer", *RUN, "-i", str(image), "-q", "hi", "--out", str(out)]
    )
    assert code == 1 and stdout == ""
    assert lines_of(stderr) == [
        f"error: cannot write {out}: it is the input file {image}; choose another output file"
    ]
    assert image.read_bytes() == before
    assert how != "symlink" or out.is_symlink()


@pytest.mark.usefixtures("no_model")
def test_infer_out_is_the_batch_file_or_an_image_it_names(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"image": image.name, "question": "hi"}) + "\n", encoding="utf-8")
    for target, named in ((batch, batch), (image, image)):
        before = target.read_bytes()
        code, _, stderr = run_main(
            monkeypatch, capsys, ["infer", *RUN, "--batch", str(batch), "--out", str(target)]
        )
        assert code == 1
        (line,) = lines_of(stderr)
        assert line.startswith(f"error: cannot write {target}: it is the input file ") and line.endswith(
            f"{named.name}; choose another output file"
        ), line
        assert target.read_bytes() == before


@pytest.mark.usefixtures("no_model")
def test_infer_out_is_a_file_a_message_list_names(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "messages.json"
    conv = [
        {
            "role": "user",
            "content": [{"type": "image", "image": f"file://{image}"}, {"type": "text", "text": "hi"}],
        }
    ]
    messages.write_text(json.dumps(conv), encoding="utf-8")
    for target in (messages, image):
        before = target.read_bytes()
        code, _, stderr = run_main(
            monkeypatch, capsys, ["infer", *RUN, "--messages", str(messages), "--out", str(target)]
        )
        assert code == 1
        assert lines_of(stderr)[0].startswith(f"error: cannot write {target}: it is the input file "), stderr
        assert target.read_bytes() == before


@pytest.mark.usefixtures("no_model")
def test_visualize_out_is_the_input_png(
    image: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = image.read_bytes()
    code, _, stderr = run_main(
        monkeypatch, capsys, ["visualize", "-i", str(image), "-q", "hi", "--out", str(image)]
    )
    assert code == 1
    assert lines_of(stderr) == [
        f"error: cannot write {image}: it is the input file {image}; choose another output file"
    ]
    assert image.read_bytes() == before


def test_train_never_writes_over_or_replaces_its_inputs(tmp_path: Path) -> None:
    from duet_cli.training.plan import TrainConfig, make_plan

    data = ROOT / "tests" / "fixtures" / "train" / "data.json"
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")
    with pytest.raises(InputError) as info:  # --model is the folder the run swaps out
        make_plan(TrainConfig(data=str(data), out=out, model=str(out / "model")))
    assert (
        str(info.value)
        == f"{out / 'model'} is {out / 'model'}, which this run replaces: choose another --out"
    )
    copied = out / "report.json"
    shutil.copyfile(data, copied)
    with pytest.raises(InputError, match="it is the input file"):  # the data file is where the report goes
        make_plan(TrainConfig(data=str(copied), out=out))
    assert copied.read_bytes() == data.read_bytes() and listing(out / "model") == ["config.json"]


# ---------------------------------------------------------------------------------------------------------
# --out through a symlink, or naming something that is not a regular file


def test_atomic_write_goes_through_a_symlink_to_its_target(tmp_path: Path) -> None:
    real_dir = tmp_path / "elsewhere"
    real_dir.mkdir()
    real = real_dir / "result.json"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    jsonio.check_writable(link)
    jsonio.atomic_write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)  # the link stays a link
    assert real.read_text() == "new" and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert listing(real_dir) == ["result.json"] and listing(tmp_path) == ["elsewhere", "link.json"]
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(real_dir / "new.json")  # a link to a file not yet made: made there
    jsonio.atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (real_dir / "new.json").read_text() == "made"


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    for call in (jsonio.check_writable, lambda p: jsonio.atomic_write_text(p, "x")):
        with pytest.raises(InputError, match="it is a symbolic link loop"):
            call(a)
    assert a.is_symlink() and b.is_symlink()


def _special(kind: str, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "a FIFO (pipe)"
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
        return path, "a socket"
    if kind == "device":  # a private copy of /dev/null: the real one must never be at stake in a test
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, OSError):
            pytest.skip("cannot create a device node here")
        return path, "a device"
    path.mkdir()
    return path, "a folder"


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
@pytest.mark.parametrize("through_link", [False, True])
def test_a_target_that_is_not_a_regular_file_is_refused(
    kind: str, through_link: bool, tmp_path: Path
) -> None:
    special, words = _special(kind, tmp_path)
    mode = os.lstat(special).st_mode
    target = special
    name = str(special)
    if through_link:
        target = tmp_path / "out.json"
        target.symlink_to(special)
        name = f"{target} (a link to {special})"
    expected = (
        f"cannot write {name}: it is a folder"
        if kind == "folder"
        else f"cannot write {name}: it is {words}, not a regular file"
    )
    for call in (jsonio.check_writable, lambda p: jsonio.atomic_write_bytes(p, b"{}")):
        with pytest.raises(InputError) as info:
            call(target)
        assert str(info.value) == expected
    assert os.lstat(special).st_mode == mode  # still what it was, not a regular file put in its place
    assert target.is_symlink() == through_link


@pytest.mark.usefixtures("no_model")
def test_infer_out_fifo_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo, _ = _special("fifo", tmp_path)
    code, stdout, stderr = run_main(
        monkeypatch, capsys, ["infer", *RUN, "-i", str(SHAPES), "-q", "hi", "--out", str(fifo)]
    )
    assert (code, stdout) == (1, "")
    assert lines_of(stderr) == [f"error: cannot write {fifo}: it is a FIFO (pipe), not a regular file"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_infer_out_symlink_writes_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kept").mkdir()
    real = tmp_path / "kept" / "run.json"
    real.write_text("old")
    link = tmp_path / "run.json"
    link.symlink_to(real)
    code, stdout, _ = run_main(
        monkeypatch, capsys, ["infer", *RUN, "-i", str(SHAPES), "-q", "hi", "--json", "--out", str(link)]
    )
    assert code == 0
    assert link.is_symlink() and real.read_text(encoding="utf-8") == stdout
    assert listing(tmp_path / "kept") == ["run.json"]


# ---------------------------------------------------------------------------------------------------------
# a full disk, a file-size limit


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary file is really created (so its removal is checked), but its descriptor is /dev/full:
    every write fails with the kernel's own ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real = jsonio._open_temp

    def on_full_disk(folder: Path, name: str, target: Path) -> tuple[Path, int]:
        path, fd = real(folder, name, target)
        os.close(fd)
        return path, os.open("/dev/full", os.O_WRONLY)

    monkeypatch.setattr(jsonio, "_open_temp", on_full_disk)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[int]:
    """RLIMIT_FSIZE lowered to `limit` bytes (the soft limit) around the write under test only: a longer
    write gets EFBIG from the kernel (Python ignores SIGXFSZ, so the write fails instead of killing the
    process). Restored before pytest reports the test: its own output file may be larger than that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.usefixtures("full_disk")
def test_disk_full_is_one_line_and_leaves_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(InputError) as info:
        jsonio.atomic_write_text(target, "new" * 1000)
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "old" and listing(tmp_path) == ["out.json"]


def test_file_size_limit_is_one_line_and_leaves_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(InputError) as info, file_size_limit(4096) as limit:
        jsonio.atomic_write_bytes(target, b"x" * (4 * limit))
    assert str(info.value) == f"cannot write {target}: File too large"
    assert listing(tmp_path) == []


@pytest.mark.usefixtures("full_disk")
def test_infer_out_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "run.json"
    code, _, stderr = run_main(
        monkeypatch, capsys, ["infer", *RUN, "-i", str(SHAPES), "-q", "hi", "--out", str(target)]
    )
    assert code == 1
    assert lines_of(stderr)[-1] == f"error: cannot write {target}: No space left on device"
    assert listing(tmp_path) == []


class OneRank:
    """The accelerator surface `checkpoint.save` uses, for one process."""

    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def test_checkpoint_over_the_file_size_limit(tmp_path: Path) -> None:
    import torch

    from duet_cli.training import checkpoint

    kw: dict[str, Any] = {
        "accelerator": OneRank(),
        "optim_state": None,
        "sharded_optimizer": False,
        "keep": 2,
    }
    first = checkpoint.save(tmp_path, 1, weights={"w": torch.zeros(4)}, state={"step": 1}, **kw)
    big = {"w": torch.zeros(1 << 16)}  # 256 KiB of weights
    with pytest.raises(InputError) as info, file_size_limit(64 * 1024):
        checkpoint.save(tmp_path, 2, weights=big, state={"step": 2}, **kw)
    final = checkpoint.checkpoint_root(tmp_path) / "step-00000002"
    assert str(info.value) == f"cannot write checkpoint {final}: File too large (os error 27)"
    assert listing(checkpoint.checkpoint_root(tmp_path)) == ["step-00000001"]  # no half folder
    assert checkpoint.latest(tmp_path) == first and checkpoint.load_state(first) == {"step": 1}


def test_trained_model_over_the_file_size_limit(tmp_path: Path, tiny_llava: Any) -> None:
    from duet_cli.training.trainer import _save_model

    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")  # the previous model: must survive
    loaded = SimpleNamespace(model=tiny_llava, processor=SimpleNamespace(save_pretrained=lambda folder: None))
    full = {f"model.{k}": v for k, v in tiny_llava.state_dict().items()}
    with pytest.raises(InputError) as info, file_size_limit(64 * 1024):
        _save_model(loaded, full, out)
    assert str(info.value).startswith(f"cannot write the trained model {out / 'model'}: File too large")
    assert listing(out) == ["model"] and listing(out / "model") == ["config.json"]


def test_a_stray_write_fault_is_one_line_not_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The safety net in cli.main for a write outside jsonio that the disk refuses."""
    from duet_cli.commands import profiles

    def full(document: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/preds.jsonl")

    monkeypatch.setattr(profiles, "print_json", full)
    code, _, stderr = run_main(monkeypatch, capsys, ["profiles", "list", "--json"])
    assert code == 1
    assert lines_of(stderr) == ["error: cannot write /data/preds.jsonl: No space left on device"]


def test_stdout_on_a_full_disk_is_one_line() -> None:
    """The real console script with stdout on /dev/full: the kernel's ENOSPC, one line, no traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    env.pop("DUET_DEBUG", None)
    for args in (["profiles", "list"], ["profiles", "list", "--json"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run(
                [str(DUET), *args],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
        assert proc.returncode == 1, proc.stderr
        assert lines_of(proc.stderr) == ["error: cannot write standard output: No space left on device"], (
            proc.stderr
        )


# ---------------------------------------------------------------------------------------------------------
# COLUMNS=0 and --json without Rich


def test_width_env_is_sanitized() -> None:
    env = {"COLUMNS": "0", "LINES": "-3", "TERMINAL_WIDTH": "0"}
    console.sanitize_width_env(env)
    assert env == {"COLUMNS": "80", "LINES": "25"}
    env = {"COLUMNS": "132", "LINES": "40", "TERMINAL_WIDTH": "abc"}
    console.sanitize_width_env(env)
    assert env == {"COLUMNS": "132", "LINES": "40"}


def test_a_zero_width_console_still_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `COLUMNS=0` makes of the consoles at import (a width of 0): tables, JSON and errors all show."""
    monkeypatch.setattr(console.out, "_width", 0)
    monkeypatch.setattr(console.err, "_width", 0)
    code, stdout, _ = run_main(monkeypatch, capsys, ["profiles", "list"])
    assert code == 0 and "duet-64" in stdout and max(len(line) for line in stdout.splitlines()) <= 80
    code, stdout, _ = run_main(monkeypatch, capsys, ["profiles", "show", "duet-64", "--json"])
    assert code == 0 and json.loads(stdout)["name"] == "duet-64"
    code, _, stderr = run_main(monkeypatch, capsys, ["profiles", "show", "no-such-profile"])
    assert code == 1 and lines_of(stderr)[0].startswith("error: unknown profile 'no-such-profile'")


@pytest.mark.parametrize(
    "args",
    [
        ["profiles", "list", "--json"],
        ["profiles", "show", "duet-64", "--json"],
        ["profiles", "check", "duet-64", "--json"],
        ["profile", "--config-only", "-m", "llava-1.5-7b", "-p", "duet-192", "--json"],
        ["infer", *RUN, "-i", str(SHAPES), "-q", "hi", "--json"],
    ],
)
def test_json_never_goes_through_rich(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_rich(*a: object, **k: object) -> None:
        raise AssertionError("--json went through the Rich console")

    for name in ("print", "print_json", "out"):
        monkeypatch.setattr(console.out, name, no_rich)
    code, stdout, _ = run_main(monkeypatch, capsys, args)
    assert code == 0
    assert stdout == jsonio.to_json(json.loads(stdout)) + "\n"  # exactly one document, as to_json writes it


def test_console_script_with_columns_0(tmp_path: Path) -> None:
    """The real `duet` with COLUMNS=0 (as some CI shells and `docker exec` without a tty set it): the
    answer and the table, a --json document, a usage error and an error line all appear."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "0", "OMP_NUM_THREADS": "1"}
    env.pop("DUET_DEBUG", None)

    def duet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DUET), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    proc = duet("infer", *RUN, "-i", str(SHAPES), "-q", "What is shown?")
    assert proc.returncode == 0, proc.stderr
    out = lines_of(proc.stdout)
    assert out[0] == "What is shown?" and any("average visual tokens" in line for line in out), proc.stdout
    proc = duet("profiles", "show", "duet-64", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["name"] == "duet-64"
    proc = duet("profiles", "show", "no-such-profile")
    assert proc.returncode == 1 and lines_of(proc.stderr)[0].startswith("error: unknown profile"), proc.stderr
    proc = duet("infer", "--no-such-option")
    assert proc.returncode == 2 and "No such option: --no-such-option" in proc.stderr, proc.stderr
