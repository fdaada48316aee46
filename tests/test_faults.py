"""Faults that used to end in `internal error:` or in the OS killing duet: a broken model folder, a
device this build lacks, out-of-range generation settings, more tokens than the model's context. Each is
one line naming the input and what is wrong, and nothing is loaded or run that need not be."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from duet_cli import cli, runtime

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "tiny-llava"
SHAPES = ROOT / "examples" / "shapes.png"
ASK = ["-i", str(SHAPES), "-q", "what is it ?", "--max-new-tokens", "3", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int = 1
) -> str:
    """`duet ARGS` through the console-script entry point: exit `code` and exactly one line on stderr."""
    monkeypatch.setattr(sys, "argv", ["duet", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == code, err
    assert len(lines) == 1, lines
    assert "internal error" not in lines[0] and "Traceback" not in err
    return lines[0]


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the bundled tiny-llava model folder, to break."""
    return Path(shutil.copytree(TINY, tmp_path / "model"))


# --- broken model folders ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 7, 100_000])
def test_a_truncated_safetensors_names_the_file(
    size: int, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(size)
    line = one_line(["infer", "-m", str(folder), *ASK], monkeypatch, capsys)
    assert f"weights file {weights} is truncated or corrupt" in line, line


def test_a_pickle_checkpoint_is_refused_unopened(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pytorch_model.bin that carries code: torch.load(weights_only=True) refuses it, and the user sees
    that duet refuses to unpickle it, not torch's advice to pass weights_only=False."""
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (Path.touch, (marker,))

    (folder / "model.safetensors").unlink()
    torch.save({"lm_head.weight": torch.zeros(2), "x": Payload()}, folder / "pytorch_model.bin")
    line = one_line(["infer", "-m", str(folder), *ASK], monkeypatch, capsys)
    assert f"{folder / 'pytorch_model.bin'} is a pickle checkpoint" in line, line
    assert "duet refuses to unpickle it" in line and "weights_only" not in line
    assert not marker.exists()


def test_a_corrupt_pickle_archive_names_the_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "model.safetensors").unlink()
    weights = folder / "pytorch_model.bin"
    torch.save({"lm_head.weight": torch.zeros(2)}, weights)
    with open(weights, "r+b") as fh:
        fh.truncate(300)
    line = one_line(["infer", "-m", str(folder), *ASK], monkeypatch, capsys)
    assert f"weights file {weights} is truncated or corrupt" in line, line
    assert len(line) < 300  # torch's paragraph of advice is cut to its first sentence


# --- devices and generation settings -------------------------------------------------------------------


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_on_a_build_without_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(["infer", *ASK, "--device", "mps"], monkeypatch, capsys, code=2)
    assert line.startswith("error: --device mps: this PyTorch build") and "use cpu" in line, line


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("meta", "duet runs on cpu, cuda, cuda:N or mps"),
        ("cuda:-1", "is not a device"),
        ("gpu", "is not a device"),
    ],
)
def test_devices_duet_cannot_run_on(
    device: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(["infer", *ASK, "--device", device], monkeypatch, capsys, code=2)
    assert fragment in line and device in line, line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["infer", *ASK, "--seed", str(10**23)], f"--seed {10**23}: choose an integer from 0 to 4294967295"),
        (["infer", *ASK, "--seed", "-1"], "--seed -1: choose an integer"),
        (["eval", "--benchmark", "synth", "--seed", str(2**64)], "--seed 18446744073709551616"),
        (["train", "--data", "synth", "--out", "OUT", "--seed", str(10**23)], "--seed"),
        (["infer", *ASK, "--sample", "--temperature", "0"], "--temperature 0.0: sampling (--sample) needs"),
        (["infer", *ASK, "--sample", "--temperature", "inf"], "--temperature inf: give a finite number"),
        (["infer", *ASK, "--sample", "--top-p", "0"], "--top-p 0.0: sampling (--sample) needs a top-p > 0"),
        (["infer", *ASK, "--num-beams", "100000"], "--num-beams 100000 = 100,000 sequences decoded at once"),
        (["profile", "--batch-size", "100000", "--device", "cpu"], "--batch-size 100000 = 100,000 sequences"),
    ],
)
def test_generation_settings_are_checked_before_the_model_loads(
    args: list[str],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    no_model(monkeypatch)
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    line = one_line(args, monkeypatch, capsys, code=2)
    assert fragment in line, line


def test_a_large_batch_of_few_prompts_is_not_refused(tmp_path: Path) -> None:
    """The bound is on what one forward pass decodes: --batch-size 100000 over one prompt is one row."""
    from duet_cli.gen_settings import check_rows

    check_rows(min(100_000, 1), 4)
    from duet_cli import api

    report = api.infer("tiny-llava", "duet-64", [("what ?", [SHAPES])], batch_size=100_000, max_new_tokens=2)
    assert len(report.answers) == 1


def test_the_api_checks_the_same_settings() -> None:
    from duet_cli import api
    from duet_cli.errors import UsageError

    for kwargs, fragment in [
        ({"seed": 10**23}, "--seed"),
        ({"do_sample": True, "temperature": 0.0}, "--temperature 0.0"),
        ({"num_beams": 5000}, "5,000 sequences"),
    ]:
        with pytest.raises(UsageError, match=fragment):
            api.infer("tiny-llava", "baseline", [("what ?", [SHAPES])], max_new_tokens=2, **kwargs)


# --- the model's context ---------------------------------------------------------------------------------


def _with_context(folder: Path, positions: int) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = positions
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_more_visual_tokens_than_the_context_are_refused(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_context(folder, 300)
    line = one_line(["infer", "-m", str(folder), "-p", "baseline", *ASK], monkeypatch, capsys)
    assert "more than model" in line and "context of 300 positions (max_position_embeddings)" in line, line
    assert "576 of them visual" in line


def test_an_answer_that_runs_past_the_context_warns_once(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli import api

    loaded = api.load_model(str(_with_context(folder, 4096)), device="cpu")
    prompt_tokens = api.infer(loaded, "duet-64", [("what is it ?", [SHAPES])], max_new_tokens=1)
    assert "warning" not in capsys.readouterr().err
    length = prompt_tokens.trace.samples[0].visual_tokens_in  # the visual part; the rest is text
    loaded.model.config.text_config.max_position_embeddings = length + 20  # text fits, 30 new tokens do not
    for _ in range(2):
        api.infer(loaded, "duet-64", [("what is it ?", [SHAPES])], max_new_tokens=30)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: a prompt of "), lines
    assert f"runs past model {folder}'s context of {length + 20} positions" in lines[0], lines
