"""`duet eval` records per second at several batch sizes on the bundled model, side by side in one run.

Each round runs `duet eval` (the library call the command makes) once per batch size on the same
synth test records, into a fresh folder, and times the answering only (from the first cell starting to
its last record written; the model load is excluded); rounds interleave the batch sizes so that a
shared CPU slows all alike. Reports the median records/s and the ratio to batch 1, and where each
record's time went: vision tower, LLM prefill and decode (the trace's timings), the rest of
`runtime.run` (tokenizing, pixel processing, generate's own Python) and the loop outside it (waiting
for prefetched images, building rows, writing and fsyncing them). The machine's load average is
recorded with every measurement: on a shared CPU, torch's threads stall on busy cores, so the process
CPU time per record is reported too (with --threads 1 it is the work itself, whatever else runs).

    python benchmarks/eval_throughput.py                       # synth-llava, 48 records, batch 1/8/16
    python benchmarks/eval_throughput.py --limit 96 --rounds 3 --profile duet-192 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import Progress as Status  # noqa: E402
from machine import cpu_report, load_average  # noqa: E402

from duet_cli.evaluate.runner import EvalConfig, Progress, run_eval  # noqa: E402

PHASES = ("vision", "prefill", "decode", "run_rest", "loop")


@contextlib.contextmanager
def phase_clock(acc: dict[str, float]) -> Iterator[None]:
    """Sums, over every `runtime.run` the eval makes, its wall time and the trace's phase times."""
    from duet_cli import runtime

    real = runtime.run

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = real(*args, **kwargs)
        acc["run"] += time.perf_counter() - t0
        t = result.trace.timings
        acc["vision"] += t.vision_s
        acc["prefill"] += t.prefill_s
        acc["decode"] += t.decode_s
        return result

    runtime.run = timed  # the runner looks `run` up on the module when a cell starts
    try:
        yield
    finally:
        runtime.run = real


def records_per_second(
    model: str, profile: str, limit: int, batch: int, threads: int
) -> tuple[float, dict[str, float]]:
    """Records/s over the answering, and milliseconds per record in each of PHASES and of CPU ("cpu")."""
    import torch

    torch.set_num_threads(threads)
    marks: dict[str, float] = {}
    acc = dict.fromkeys(("run", "vision", "prefill", "decode"), 0.0)

    def describe(text: str) -> None:
        marks.setdefault("start", time.perf_counter())
        marks.setdefault("cpu_start", time.process_time())

    def advance(n: int) -> None:
        marks["end"] = time.perf_counter()
        marks["cpu_end"] = time.process_time()

    with tempfile.TemporaryDirectory(prefix="duet-eval-throughput-") as out:
        cfg = EvalConfig(
            benchmarks=["synth"],
            profiles=[profile],
            model=model,
            split="test",
            limit=limit,
            batch_size=batch,
            out=Path(out),
            device="cpu",
            max_new_tokens=8,
        )
        with phase_clock(acc):
            run_eval(cfg, Progress(describe=describe, advance=advance))
    cells = 1 if profile == "baseline" else 2  # baseline always runs too
    wall = marks["end"] - marks["start"]
    n = cells * limit
    ms = {k: acc[k] * 1000 / n for k in ("vision", "prefill", "decode")}
    ms["run_rest"] = (acc["run"] - acc["vision"] - acc["prefill"] - acc["decode"]) * 1000 / n
    ms["loop"] = (wall - acc["run"]) * 1000 / n
    ms["cpu"] = (marks["cpu_end"] - marks["cpu_start"]) * 1000 / n
    return n / wall, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-llava")
    parser.add_argument("--profile", default="baseline")
    parser.add_argument("--limit", type=int, default=48, help="synth test records per cell")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from duet_cli.console import prepare_transformers

    prepare_transformers()  # no weight-loading bars between the rows
    say = Status()
    cpu = cpu_report(probe=False)
    say(
        f"{cpu['name']}, {args.threads} threads, bf16 hardware: {'/'.join(cpu['bf16_flags']) or 'none'} "
        f"(duet eval runs float32 on the CPU either way); load average {cpu['load_average']}"
    )
    # one unmeasured run first: the process's one-time costs (kernel set-up, lazy imports) would
    # otherwise land on whichever batch size is measured first
    records_per_second(args.model, args.profile, 2, 1, args.threads)
    rates: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    phases: dict[int, list[dict[str, float]]] = {b: [] for b in args.batch_sizes}
    loads: dict[int, list[Any]] = {b: [] for b in args.batch_sizes}
    for r in range(args.rounds):
        for b in args.batch_sizes:
            say(f"  round {r + 1}/{args.rounds}, batch {b}: {args.limit} records ...")
            rate, ms = records_per_second(args.model, args.profile, args.limit, b, args.threads)
            rates[b].append(rate)
            phases[b].append(ms)
            loads[b].append(load_average())
            say(f"  round {r + 1}/{args.rounds}, batch {b}: {rate:.2f} records/s (load {loads[b][-1]})")
    base = statistics.median(rates[args.batch_sizes[0]])
    print(f"\n{args.model} · {args.profile} · synth test, {args.limit} records, {args.threads} threads")
    vs = "vs batch " + str(args.batch_sizes[0])
    print(f"{'batch':>5} {'records/s':>10} {vs:>12} {'CPU ms/rec':>11} {'CPU ' + vs:>16}")
    rows: dict[int, dict[str, Any]] = {}
    cpu_base = statistics.median(p["cpu"] for p in phases[args.batch_sizes[0]])
    for b in args.batch_sizes:
        median = statistics.median(rates[b])
        ms = {k: statistics.median(p[k] for p in phases[b]) for k in (*PHASES, "cpu")}
        rows[b] = {
            "records_per_s": median, "ratio": median / base, "rounds": rates[b],
            "cpu_ratio": cpu_base / ms["cpu"], "ms_per_record": ms, "load_average": loads[b],
        }  # fmt: skip
        work = f"{ms['cpu']:>11.1f} {rows[b]['cpu_ratio']:>15.2f}x"
        print(f"{b:>5} {median:>10.2f} {median / base:>11.2f}x {work}")
    print(f"\nms per record (medians) {' '.join(f'{k:>8}' for k in PHASES)}")
    for b in args.batch_sizes:
        cells = " ".join(f"{rows[b]['ms_per_record'][k]:8.1f}" for k in PHASES)
        print(f"  batch {b:<16} {cells}")
    if args.json is not None:
        doc = {
            "model": args.model, "profile": args.profile, "limit": args.limit, "threads": args.threads,
            "rounds": args.rounds, "cpu": cpu, "rows": rows,
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
