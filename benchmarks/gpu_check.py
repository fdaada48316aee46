"""One GPU check, one JSON: prefill at the LLaVA-1.5-7B geometry, decode overhead, batch-32 generation.

On a machine with a CUDA device, from the repository root (no install, no network, no model hub):

    python benchmarks/gpu_check.py --device cuda          # under 8 minutes (budgets: 430 s in all)
    python benchmarks/gpu_check.py --device cpu --quick   # the same phases and JSON, tiny, < 1 minute

Needs torch (a CUDA build), transformers (the range in pyproject.toml), pydantic and PyYAML; Pillow is
used if present (the prefill image). duet is imported from this checkout, so no virtual environment
or install is needed: `pip install -c constraints.txt torch transformers pydantic pyyaml` gives the
tested versions where there is none.

Phases, each with a time budget (a status line at its start and end, and inside it, on stderr); a
phase that fails or runs past its budget records its error in the JSON and the next one runs:

1. prefill: benchmarks/prefill_7b.py's run at the true 7B geometry (32 decoder layers), random weights,
   SDPA, every default profile: speedups, same-run floors, scoring overheads, encode variants, KV bytes;
2. decode: benchmarks/decode_overhead.py's `measure` (32 layers, tiny widths): Python calls per
   generated token, host syncs per decode step and ms/token, as ratios to stock `generate()`;
3. generation: batch-32 greedy generation on the 7B geometry for baseline, duet-192 and duet-64 (40
   text tokens + each profile's image tokens per prompt, 32 new tokens), records/s and tokens/s, with
   ratios to baseline paired per round (rounds interleave the profiles).

The JSON (default benchmarks/results/gpu_check_<device>.json, `_quick` added with --quick) names the
device (torch.cuda.get_device_name), torch and transformers, the dtype and why, and is rewritten after
every phase, so a killed run keeps what it measured; `complete` says whether every phase succeeded.
The exit status is 0 when every phase succeeded, 1 otherwise (2 for bad options).
--quick: tiny widths (CLIP patch geometry kept, so every profile resolves as on the 7B), 8 decoder
layers (4 for decode, with stock, baseline and duet-192 only), no warm-up pass, batch 4, 4 new tokens,
one round: it exercises every phase, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights from configs: nothing to download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PHASES = ("prefill", "decode", "generation")
# seconds per phase (hard: an alarm stops a phase at its budget); the full budgets sum to 430 s, which
# with the imports and CUDA start-up before the first phase stays under 8 minutes
BUDGETS = {"prefill": 180.0, "decode": 100.0, "generation": 150.0}
QUICK_BUDGETS = {"prefill": 60.0, "decode": 60.0, "generation": 60.0}
GENERATION_PROFILES = ["baseline", "duet-192", "duet-64"]
DECODE_PROFILES = ["baseline", "visionzip-192", "pdrop-192", "duet-192", "duet-128", "duet-64"]
QUICK_DECODE_PROFILES = ["baseline", "duet-192"]
SCHEMA = 1


class PhaseTimeout(Exception):
    """Raised by the alarm in the main thread when a phase passes its budget."""


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise PhaseTimeout in the main thread after `seconds` (where SIGALRM exists): a phase cannot
    silently overrun. A long C call (one kernel, one big CPU matmul) finishes before it is raised."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise PhaseTimeout(f"ran past its budget of {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------------------------------
# Phases: each takes the run's context and its soft budget, and returns what goes into the JSON


def phase_prefill(ctx: dict[str, Any], budget_s: float) -> dict[str, Any]:
    from prefill_7b import PrefillSettings, run_prefill

    quick = ctx["quick"]
    settings = PrefillSettings(
        decoder_layers=8 if quick else 32,
        repeats=1 if quick else 10,
        dtype=ctx["dtype"],
        device=ctx["device"],
        widths="tiny" if quick else "7b",
        warmup_pass=not quick,
        budget_s=budget_s,
        command=ctx["command"],
    )
    result = run_prefill(settings, ctx["say"])
    summary = {
        r["profile"]: {
            k: r[k]
            for k in (
                "tokens_in",
                "avg_visual_tokens",
                "speedup_llm",
                "speedup_total",
                "bound_llm",
                "bound_total",
                "floor_speedup_llm",
                "llm_over_floor",
                "overhead_share_of_baseline_prefill",
            )
        }
        | {"total_ms": r["ms"]["total"], "llm_prefill_ms": r["ms"]["llm_prefill"]}
        for r in result["rows"]
    }
    return {
        "settings": {
            "widths": settings.widths,
            "decoder_layers": settings.decoder_layers,
            "repeats_asked": settings.repeats,
            "repeats": result["repeats"],
            "text_tokens": result["text_tokens"],
        },
        "summary": {
            "profiles": summary,
            "encode_ours_over_stock": result["encode"]["ours_over_stock"],
            "encode_published_over_stock": result["encode"]["published_over_stock"],
        },
        "result": result,
    }


def phase_decode(ctx: dict[str, Any], budget_s: float) -> dict[str, Any]:
    import torch
    from decode_overhead import build_model, measure

    quick = ctx["quick"]
    model = build_model(depth=4 if quick else 32, device=ctx["device"], dtype=ctx["dtype"].dtype)
    threads = torch.get_num_threads()
    if ctx["device"] == "cpu":
        torch.set_num_threads(1)  # compute is ~0: one thread times the host's work, not thread hand-offs
    try:
        profiles = QUICK_DECODE_PROFILES if quick else DECODE_PROFILES
        result = measure(model, profiles, 1 if quick else 3, ctx["say"], budget_s=budget_s)
    finally:
        torch.set_num_threads(threads)
    return {
        "settings": {k: result[k] for k in ("depth", "dtype", "repeats", "repeats_asked", "stopped_early")},
        "summary": {
            label: {k: row[k] for k in ("calls_per_token", "calls_vs_stock", "syncs_per_step", "time_ratio")}
            for label, row in result["rows"].items()
        },
        "result": result,
    }


def generation_throughput(
    model: Any,
    names: list[str],
    batch: int,
    max_new_tokens: int,
    rounds: int,
    say: Callable[[str], None],
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Greedy generation of `batch` fixed-length prompts per profile, warm-up then `rounds` interleaved
    rounds (the order rotates); no round starts that would end past `budget_s` (the first always runs)."""
    import torch
    from machine import sync
    from prefill_7b import TEXT_AFTER, TEXT_BEFORE, input_ids

    from duet_cli.engine.session import apply_profile

    started = time.perf_counter()
    device, dtype = model.device, model.dtype
    gen = torch.Generator().manual_seed(4)
    px = torch.randn(batch, 3, 336, 336, generator=gen).to(device=device, dtype=dtype)
    prompt_tokens: dict[str, int] = {}

    def one(name: str) -> dict[str, float]:
        with apply_profile(model, name) as session, torch.inference_mode():
            ids = input_ids(session.tokens_per_image, device, batch)
            prompt_tokens[name] = int(ids.shape[1])
            session.recorder.reset()
            sync(device)
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=px,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
            sync(device)
            wall = time.perf_counter() - t0
            rec = session.recorder
            rec.settle()
            new = int(out.shape[1] - ids.shape[1])
            if new != max_new_tokens:
                raise RuntimeError(f"{name}: generated {new} tokens, not {max_new_tokens}")
            steps = max(rec.decode_steps, 1)
            return {
                "s": wall,
                "vision": rec.vision_s,
                "prefill": rec.prefill_s,
                "decode_step": rec.decode_s / steps,
            }

    t0 = time.perf_counter()
    for name in names:
        one(name)
    warm = time.perf_counter() - t0
    say(f"  warm-up: one batch per profile {warm:.1f}s")
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    last, stopped = warm, None
    for r in range(rounds):
        if r and budget_s is not None and time.perf_counter() - started + last > budget_s:
            stopped = f"time budget {budget_s:.0f}s: stopped after {r} rounds"
            say(stopped)
            break
        t0 = time.perf_counter()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(one(name))
        last = time.perf_counter() - t0
        say(f"  round {r + 1}/{rounds}: {last:.1f}s")
    done = len(runs[names[0]])
    base = runs[names[0]]
    rows = {}
    for name in names:
        seconds = [x["s"] for x in runs[name]]
        med = statistics.median(seconds)
        rows[name] = {
            "prompt_tokens": prompt_tokens[name],
            "records_per_s": round(batch / med, 3),
            "tokens_per_s": round(batch * max_new_tokens / med, 1),
            # paired per round: baseline's batch time / this profile's, median over rounds
            "speedup_vs_baseline": round(
                statistics.median(b["s"] / x["s"] for b, x in zip(base, runs[name])), 3
            ),
            # from the session's recorder (CUDA events on a GPU): vision encode, LLM prefill, one decode step
            "ms": {
                key: round(statistics.median(x[key] for x in runs[name]) * 1000.0, 2)
                for key in ("vision", "prefill", "decode_step")
            },
            "runs_s": [round(s, 4) for s in seconds],
        }
    return {
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "text_tokens": TEXT_BEFORE + TEXT_AFTER,
        "rounds": done,
        "rounds_asked": rounds,
        "stopped_early": stopped,
        "baseline": names[0],
        "rows": rows,
    }


