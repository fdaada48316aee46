"""benchmarks/gpu_check.py: the CPU smoke run (--device cpu --quick) writes the JSON a GPU run writes,
with numbers from every phase; --device cuda without a CUDA device is one line and a non-zero exit.

Subprocesses (the script sets its own threads and environment); about 30 s on a shared 2-core CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PHASES = ("prefill", "decode", "generation")


def run(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    proc = run("--device", "cpu", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_quick_run_names_the_machine_and_completes(quick: tuple[Any, dict]) -> None:
    proc, doc = quick
    assert doc["check"] == "gpu_check" and doc["schema"] == 1
    assert doc["complete"] is True and doc["quick"] is True
    device = doc["device"]
    assert device["kind"] == "cpu" and device["name"] and device["slug"]
    assert device["torch"] == torch.__version__ and device["transformers"]
    assert doc["dtype"] in ("float32", "bfloat16") and doc["dtype_reason"].startswith("auto:")
    assert doc["attention"] == "sdpa"
    assert set(doc["phases"]) == set(PHASES) and set(doc["budgets_s"]) == set(PHASES)
    assert positive(doc["wall_s"])
    for phase in PHASES:  # progress: every phase announces its start and its end on stderr
        assert f"phase {phase}: start" in proc.stderr and f"phase {phase}: ok" in proc.stderr


def test_every_phase_produced_numbers(quick: tuple[Any, dict]) -> None:
    _, doc = quick
    for name, entry in doc["phases"].items():
        assert entry["status"] == "ok" and entry["error"] is None, (name, entry.get("error"))
        assert positive(entry["elapsed_s"]) and entry["elapsed_s"] <= entry["budget_s"]
    prefill = doc["phases"]["prefill"]["summary"]
    assert set(prefill["profiles"]) >= {"baseline", "duet-192", "duet-64"}
    for row in prefill["profiles"].values():
        for key in ("speedup_llm", "speedup_total", "bound_llm", "floor_speedup_llm", "llm_over_floor"):
            assert positive(row[key]), key
        assert positive(row["total_ms"]) and positive(row["llm_prefill_ms"])
    assert positive(prefill["encode_ours_over_stock"]) and positive(prefill["encode_published_over_stock"])
    assert doc["phases"]["prefill"]["result"]["dtype"] == doc["dtype"]

    decode = doc["phases"]["decode"]["summary"]
    assert set(decode) >= {"stock generate()", "baseline", "duet-192"}
    for row in decode.values():
        assert positive(row["calls_per_token"]) and positive(row["time_ratio"])
        assert row["syncs_per_step"] == 0  # duet's decode step reads nothing on the host

    generation = doc["phases"]["generation"]
    assert generation["settings"]["batch"] >= 1 and generation["settings"]["rounds"] >= 1
    assert set(generation["summary"]) == {"baseline", "duet-192", "duet-64"}
    for row in generation["summary"].values():
        assert positive(row["records_per_s"]) and positive(row["tokens_per_s"])
        assert positive(row["speedup_vs_baseline"])
    assert generation["summary"]["baseline"]["speedup_vs_baseline"] == 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_device_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    proc = run("--device", "cuda", "--out", str(out), timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()
