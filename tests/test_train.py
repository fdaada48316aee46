"""`duet train` on the bundled tiny-llava (float32, one CPU thread): a few steps under duet-64 with the
profile's token arithmetic, a tiny overfit, resume after SIGKILL mid-save == uninterrupted, 2 gloo
ranks == 1 process at the same global batch, and bad input failing before training starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.training.checkpoint import KILL_IN_SAVE_ENV, latest, load_weights
from duet_cli.training.plan import TrainConfig
from duet_cli.training.trainer import Hooks, TrainReport, train

pytestmark = pytest.mark.usefixtures("one_thread")

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures" / "train"
DATA = FIXTURES / "data.json"


def run(out: Path, data: Path = DATA, hooks: Hooks | None = None, **kw: object) -> TrainReport:
    cfg = TrainConfig(data=str(data), out=out, device="cpu", **kw)  # type: ignore[arg-type]
    report = train(cfg, hooks)
    assert report is not None
    return report


def cli_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop(KILL_IN_SAVE_ENV, None)
    return env


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    from duet_cli.runtime import load_model

    return {k: v.clone() for k, v in load_model(str(folder), dtype="float32").model.state_dict().items()}


def test_few_steps_under_duet64_report_the_profile_arithmetic(tmp_path: Path) -> None:
    args = ["train", "--data", str(DATA), "-p", "duet-64", "--out", str(tmp_path), "--max-steps", "2"]
    result = CliRunner().invoke(
        cli.app, [*args, "--batch-size", "2", "--lr", "1e-3", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["steps"] == 2 and len(doc["history"]) == 2
    assert all(torch.isfinite(torch.tensor(h[1])) for h in doc["history"])
    # duet-64 on the 8-layer model: 102 tokens enter, (4*102 + 2*51 + 2*0)/8 = 63.75 per layer
    assert doc["visual_tokens_in"] == 102.0
    assert doc["avg_visual_tokens"] == 63.75
    assert doc["unreduced_visual_tokens"] == 576
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "report.json").read_text())["final_loss"] == doc["final_loss"]
    assert latest(tmp_path) == tmp_path / "checkpoints" / "step-00000002"
    from duet_cli import api

    shapes = Path(__file__).parent.parent / "examples" / "shapes.png"
    report = api.infer(str(tmp_path / "model"), "duet-64", [("What color?", [shapes])], max_new_tokens=3)
    assert len(report.answers) == 1  # the saved folder loads and answers under a profile


def test_tiny_overfit_reaches_near_zero_loss(tmp_path: Path) -> None:
    """Two samples, same question, different images: the answer must come from the visual tokens."""
    report = run(
        tmp_path,
        FIXTURES / "overfit.json",
        profile="visionzip-64",
        max_steps=45,
        batch_size=2,
        lr=3e-3,
        schedule="constant",
    )
    assert report.final_loss is not None and report.final_loss < 0.05, report.history


def test_resume_after_kill_mid_save_equals_uninterrupted(tmp_path: Path) -> None:
    """Straight 4 steps == (SIGKILL while writing checkpoint 4, then --resume from checkpoint 2)."""
    args = dict(profile="duet-64", max_steps=4, batch_size=2, save_every=2, lr=1e-3, warmup_steps=1, seed=3)
    straight = run(tmp_path / "straight", **args)  # type: ignore[arg-type]
    cut = tmp_path / "cut"
    cmd = [str(BIN / "duet"), "train", "--data", str(DATA), "--out", str(cut), "-p", "duet-64"]
    cmd += ["--max-steps", "4", "--batch-size", "2", "--save-every", "2", "--lr", "1e-3"]
    cmd += ["--warmup-steps", "1", "--seed", "3", "--device", "cpu"]
    killed = subprocess.run(cmd, capture_output=True, text=True, env={**cli_env(), KILL_IN_SAVE_ENV: "4"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert latest(cut) == cut / "checkpoints" / "step-00000002"  # the half-written step 4 is not taken
    assert (cut / "checkpoints" / ".tmp-step-00000004" / "trainable.safetensors").exists()
    load_weights(cut / "checkpoints" / "step-00000002")  # the last good one still loads
    resumed = run(cut, resume=True, **args)  # type: ignore[arg-type]
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert [h[1] for h in resumed.history] == [h[1] for h in straight.history]
    a = load_weights(tmp_path / "straight" / "checkpoints" / "step-00000004")
    b = load_weights(cut / "checkpoints" / "step-00000004")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert not list((cut / "checkpoints").glob(".tmp-*"))


def test_two_gloo_ranks_equal_one_process(tmp_path: Path) -> None:
    """2 gloo ranks (batch 1 x 2 accumulation each) vs 1 process (batch 4), global batch 4, duet-64, SGD.

    Tolerances: per-step loss within 1e-5 relative; weights: max |w_2 - w_1| <= 1e-4 x max |w_1 - w_0|
    (measured: 3e-7 and 2e-5). The two runs pad and sum in different orders (4-row batches vs 1-row
    micro-batches summed across ranks), so float32 rounding differs by ~1e-7 per op and grows through
    8+3 layers, backward and 3 steps at lr 0.5. Normalising per rank or per micro-step instead of by
    the global label count would be off by the count imbalance (here 2 vs 12 tokens: tens of percent).
    SGD, not AdamW: Adam divides each element by its own gradient size, so elements whose gradient is
    at the rounding-noise level take +-lr steps of random sign, whatever the reduction does.
    """
    from duet_cli.runtime import load_model
    from duet_cli.training.collate import Order, encode
    from duet_cli.training.data import read_llava_json

    lm = load_model("tiny-llava", dtype="float32")
    source, _ = read_llava_json(DATA, None)
    order = Order(len(source), 0, 1, 2, 2)
    counts = [
        sum(encode(lm, source[i], 102, 4).label_tokens for i in b)
        for r in range(2)
        for b in order.micro_batches(0, r)
    ]
    assert len(set(counts)) > 1, counts  # ranks and micro-steps see different label counts
    common = ["--data", str(DATA), "-p", "duet-64", "--max-steps", "3", "--lr", "0.5", "--optimizer", "sgd"]
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "duet_cli", "train"]
    two = subprocess.run(
        [
            *cmd,
            *common,
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "1",
            "--grad-accum",
            "2",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = run(tmp_path / "one", profile="duet-64", max_steps=3, lr=0.5, optimizer="sgd", batch_size=4)
    doc = json.loads((tmp_path / "two" / "report.json").read_text())
    assert doc["world_size"] == 2 and doc["global_batch"] == 4
    torch.testing.assert_close(
        torch.tensor([h[1] for h in doc["history"]]),
        torch.tensor([h[1] for h in one.history]),
        rtol=1e-5,
        atol=0,
    )
    w0 = {k: v.clone() for k, v in lm.model.state_dict().items()}
    w1, w2 = model_weights(tmp_path / "one" / "model"), model_weights(tmp_path / "two" / "model")
    moved = max((w1[k] - w0[k]).abs().max().item() for k in w0)
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w0)
    assert moved > 1e-2 and diff <= 1e-4 * moved, (diff, moved)


def test_synth_source_matches_the_benchmark_stream() -> None:
    from duet_cli.benchmarks.synth import BENCHMARK
    from duet_cli.training.data import SynthSource

    source = SynthSource(images=3)
    for i, (image, turns) in enumerate(BENCHMARK.conversations("train", limit=3)):
        conv = source[i]
        assert conv.turns == turns and conv.image().tobytes() == image.tobytes()


def test_a_library_source_trains_like_the_same_records_from_json(tmp_path: Path) -> None:
    """`train(cfg, source=...)`: the JSON file's conversations handed over as a plain list train to the
    same weights as `--data FILE` (same order, same batches), and cfg.data is not opened."""
    from duet_cli.inputs.media import load_image
    from duet_cli.training.data import Conversation

    records = json.loads(DATA.read_text())
    convs = []
    for r in records:
        turns = r["conversations"]
        values = [t["value"].replace("<image>", "").strip() for t in turns]
        pairs = [(values[k], values[k + 1]) for k in range(0, len(values), 2)]
        path = FIXTURES / r["image"]
        convs.append(Conversation(r["id"], pairs, lambda p=path: load_image(p)))

    class Listed(list):  # type: ignore[type-arg]
        name = "listed"

    args = dict(profile="duet-64", max_steps=2, batch_size=2, lr=1e-3, seed=5)
    run(tmp_path / "json", **args)  # type: ignore[arg-type]
    cfg = TrainConfig(data="/nonexistent.json", out=tmp_path / "listed", device="cpu", **args)  # type: ignore[arg-type]
    assert train(cfg, source=Listed(convs)) is not None
    a, b = model_weights(tmp_path / "json" / "model"), model_weights(tmp_path / "listed" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def _one_line_error(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    from duet_cli import runtime

    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(sys, "argv", ["duet", "train", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code in (1, 2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("data", "extra", "fragments"),
    [
        ("malformed.json", ["--strict"], ["malformed.json: record 1:", "conversations[1].from is 'bot'"]),
        (
            "missing_image.json",
            ["--strict"],
            ["missing_image.json: record 1", "image not found", "missing.png"],
        ),
        ("data.json", ["-p", "LAYER9"], ["llm.layers[0]: drop after layer 9", "8 decoder layers"]),
        ("data.json", ["--train", "vision,decoder"], ["--train 'vision,decoder'"]),
        ("data.json", ["--epochs", "1", "--max-steps", "2"], ["--epochs or --max-steps"]),
    ],
)
def test_bad_input_fails_before_training(
    data: str,
    extra: list[str],
    fragments: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    layer9 = tmp_path / "layer9.yaml"
    layer9.write_text("llm:\n  method: pyramiddrop\n  layers: [9]\n  keep_ratios: [0.5]\n")
    extra = [str(layer9) if a == "LAYER9" else a for a in extra]
    line = _one_line_error(
        ["--data", str(FIXTURES / data), "--out", str(tmp_path / "o"), *extra], monkeypatch, capsys
    )
    assert all(f in line for f in fragments), line


def test_unwritable_out_and_skipped_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(["--data", str(DATA), "--out", str(blocker / "sub")], monkeypatch, capsys)
    assert "cannot write" in line and str(blocker) in line
    from duet_cli.training.plan import make_plan

    plan = make_plan(TrainConfig(data=str(FIXTURES / "malformed.json"), out=tmp_path / "o"))
    assert len(plan.source) == 3 and "malformed.json: record 1:" in plan.warnings[0]
    plan = make_plan(TrainConfig(data=str(FIXTURES / "missing_image.json"), out=tmp_path / "o"))
    assert len(plan.source) == 3 and "missing.png" in plan.warnings[0]


def test_help_lists_the_training_knobs() -> None:
    result = CliRunner().invoke(cli.app, ["train", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ["--data", "--out", "--profile", "--epochs", "--max-steps", "--lr", "--schedule"]:
        assert option in result.stdout
    for option in ["--warmup-steps", "--batch-size", "--grad-accum", "--train", "--seed", "--resume"]:
        assert option in result.stdout
    for option in ["--save-every", "--dtype", "--device", "--json", "--image-folder", "--strict"]:
        assert option in result.stdout


# --- non-finite settings, losses and weights ---------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--lr", "inf"], "--lr inf: the learning rate must be a finite number > 0"),
        (["--lr", "nan"], "--lr nan: the learning rate must be a finite number > 0"),
        (["--lr", "0"], "--lr 0.0: the learning rate must be"),
        (["--weight-decay", "inf"], "--weight-decay inf: give a finite number >= 0"),
        (["--max-grad-norm", "inf"], "--max-grad-norm inf: give a finite number >= 0"),
        (["--batch-size", "100000"], "--batch-size 100000 = 100,000 sequences"),
    ],
)
def test_non_finite_settings_fail_before_training(
    extra: list[str],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o"
    line = _one_line_error(["--data", str(DATA), "--out", str(out), *extra], monkeypatch, capsys)
    assert fragment in line, line
    assert not out.exists()


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--lr 1e30 is finite, so it is accepted; step 1 sends the weights to ~1e30 and step 2's loss is nan.
    Training stops there in one line naming the step; step 1's checkpoint stays, nothing newer is written."""
    args = ["--data", str(DATA), "--out", str(tmp_path), "--max-steps", "4", "--save-every", "1"]
    args += ["--optimizer", "sgd", "--lr", "1e30", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", ["duet", "train", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    step1 = tmp_path / "checkpoints" / "step-00000001"
    assert lines[0] == (
        f"error: training stopped at step 2: the loss is nan; nothing of this step was saved, and {step1} "
        "is the last good checkpoint (lower --lr)"
    )
    assert latest(tmp_path) == step1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001"]
    assert not (tmp_path / "model").exists() and not (tmp_path / "report.json").exists()
    assert all(torch.isfinite(v).all() for v in load_weights(step1).values())


def test_non_finite_weights_are_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update that makes a weight non-finite (the loss before it was fine) writes no checkpoint and no
    model: the error says so, and the run's folder holds nothing from it."""
    from duet_cli.training import trainer

    real = trainer._optimizer

    def poisoned(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = real(cfg, params)

        def poison(*_: object) -> None:
            with torch.no_grad():
                params[0].view(-1)[0] = float("inf")

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(trainer, "_optimizer", poisoned)
    with pytest.raises(trainer.TrainingDivergedError) as info:
        run(tmp_path, max_steps=1, lr=1e-3)
    assert str(info.value).startswith("training stopped at step 1: the weights are no longer finite")
    assert "; no checkpoint was saved (lower --lr)" in str(info.value)
    assert latest(tmp_path) is None and not (tmp_path / "model").exists()


def test_a_pickle_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    from duet_cli.errors import InputError
    from duet_cli.training.checkpoint import load_optim

    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (Path.touch, (marker,))

    torch.save({"optimizer": Payload()}, tmp_path / "optim.pt")
    with pytest.raises(InputError) as info:
        load_optim(tmp_path, 0)
    assert str(info.value) == (
        f"checkpoint file {tmp_path / 'optim.pt'} holds more than tensors and plain data, and duet refuses "
        "to unpickle it (that could run code it carries)"
    )
    assert not marker.exists()