def phase_generation(ctx: dict[str, Any], budget_s: float) -> dict[str, Any]:
    from prefill_7b import build_config, build_model, check_memory

    quick = ctx["quick"]
    device, dtype = ctx["device"], ctx["dtype"].dtype
    config: Any = build_config(8 if quick else 32, "tiny" if quick else "7b")
    ctx["say"](check_memory(config, dtype, ctx["torch_device"]))
    model = build_model(config, dtype, device)
    batch, new, rounds = (4, 4, 1) if quick else (32, 32, 3)
    ctx["say"](f"  {batch} prompts per batch, {new} new tokens each, greedy, {rounds} rounds")
    result = generation_throughput(model, GENERATION_PROFILES, batch, new, rounds, ctx["say"], budget_s)
    return {
        "settings": {
            "widths": "tiny" if quick else "7b",
            "decoder_layers": config.text_config.num_hidden_layers,
            "batch": batch,
            "max_new_tokens": new,
            "rounds": result["rounds"],
        },
        "summary": {
            name: {k: row[k] for k in ("records_per_s", "tokens_per_s", "speedup_vs_baseline")}
            for name, row in result["rows"].items()
        },
        "result": result,
    }


RUNNERS: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = {
    "prefill": phase_prefill,
    "decode": phase_decode,
    "generation": phase_generation,
}


