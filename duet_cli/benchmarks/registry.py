"""Benchmark registry: name -> Benchmark, with did-you-mean on unknown names."""

from __future__ import annotations

import difflib
import importlib

from duet_cli.benchmarks.base import Benchmark
from duet_cli.errors import UsageError

# module that defines each benchmark (imported on first use, so `duet --help` stays light)
_MODULES = {
    "synth": "duet_cli.benchmarks.synth",
    "textvqa": "duet_cli.benchmarks.textvqa",
    "pope": "duet_cli.benchmarks.pope",
    "gqa": "duet_cli.benchmarks.gqa",
    "scienceqa": "duet_cli.benchmarks.scienceqa",
    "mme": "duet_cli.benchmarks.mme",
    "msvd": "duet_cli.benchmarks.msvd",
    "msrvtt": "duet_cli.benchmarks.msrvtt",
    "tgif": "duet_cli.benchmarks.tgif",
}


def available() -> list[str]:
    return sorted(_MODULES)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark object named `name` (each module exposes it as BENCHMARK)."""
    key = name.strip().lower()
    if key not in _MODULES:
        close = difflib.get_close_matches(key, available(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown benchmark '{name}'.{hint} Available: {', '.join(available())}")
    module = importlib.import_module(_MODULES[key])
    bench: Benchmark = module.BENCHMARK
    return bench
