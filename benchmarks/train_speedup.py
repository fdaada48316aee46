"""Training speedup with reduction active (issue 4, item 3): fine-tune under each profile, then score.

What it measures: from ONE starting checkpoint (--model: pretrained vision tower and projector), with the
same `synth` training data, seed, batch size, learning-rate schedule and step budget, it fine-tunes one
copy of the model per profile (`baseline` first, then `duet-192` and `duet-64` by default) with that
profile active in every training forward (`duet_cli.training.trainer.train`, the code behind
`duet train`), and reports per run:

- visual tokens entering the LLM per sample, and their average over the decoder layers;
- training throughput: samples/s of the library's training loop (all steps, the final checkpoint save
  included; model loading and the model export are not), and its ratio to the baseline run;
- a paired step speedup: step k sees the same samples in every run (same seed, same data order), so
  baseline step k / profile step k is taken per step and the median over steps is reported (the first
  step, which pays one-time warm-up costs, and the last, which includes the checkpoint save, are left
  out when there are at least three steps). This ratio is less sensitive than samples/s to load that
  comes and goes on a shared machine, and to the one-time costs of the first run in the process
  (the baseline's first step also warms up the allocator and kernels for the runs after it);
- the final training loss;
- `synth` test accuracy of the trained model (`duet_cli.evaluate.runner.run_eval`, exact match, the
  first --eval-limit records), evaluated at `baseline` AND at the profile it was trained with, and the
  difference to the baseline-trained model evaluated at baseline.

Goal (issue 4): at least 1.45x training throughput at duet-192 with less than 1 point of accuracy lost
(duet-192-trained model at duet-192 vs the baseline-trained model at baseline).

Runs are sequential on one machine, in one process: every speed number is a ratio measured within this
one invocation, never against a number from another run or machine. Sequential runs do not share the
machine's momentary load the way interleaved repeats do (benchmarks/prefill_7b.py), so another job that
starts or stops between two runs moves their ratio; the paired step speedup limits this to load that
changes within a step, and the load average before and after each run is in the JSON so a disturbed
run can be seen. Accuracy has sampling noise too: with 1,000 records the standard error of a 90%
accuracy is about 0.95 points, as large as the 1-point goal.

Resumable by whole runs: each profile trains into WORK/<profile>/ (the library's checkpoint, the trained
model in WORK/<profile>/model, report.json and loss.png, and run.json written last). A profile whose
run.json exists with the same settings is not retrained: its numbers are reused and the output says
so (they were measured in an earlier invocation, so their speed ratios are across invocations). A
folder without run.json (a killed run) is deleted and trained again from the start; a run.json with
other settings is an error (choose another --work). Evaluation resumes by itself (predictions are
appended to WORK/<profile>/eval as they are made).

Command (repo root; set the thread count yourself, the script does not):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speedup.py --model START --data synth-dense \
        --steps 200 --batch-size 8 --eval-limit 300
    # smoke test (the bundled tiny-llava is untrained: accuracies are ~0), about 15 seconds:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speedup.py --steps 3 --batch-size 2 \
        --eval-limit 12 --work /tmp/ts-smoke --out-json /tmp/ts-smoke/result.json

START is a model folder whose vision tower and projector are already trained; the default,
models/tiny-llava, is untrained and only proves that the script runs. The README's table starts from
the bundled recipe's first decoder phase (scripts/train_bundled.py: WORK/llm1/model, 250 steps with
visionzip-64, the point where its decoder has started to use the image) and fine-tunes on
`synth-dense`, the recipe's own conversations (`--data synth`: the six benchmark questions per image
only; from llm1 those runs stay at the answer priors, about 32%, in 200 steps).

Options: --model (models/tiny-llava), --data (synth | synth-dense), --profiles (baseline,duet-192,
duet-64), --steps (300), --batch-size (8), --lr (1e-3), --warmup-steps (30), --train (projector,llm),
--seed (0), --eval-limit (1000: the whole synth test split), --eval-batch-size (8),
--work (runs/train_speedup), --out-json (benchmarks/results/train_speedup.json), --device (cpu).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_report  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from duet_cli.errors import DuetError, UsageError  # noqa: E402

DEFAULT_PROFILES = "baseline,duet-192,duet-64"
GOAL_PROFILE, GOAL_SPEEDUP, GOAL_MAX_LOSS = "duet-192", 1.45, 1.0
RUN_FILE = "run.json"  # written last: its presence means the run finished
# run.json must agree on these to be reused (everything that changes what training does)
SETTING_KEYS = (
    "model", "data", "profile", "steps", "batch_size", "lr", "warmup_steps", "train", "seed", "device",
)  # fmt: skip

out = Console(width=200)  # results
err = Console(stderr=True, width=200)  # status and errors


def parse_profiles(text: str) -> list[str]:
    """Comma-separated profile names, `baseline` first and each once."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    return ["baseline", *[p for p in dict.fromkeys(names) if p != "baseline"]]


