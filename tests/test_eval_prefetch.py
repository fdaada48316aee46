"""The eval loop's background prefetch: batches come back in order and bounded, batched predictions equal
one-by-one predictions, a failure while loading a record is one error naming that record, and no
prefetch thread outlives an eval that returns, fails or is interrupted."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from duet_cli import cli
from duet_cli.errors import UsageError
from duet_cli.evaluate.prefetch import THREAD_NAME, Prefetcher, RecordLoadError
from duet_cli.evaluate.runner import EvalConfig, run_eval
from duet_cli.evaluate.store import read_rows

BAD = "synth-test-000001-q2"  # the third synth test record


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def no_thread_left() -> bool:
    deadline = time.monotonic() + 1.0  # a finished thread may take a moment to leave enumerate()
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not prefetch_threads()


# --- the prefetcher on its own --------------------------------------------------------------------------


def test_batches_come_back_in_order_and_at_most_depth_ahead() -> None:
    batches = [[f"r{b}.{i}" for i in range(b % 3 + 1)] for b in range(12)]  # uneven batch sizes
    started: list[int] = []  # batch index of each load, in the order loads started
    consumed = [0]
    ahead: list[int] = []

    def load(rec: str) -> str:
        batch = int(rec[1:].split(".")[0])
        started.append(batch)
        ahead.append(batch - consumed[0])
        time.sleep(0.001 * (batch % 2))  # uneven speeds on both sides
        return rec.upper()

    with Prefetcher(batches, load, name=str, depth=1) as loading:
        got = []
        for batch in loading:
            got.append(batch)
            consumed[0] += 1
            time.sleep(0.002)
    assert got == [[r.upper() for r in b] for b in batches]
    assert started == sorted(started)  # one thread, record order
    # batch k may start loading once the caller holds batches up to k-2: one queued, one being loaded
    assert max(ahead) <= 2
    assert no_thread_left()


@pytest.mark.parametrize("depth", [1, 2])
def test_a_failing_record_is_one_error_naming_it_after_the_batches_before_it(depth: int) -> None:
    batches = [["a", "b"], ["c", "bad"], ["e"]]

    def load(rec: str) -> str:
        if rec == "bad":
            raise ValueError("the decoder fell over")
        return rec

    got = []
    with (
        pytest.raises(RecordLoadError) as info,
        Prefetcher(batches, load, name=lambda r: f"record {r}") as it,
    ):
        for batch in it:
            got.append(batch)
    assert got == [["a", "b"]]  # everything before the failing batch, nothing after
    assert str(info.value) == "loading record bad failed: ValueError: the decoder fell over"
    assert isinstance(info.value.__cause__, ValueError)  # the original, with its traceback
    assert no_thread_left()


def test_a_duet_error_keeps_its_class_and_exit_code() -> None:
    def load(rec: str) -> str:
        raise UsageError("--frames must be at least 1")

    with (
        pytest.raises(UsageError) as info,
        Prefetcher([["x"]], load, name=lambda r: f"synth record {r}") as it,
    ):
        list(it)
    assert str(info.value) == "synth record x: --frames must be at least 1"
    assert info.value.exit_code == 2
    assert no_thread_left()


def test_leaving_early_stops_the_loader_and_joins_it() -> None:
    loads = []

    def load(rec: int) -> int:
        loads.append(rec)
        return rec

    batches = [[i] for i in range(1000)]
    with pytest.raises(KeyboardInterrupt), Prefetcher(batches, load, name=str) as it:
        next(it)
        time.sleep(0.05)  # the loader fills the queue and blocks on it
        raise KeyboardInterrupt
    assert no_thread_left()
    assert len(loads) <= 3  # bounded: it never ran ahead through the whole list
    n = len(loads)
    time.sleep(0.05)
    assert len(loads) == n  # and it is not still loading


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([[1]], lambda r: r, name=str, depth=0)


# --- inside duet eval (the default test model, tiny-llava) ----------------------------------------------


def eval_rows(out: Path, batch: int, limit: int = 5) -> dict[str, list[dict[str, Any]]]:
    cfg = EvalConfig(
        benchmarks=["synth"], profiles=["duet-64"], limit=limit, batch_size=batch, out=out,
        device="cpu", max_new_tokens=4,
    )  # fmt: skip
    assert run_eval(cfg) is not None
    assert no_thread_left()
    return {p: read_rows(out / "synth" / f"{p}.jsonl") for p in ("baseline", "duet-64")}


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "prefill_ms"} for r in rows]


@pytest.mark.usefixtures("one_thread")
def test_batched_predictions_equal_one_by_one_in_record_order(tmp_path: Path) -> None:
    one = eval_rows(tmp_path / "b1", batch=1)
    three = eval_rows(tmp_path / "b3", batch=3)  # 5 records: a full batch and a short one
    for profile in one:
        assert [r["id"] for r in one[profile]] == [r["id"] for r in three[profile]]
        assert without_timing(one[profile]) == without_timing(three[profile]), profile
        assert all(r["error"] is None for r in three[profile])


@pytest.mark.usefixtures("one_thread")
def test_a_record_that_fails_to_load_is_named_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli.evaluate import runner

    real = runner._image
    calls = [0]

    def image(ref: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:  # the third record loaded: BAD
            raise MemoryError("cannot allocate the pixels")
        return real(ref)

    monkeypatch.setattr(runner, "_image", image)
    out = tmp_path / "out"
    argv = ["duet", "eval", "-B", "synth", "--limit", "4", "--batch-size", "2", "--max-new-tokens", "2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--device", "cpu", "--out", str(out)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"RecordLoadError: loading synth record {BAD} failed: MemoryError: cannot allocate" in lines[0]
    assert [r["id"] for r in read_rows(out / "synth" / "baseline.jsonl")] == [
        "synth-test-000000-q0",
        "synth-test-000000-q1",
    ]  # the batch before it was answered and written whole; nothing of the failing one
    assert no_thread_left()


@pytest.mark.usefixtures("one_thread")
def test_no_prefetch_thread_survives_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import runtime

    real_run, calls = runtime.run, [0]

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(runtime, "run", interrupted)
    cfg = EvalConfig(benchmarks=["synth"], profiles=["baseline"], limit=6, out=tmp_path, max_new_tokens=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg)
    assert no_thread_left()
    assert len(read_rows(tmp_path / "synth" / "baseline.jsonl")) == 1