# ----------------------------------------------------------------------------------------------------
# Driver


def default_out(device_slug: str, quick: bool) -> Path:
    return ROOT / "benchmarks" / "results" / f"gpu_check_{device_slug}{'_quick' if quick else ''}.json"


def run_phase(name: str, budget: float, ctx: dict[str, Any]) -> dict[str, Any]:
    """One phase under its budget; never raises (but KeyboardInterrupt): the error goes in the entry."""
    import torch

    say = ctx["say"]
    say(f"phase {name}: start, budget {budget:.0f}s")
    entry: dict[str, Any] = {"status": "running", "budget_s": round(budget, 1), "error": None}
    t0 = time.perf_counter()
    try:
        with hard_limit(budget):
            # the soft budget leaves a tenth for what follows the last timed loop (the numbers)
            entry |= RUNNERS[name](ctx, 0.9 * budget)
        entry["status"] = "ok"
    except PhaseTimeout as exc:
        entry |= {"status": "timeout", "error": str(exc)}
    except Exception as exc:
        entry |= {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=-8).splitlines()[-24:],
        }
    entry["elapsed_s"] = round(time.perf_counter() - t0, 1)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    tail = f": {entry['error']}" if entry["error"] else ""
    say(f"phase {name}: {entry['status']} in {entry['elapsed_s']:.0f}s{tail}")
    return entry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny widths, small batch: a smoke test")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (torch's default; 1 with cpu --quick)"
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON (benchmarks/results/gpu_check_*)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        import torch
    except ImportError:
        print("gpu_check.py: error: torch is not installed (pip install torch)", file=sys.stderr)
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check.py: error: --device cuda, but torch {torch.__version__} sees no CUDA device "
            "(torch.cuda.is_available() is False); --device cpu --quick runs the CPU smoke test",
            file=sys.stderr,
        )
        return 1
    try:  # before any phase's alarm is set (an interrupted import would leave half a module behind)
        import decode_overhead  # noqa: F401
        import machine
        import prefill_7b  # noqa: F401

        from duet_cli.errors import DuetError
        from duet_cli.reports.jsonio import atomic_write_text, check_writable, to_json
    except ImportError as exc:
        print(
            f"gpu_check.py: error: {exc} (needs torch, transformers, pydantic, pyyaml: "
            "pip install -c constraints.txt torch transformers pydantic pyyaml)",
            file=sys.stderr,
        )
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu" and args.quick:
        # tiny ops: on a shared CPU a second thread mostly waits for its core (ms per op, not us)
        torch.set_num_threads(1)
    say = machine.Progress()
    device = torch.device(args.device)
    report = machine.device_report(device)
    choice = machine.choose_dtype(args.dtype, device)
    out = args.out or default_out(report["slug"], args.quick)
    try:
        check_writable(out)
    except DuetError as exc:
        print(f"gpu_check.py: error: {exc}", file=sys.stderr)
        return 1
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    say(f"{report['name']} ({args.device}), torch {report['torch']}, transformers {report['transformers']}")
    say(f"dtype {choice.name}: {choice.reason}")
    doc: dict[str, Any] = {
        "check": "gpu_check",
        "schema": SCHEMA,
        "complete": False,
        "quick": args.quick,
        "command": " ".join(
            ["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": report,
        "cpu": choice.cpu or machine.cpu_report(probe=False),
        "dtype": choice.name,
        "dtype_reason": choice.reason,
        "attention": "sdpa",
        "threads": torch.get_num_threads(),
        "budgets_s": {name: budgets[name] for name in args.phases},
        "phases": {},
        "wall_s": None,
    }
    ctx = {
        "quick": args.quick,
        "device": args.device,
        "torch_device": device,
        "dtype": choice,
        "say": say,
        "command": doc["command"],
    }

    def write() -> None:
        doc["wall_s"] = round(time.perf_counter() - started, 1)
        atomic_write_text(out, to_json(doc) + "\n")

    write()
    for i, name in enumerate(args.phases, 1):
        say(f"[{i}/{len(args.phases)}] {name}")
        doc["phases"][name] = run_phase(name, budgets[name], ctx)
        write()
    failed = [n for n, e in doc["phases"].items() if e["status"] != "ok"]
    doc["complete"] = not failed
    write()
    say(f"wrote {out} ({doc['wall_s']:.0f}s in all)" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
