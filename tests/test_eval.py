"""`duet eval` on the bundled model and synth: outputs agree, runs resume after SIGINT and SIGKILL without
duplicates or losses, two gloo processes under torchrun give one process's predictions, and a launch onto
a folder another eval holds stops every rank with one line (tests/test_eval_integrity.py: the rest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.evaluate.runner import KILL_AFTER_ENV
from duet_cli.evaluate.store import read_rows

BIN = Path(sys.executable).parent
ARGS = ["-B", "synth", "-p", "visionzip-64", "-p", "duet-64", "--limit", "2", "--max-new-tokens", "3"]
PROFILES = ["baseline", "visionzip-64", "duet-64"]


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p: read_rows(out / "synth" / f"{p}.jsonl") for p in PROFILES}


def answers(out: Path) -> dict[str, list[tuple[str, str | None]]]:
    return {p: [(r["id"], r["prediction"]) for r in rows] for p, rows in predictions(out).items()}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop(KILL_AFTER_ENV, None)
    return subprocess.run(
        [str(BIN / "duet"), "eval", *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-process run at batch size 1."""
    out = tmp_path_factory.mktemp("ref")
    result = CliRunner().invoke(cli.app, ["eval", *ARGS, "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return out


def test_results_table_and_plot_agree(reference: Path) -> None:
    doc = json.loads((reference / "results.json").read_text())
    assert [s["profile"] for s in doc["summary"]] == PROFILES
    rows = {r["profile"]: r for r in doc["cells"]}
    assert rows["duet-64"]["avg_visual_tokens"] == 63.75  # (4*102 + 2*51 + 2*0)/8 on the 8-layer model
    assert rows["visionzip-64"]["avg_visual_tokens"] == 64.0
    assert rows["baseline"]["avg_visual_tokens"] == 576.0
    assert all(r["count"] == 2 and r["failures"] == 0 for r in doc["cells"])
    for profile, rows_ in predictions(reference).items():
        assert len(rows_) == 2, profile
    png = (reference / "accuracy_vs_tokens.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    table = CliRunner().invoke(cli.app, ["eval", *ARGS, "--out", str(reference)], env={"COLUMNS": "200"})
    assert table.exit_code == 0  # a rerun resumes: nothing left to answer, same numbers
    for r in doc["cells"]:
        assert f"{r['score']:.2f}" in table.output and f"{r['avg_visual_tokens']:.2f}" in table.output
    assert predictions(reference)["duet-64"] == read_rows(Path(rows["duet-64"]["predictions"]))


def test_resume_after_sigkill_equals_uninterrupted(reference: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", KILL_AFTER_ENV: "3"}
    killed = subprocess.run(
        [str(BIN / "duet"), "eval", *ARGS, "--out", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert killed.returncode == -9  # SIGKILL after 3 records: baseline done, 1 of visionzip-64
    partial = predictions(tmp_path)
    assert len(partial["baseline"]) == 2 and len(partial["visionzip-64"]) == 1 and partial["duet-64"] == []
    with open(tmp_path / "synth" / "visionzip-64.jsonl", "a") as fh:
        fh.write('{"id": "synth-test-000001-q')  # a torn write, as a kill mid-line leaves
    resumed = run_cli(*ARGS, "--out", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert answers(tmp_path) == answers(reference)  # no duplicates, nothing lost, same answers


def test_resume_after_ctrl_c(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import runtime

    real_run, calls = runtime.run, {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "run", interrupted)
    first = CliRunner().invoke(cli.app, ["eval", *ARGS, "--out", str(tmp_path)])
    assert first.exit_code == 130 and "rerun the same command to resume" in first.output
    assert sum(len(v) for v in predictions(tmp_path).values()) == 3
    monkeypatch.setattr(runtime, "run", real_run)
    second = CliRunner().invoke(cli.app, ["eval", *ARGS, "--out", str(tmp_path)])
    assert second.exit_code == 0, second.output
    assert answers(tmp_path) == answers(reference)


def test_two_gloo_processes_equal_one_process(reference: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "duet_cli", "eval"]
    proc = subprocess.run(
        [*cmd, *ARGS, "--out", str(tmp_path), "--json"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert answers(tmp_path) == answers(reference)  # merged in record order by rank 0
    assert not list((tmp_path / "synth").glob("*.rank*.jsonl"))  # rank files merged away
    two = json.loads((tmp_path / "results.json").read_text())
    one = json.loads((reference / "results.json").read_text())
    assert [(c["profile"], c["score"], c["metrics"]) for c in two["cells"]] == [
        (c["profile"], c["score"], c["metrics"]) for c in one["cells"]
    ]


def test_a_launch_onto_a_held_folder_stops_every_rank(tmp_path: Path) -> None:
    holder = (
        "import sys\nfrom pathlib import Path\nfrom duet_cli.evaluate.lock import out_lock\n"
        "with out_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.readline()\n"
    )
    lock = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert lock.stdout is not None and lock.stdout.readline().strip() == "held"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "duet_cli", "eval"]
        proc = subprocess.run(
            [*cmd, *ARGS, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
        )
    finally:
        lock.communicate("\n", timeout=30)
    assert proc.returncode != 0
    mine = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    assert sorted(mine) == [
        f"error: another duet eval (pid {lock.pid}) is already writing to {tmp_path}: wait for it to "
        "finish, or use another --out",
        "error: another rank of this launch refused the run; see its error line",
    ]
    assert not (tmp_path / "synth").exists()  # no rank wrote anything


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["-B", "synthh"], 2, "Did you mean: synth?"),
        (["-B", "textvqa", "--data", "textvqa=/nonexistent/tv"], 1, "TextVQA_0.5.1_val.json"),
        (["-B", "synth", "--data", "novalue"], 2, "BENCHMARK=FOLDER"),
        (["-B", "synth", "-p", "duet-19"], 1, "Did you mean: duet-192?"),
    ],
)
def test_bad_input_fails_before_loading_the_model(
    args: list[str],
    code: int,
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from duet_cli import runtime

    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(sys, "argv", ["duet", "eval", *args, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], lines


def test_unwritable_out_fails_first(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("-B", "synth", "--out", str(blocker / "sub"))
    assert proc.returncode == 1
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1
    assert "Traceback" not in proc.stderr