def model_spec(text: str) -> str:
    """A local folder as an absolute path (so a rerun from elsewhere matches), a catalog name as is."""
    folder = Path(text).expanduser()
    return str(folder.resolve()) if folder.is_dir() else text


def settings_for(args: argparse.Namespace, profile: str) -> dict[str, Any]:
    return {
        "model": model_spec(args.model),
        "data": args.data,
        "profile": profile,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "train": list(args.train),
        "seed": args.seed,
        "device": args.device,
    }


def training_source(data: str) -> Any:
    """None for `synth` (the trainer opens it); `synth-dense`: the bundled model's conversations
    (scripts/bundled_data.py, every turn shuffled, as in the recipe's last phase)."""
    if data == "synth":
        return None
    sys.path.insert(0, str(ROOT / "scripts"))
    from bundled_data import DenseSource

    return DenseSource(lists_first=False)


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # not available on this platform
        return None


# ----------------------------------------------------------------------------------------------------
# Training


def train_run(args: argparse.Namespace, profile: str, folder: Path) -> dict[str, Any]:
    """Train one profile into `folder` (or reuse a finished run there); returns the run's record."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from duet_cli.reports.jsonio import atomic_write_text, provenance, to_json
    from duet_cli.training.plan import TrainConfig
    from duet_cli.training.report import numbers, write_outputs
    from duet_cli.training.trainer import Hooks, StepInfo, train

    wanted = settings_for(args, profile)
    done = folder / RUN_FILE
    if done.is_file():
        record: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        stored = record["settings"]
        diffs = [
            f"{k}={stored.get(k)!r} (now {wanted[k]!r})" for k in SETTING_KEYS if stored.get(k) != wanted[k]
        ]
        if diffs:
            raise UsageError(
                f"{folder} holds a finished run with other settings: {'; '.join(diffs)}; "
                "choose another --work or delete that folder"
            )
        record["reused"] = True
        err.print(
            f"[yellow]{profile}[/]: reusing the finished run in {folder} (trained {record['finished_utc']}; "
            "its speed was measured in that earlier invocation)"
        )
        return record
    if folder.exists():
        err.print(f"[yellow]{profile}[/]: {folder} holds an unfinished run; deleting it and starting over")
        shutil.rmtree(folder)

    cfg = TrainConfig(
        data=args.data,
        out=folder,
        model=wanted["model"],
        profile=profile,
        max_steps=args.steps,
        lr=args.lr,
        schedule="cosine",
        warmup_steps=args.warmup_steps,
        batch_size=args.batch_size,
        train=tuple(args.train),
        seed=args.seed,
        resume=False,
        save_every=None,  # one checkpoint, at the end: resuming is by whole runs
        keep=1,
        device=args.device,
    )
    marks: list[float] = []  # perf_counter at the loop's start, then after every optimizer step
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} samples/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(f"{profile}: checking", total=None, loss="-", rate="-")

    def on_start(total: int, already: int) -> None:
        marks.append(time.perf_counter())
        bar.update(task, total=total, completed=already)

    def on_step(info: StepInfo) -> None:
        marks.append(time.perf_counter())
        bar.update(task, completed=info.step, loss=f"{info.loss:.4f}", rate=f"{info.samples_per_s:.2f}")

    hooks = Hooks(
        start=on_start,
        step=on_step,
        warn=lambda text: err.print(f"[yellow]warning:[/] {escape(text)}"),
        describe=lambda text: bar.update(task, description=f"{profile}: {text}"),
    )
    load_before = load_avg()
    with bar:
        report = train(cfg, hooks, source=training_source(args.data))
    if report is None:  # only under a multi-rank launcher, which this script does not support
        raise UsageError("train_speedup.py runs in one process; do not start it with a launcher")
    prov = provenance(
        profile_name=profile,
        profile_hash="",
        profile={},
        model=wanted["model"],
        dtype="float32",
        device=args.device,
        seed=args.seed,
    )
    write_outputs(report, folder, prov)  # report.json and loss.png, as `duet train` writes them
    record = {
        "settings": wanted,
        "report": numbers(report),
        "step_s": [round(b - a, 6) for a, b in itertools.pairwise(marks)],
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(done, to_json(record) + "\n")
    record["reused"] = False
    return record


# ----------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_run(args: argparse.Namespace, profile: str, model_dir: Path, folder: Path) -> dict[str, Any]:
    """synth test accuracy of one trained model at baseline and at `profile` (resumable predictions)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from duet_cli.evaluate.runner import EvalConfig, run_eval
    from duet_cli.evaluate.runner import Progress as EvalHooks

    cfg = EvalConfig(
        benchmarks=["synth"],
        profiles=[profile],  # the runner puts baseline first
        model=str(model_dir),
        split="test",
        limit=args.eval_limit,
        batch_size=args.eval_batch_size,
        out=folder,
        device=args.device,
        seed=args.seed,
    )
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(f"eval {profile}-trained: loading", total=None)
    hooks = EvalHooks(
        start=lambda total: bar.update(task, total=total),
        advance=lambda n: bar.advance(task, n),
        describe=lambda text: bar.update(task, description=f"eval {profile}-trained: {text}"),
        warn=lambda text: err.print(f"[yellow]warning:[/] {escape(text)}"),
    )
    with bar:
        cells = run_eval(cfg, hooks)
    assert cells is not None  # one process: always the main rank
    return {
        c.profile: {
            "accuracy": c.score.headline,
            "records": c.score.count,
            "failures": c.failures,
            "avg_visual_tokens": c.avg_visual_tokens,
            "metrics": c.score.metrics,
            "predictions": str(c.predictions),
        }
        for c in cells
    }


