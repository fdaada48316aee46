"""`duet eval` records per second at several batch sizes on the bundled model, side by side in one run.

Each round runs `duet eval` (the library call the command makes) once per batch size on the same
synth test records, into a fresh folder, and times the answering only (from the first cell starting to
its last record written; the model load is excluded); rounds interleave the batch sizes so that a
shared CPU slows all alike. Reports the median records/s and the ratio to batch 1.

    python benchmarks/eval_throughput.py                       # synth-llava, 48 records, batch 1/8/16
    python benchmarks/eval_throughput.py --limit 96 --rounds 3 --profile duet-192 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from duet_cli.evaluate.runner import EvalConfig, Progress, run_eval  # noqa: E402


def records_per_second(model: str, profile: str, limit: int, batch: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    marks: dict[str, float] = {}

    def describe(text: str) -> None:
        marks.setdefault("start", time.perf_counter())

    def advance(n: int) -> None:
        marks["end"] = time.perf_counter()

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
        run_eval(cfg, Progress(describe=describe, advance=advance))
    cells = 1 if profile == "baseline" else 2  # baseline always runs too
    return cells * limit / (marks["end"] - marks["start"])


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
    rates: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    for r in range(args.rounds):
        for b in args.batch_sizes:
            rates[b].append(records_per_second(args.model, args.profile, args.limit, b, args.threads))
            print(f"  round {r + 1}/{args.rounds}, batch {b}: {rates[b][-1]:.2f} records/s", flush=True)
    base = statistics.median(rates[args.batch_sizes[0]])
    print(f"\n{args.model} · {args.profile} · synth test, {args.limit} records, {args.threads} threads")
    print(f"{'batch':>5} {'records/s':>10} {'vs batch ' + str(args.batch_sizes[0]):>12}")
    rows = {}
    for b in args.batch_sizes:
        median = statistics.median(rates[b])
        rows[b] = {"records_per_s": median, "ratio": median / base, "rounds": rates[b]}
        print(f"{b:>5} {median:>10.2f} {median / base:>11.2f}x")
    if args.json is not None:
        doc = {"model": args.model, "profile": args.profile, "limit": args.limit, "rows": rows}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
