"""Benchmark registry: name -> Benchmark, with did-you-mean on unknown names (in --benchmark and in
--data NAME=PATH alike)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from duet_cli.benchmarks.base import Benchmark
from duet_cli.errors import UsageError
from duet_cli.inputs.bounded import show

# module that defines each benchmark (imported on first use, so `duet --help` stays light), as
# "module" (which exposes it as BENCHMARK) or "module:ATTRIBUTE"
_MODULES = {
    "synth": "duet_cli.benchmarks.synth",
    "synth-large": "duet_cli.benchmarks.synth:LARGE_BENCHMARK",
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
    """The benchmark object named `name` (its module's BENCHMARK unless the table names another)."""
    key = name.strip().lower()
    if key not in _MODULES:
        raise UsageError(f"unknown benchmark {show(name)}.{_hint(key)} Available: {', '.join(available())}")
    module, _, attribute = _MODULES[key].partition(":")
    bench: Benchmark = getattr(importlib.import_module(module), attribute or "BENCHMARK")
    return bench


def _hint(key: str) -> str:
    close = difflib.get_close_matches(key, available(), n=3)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def data_roots(benchmarks: Sequence[str], data: Mapping[str, Path]) -> dict[str, Path]:
    """The `--data NAME=PATH` folders keyed by normalised benchmark name (`name.strip().lower()`).

    A NAME that is no benchmark (a typo), or one that is not among `benchmarks`, would silently be
    ignored and the default data used instead: both are a UsageError naming the --data entry.
    """
    running = list(dict.fromkeys(b.strip().lower() for b in benchmarks))
    roots: dict[str, Path] = {}
    for name, root in data.items():
        key = name.strip().lower()
        given = f"--data {show(f'{name}={root}')}"
        if key not in _MODULES:
            raise UsageError(
                f"{given}: unknown benchmark {show(name)}.{_hint(key)} Available: {', '.join(available())}"
            )
        if key not in running:
            raise UsageError(
                f"{given}: benchmark {key} is not being run (--benchmark {', '.join(running)}); "
                f"add --benchmark {key} or drop this --data"
            )
        roots[key] = root
    return roots