# ----------------------------------------------------------------------------------------------------
# Numbers and the table (pure)


def steady(steps: list[float]) -> list[float]:
    """Step times without the first (warm-up) and the last (checkpoint save), when three or more."""
    return steps[1:-1] if len(steps) >= 3 else steps


def paired_step_speedup(base: list[float], mine: list[float]) -> float | None:
    """Median over steps of baseline step k / this run's step k (the same samples in both)."""
    if not base or len(base) != len(mine):
        return None
    return statistics.median(b / m for b, m in zip(steady(base), steady(mine)) if m > 0)


def build_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per training profile, relative numbers against the baseline run (the first)."""
    base = runs["baseline"]
    base_rate = base["report"]["samples_per_s"]
    base_acc = base["eval"]["baseline"]["accuracy"]
    rows = []
    for profile, run in runs.items():
        rep, ev = run["report"], run["eval"]
        own = ev[profile]["accuracy"]
        at_base = ev["baseline"]["accuracy"]
        rows.append(
            {
                "profile": profile,
                "reused": run["reused"],
                "visual_tokens_in": rep["visual_tokens_in"],
                "avg_visual_tokens": rep["avg_visual_tokens"],
                "unreduced_visual_tokens": rep["unreduced_visual_tokens"],
                "steps": rep["steps"],
                "global_batch": rep["global_batch"],
                "wall_s": rep["wall_s"],
                "samples_per_s": rep["samples_per_s"],
                "speedup": rep["samples_per_s"] / base_rate if base_rate else None,
                "paired_step_speedup": paired_step_speedup(base["step_s"], run["step_s"]),
                "median_step_s": statistics.median(steady(run["step_s"])) if run["step_s"] else None,
                "final_loss": rep["final_loss"],
                "accuracy_at_baseline": at_base,
                "accuracy_at_own_profile": own,
                "eval_records": ev[profile]["records"],
                "eval_failures": ev[profile]["failures"],
                # the deployment comparison: trained and served with the profile vs trained and served full
                "accuracy_delta": own - base_acc,
                "accuracy_delta_at_baseline": at_base - base_acc,
            }
        )
    return rows


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def make_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = (
        "trained with",
        "vis in",
        "avg vis",
        "steps",
        "samples/s",
        "speedup",
        "step speedup",
        "final loss",
        "acc @base",
        "acc @own",
        "Δ acc",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "trained with" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["profile"] + (" (reused)" if r["reused"] else ""),
            f"{r['visual_tokens_in']:.1f}",
            f"{r['avg_visual_tokens']:.1f}",
            str(r["steps"]),
            f"{r['samples_per_s']:.3f}",
            _f(r["speedup"], ".2f") + "x",
            _f(r["paired_step_speedup"], ".2f") + "x",
            _f(r["final_loss"], ".4f"),
            f"{r['accuracy_at_baseline']:.1f}",
            f"{r['accuracy_at_own_profile']:.1f}",
            f"{r['accuracy_delta']:+.1f}",
        )
    return table


def goal_line(rows: list[dict[str, Any]]) -> str | None:
    row = next((r for r in rows if r["profile"] == GOAL_PROFILE), None)
    if row is None or row["speedup"] is None:
        return None
    if not any(r["accuracy_at_baseline"] for r in rows if r["profile"] == "baseline"):
        return f"goal ({GOAL_PROFILE}): no verdict, the baseline-trained model scores 0 (an untrained model?)"
    fast = row["speedup"] >= GOAL_SPEEDUP
    kept = row["accuracy_delta"] > -GOAL_MAX_LOSS
    verdict = "[green]met[/]" if fast and kept else "[red]not met[/]"
    return (
        f"goal ({GOAL_PROFILE}: >= {GOAL_SPEEDUP}x samples/s, < {GOAL_MAX_LOSS:g} point lost): {verdict} "
        f"({row['speedup']:.2f}x, {row['accuracy_delta']:+.1f} points)"
    )


# ----------------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from duet_cli.training.plan import parse_parts

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="models/tiny-llava", help="starting checkpoint: folder or name")
    parser.add_argument(
        "--data", choices=("synth", "synth-dense"), default="synth",
        help="synth: its six questions per image; synth-dense: the bundled model's training conversations",
    )  # fmt: skip
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help="comma-separated; baseline is added")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps, the same for every run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule)")
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--train", default="projector,llm", help="parts to train: vision, projector, llm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=1000, help="synth test records scored per result")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "train_speedup")
    parser.add_argument(
        "--out-json", type=Path, default=ROOT / "benchmarks" / "results" / "train_speedup.json"
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "eval_limit", "eval_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be at least 0")
    args.train = parse_parts(args.train)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    from duet_cli.console import prepare_transformers
    from duet_cli.profiles import load_profile
    from duet_cli.reports.jsonio import atomic_write_text, check_writable, to_json

    prepare_transformers()  # the eval runner loads models without it; `duet eval` calls it too
    started = time.perf_counter()
    threads = torch.get_num_threads()
    err.print(f"torch threads: {threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    cpu = cpu_report(probe=False)
    err.print(
        f"{cpu['name']}: bf16 hardware {'/'.join(cpu['bf16_flags']) or 'none'} (training runs float32 "
        f"master weights on the CPU either way); load average {cpu['load_average']}"
    )
    profiles = parse_profiles(args.profiles)
    for p in profiles:
        load_profile(p)  # a typo fails before anything trains
    check_writable(args.out_json)
    args.work.mkdir(parents=True, exist_ok=True)

    runs: dict[str, dict[str, Any]] = {}
    for i, profile in enumerate(profiles, 1):
        folder = args.work / profile
        # flushed status lines around the (transient) progress bars, which a log file does not show
        elapsed = time.perf_counter() - started
        err.print(f"[{elapsed:6.0f}s] run {i}/{len(profiles)}: {profile}, {args.steps} steps ...")
        run = train_run(args, profile, folder)
        rep = run["report"]
        how = "reused" if run["reused"] else "trained"
        err.print(
            f"{profile}: {how}, {rep['steps']} steps in {rep['wall_s']:.1f}s, "
            f"{rep['samples_per_s']:.3f} samples/s, final loss {rep['final_loss']:.4f}"
        )
        elapsed = time.perf_counter() - started
        err.print(f"[{elapsed:6.0f}s] {profile}: evaluating on {args.eval_limit} synth test records ...")
        run["eval"] = evaluate_run(args, profile, folder / "model", folder / "eval")
        runs[profile] = run

    rows = build_rows(runs)
    title = (
        f"{args.model}: fine-tuned on {args.data}, {args.steps} steps x batch {args.batch_size}, "
        f"lr {args.lr:g}, trains {'+'.join(args.train)}, {args.device}, {threads} thread(s); "
        f"synth test accuracy (%) on {args.eval_limit} records"
    )
    out.print(make_table(rows, title))
    out.print(
        "vis in: visual tokens entering the LLM per sample; avg vis: their average over decoder layers; "
        "speedup: samples/s / baseline's; step speedup: median over steps of baseline step / this step "
        "(same samples); acc @base / @own: the trained model evaluated at baseline / at the profile it "
        "was trained with; Δ acc: acc @own - the baseline-trained model's acc @base."
    )
    if any(r["reused"] for r in rows):
        out.print("[yellow]reused runs were timed in an earlier invocation: their speed ratios cross runs[/]")
    line = goal_line(rows)
    if line:
        out.print(line)

    result = {
        "benchmark": "train_speedup",
        "date": _dt.date.today().isoformat(),
        "command": shlex.join(["python", "benchmarks/train_speedup.py", *(argv or sys.argv[1:])]),
        "settings": {k: v for k, v in settings_for(args, "*").items() if k != "profile"}
        | {"eval_limit": args.eval_limit, "eval_batch_size": args.eval_batch_size},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": cpu,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name()
            if args.device != "cpu" and torch.cuda.is_available()
            else None,
        },
        "speed_convention": "samples/s of the training loop (all steps, final checkpoint save included); "
        "paired_step_speedup: median over steps (first and last left out when >= 3) of baseline / profile",
        "accuracy_convention": "synth test exact match (%), first eval_limit records; accuracy_delta: "
        "at own profile minus the baseline-trained model at baseline",
        "rows": rows,
        "runs": runs,
        "work": str(args.work),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out_json, to_json(result) + "\n")
    err.print(f"wrote {args.out_json} ({result['wall_s']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except DuetError as exc:
        if os.environ.get("DUET_DEBUG"):
            raise
        err.print(f"[red]error:[/] {escape(str(exc))} (set DUET_DEBUG=1 for the traceback)")
        raise SystemExit(exc.exit_code) from None
