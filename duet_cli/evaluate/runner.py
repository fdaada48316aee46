"""The eval loop: every profile on every benchmark, predictions appended as they are made, resumable,
sharded across launcher ranks (rank r answers records r, r+W, ...; rank 0 merges and scores).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duet_cli.benchmarks.base import Benchmark, Record, Score
from duet_cli.evaluate.distributed import Ranks, barrier, device_for, from_env, shutdown
from duet_cli.evaluate.store import PredictionWriter, merge_rank_files, read_rows

KILL_AFTER_ENV = "DUET_EVAL_KILL_AFTER"  # test hook: SIGKILL this process after writing k records
_written = {"records": 0}  # records written by this process, for the hook


@dataclass
class EvalConfig:
    benchmarks: list[str]
    profiles: list[str]
    model: str | None = None
    data: dict[str, Path] = field(default_factory=dict)
    split: str | None = None
    limit: int | None = None
    batch_size: int = 1
    out: Path = Path("duet-eval")
    strict: bool = False
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    max_new_tokens: int = 16
    frames: int = 8  # frames sampled uniformly from each video of a video benchmark
    pixel_range: tuple[int | None, int | None] = (None, None)  # Qwen2.5-VL --min-pixels / --max-pixels


@dataclass
class Cell:
    """One (benchmark, profile): its score and what it cost."""

    benchmark: str
    profile: str
    score: Score
    avg_visual_tokens: float
    unreduced_visual_tokens: float
    prefill_ms: float
    failures: int
    predictions: Path


@dataclass
class Progress:
    start: Callable[[int], None] = lambda total: None
    advance: Callable[[int], None] = lambda n: None
    describe: Callable[[str], None] = lambda text: None
    warn: Callable[[str], None] = lambda text: None


@dataclass
class Prepared:
    bench: Benchmark
    records: list[Record]
    skipped: list[str]  # malformed records skipped (file:line: why), reported as warnings


def profile_order(profiles: list[str]) -> list[str]:
    """`baseline` first (relative numbers need it), then the rest once each, in the given order."""
    rest = [p for p in dict.fromkeys(profiles) if p != "baseline"]
    return ["baseline", *rest]


def prepare(cfg: EvalConfig) -> dict[str, Prepared]:
    """Resolve benchmarks and read their records (a missing dataset fails here, before any model loads)."""
    from duet_cli.benchmarks.registry import get_benchmark

    prepared = {}
    for name in dict.fromkeys(cfg.benchmarks):
        bench = get_benchmark(name)
        skipped: list[str] = []
        records = list(_load(bench, cfg.data.get(name), cfg.split, cfg.limit, cfg.strict, skipped))
        prepared[name] = Prepared(bench, records, skipped)
    return prepared


def _load(
    bench: Benchmark,
    root: Path | None,
    split: str | None,
    limit: int | None,
    strict: bool,
    skipped: list[str],
) -> list[Record]:
    """All records; malformed ones are skipped and listed (or, with `strict`, the first one is fatal)."""
    import warnings

    from duet_cli.benchmarks.base import MalformedRecordWarning
    from duet_cli.errors import InputError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error" if strict else "always", MalformedRecordWarning)
        try:
            records = list(bench.load(root, split, limit))
        except MalformedRecordWarning as exc:
            raise InputError(f"{exc} (--strict)") from None
    skipped.extend(str(w.message) for w in caught if issubclass(w.category, MalformedRecordWarning))
    return records


def _image(ref: Any) -> Any:
    """A decoded RGB image from a path or an in-memory (possibly lazily decoded) image."""
    from PIL import Image

    from duet_cli.errors import InputError
    from duet_cli.media import load_image

    if not isinstance(ref, Image.Image):
        return load_image(ref)
    try:
        ref.load()
        return ref.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"unreadable image in the dataset: {exc}") from None


def prediction_path(out: Path, benchmark: str, profile: str, ranks: Ranks) -> Path:
    stem = profile if ranks.world == 1 else f"{profile}.rank{ranks.rank}"
    return out / benchmark / f"{stem}.jsonl"


def run_eval(cfg: EvalConfig, progress: Progress | None = None) -> list[Cell] | None:
    """Run everything; returns the scored cells on the main rank (None on the others)."""
    from duet_cli.profiles import load_profile

    progress = progress or Progress()
    ranks = from_env()
    try:
        profiles = profile_order(cfg.profiles)
        for p in profiles:
            load_profile(p)  # a typo fails before the model loads
        prepared = prepare(cfg)
        for name, prep in prepared.items():
            if prep.skipped and ranks.main:
                progress.warn(
                    f"{name}: skipped {len(prep.skipped)} malformed record(s); first: {prep.skipped[0]}"
                )
        todo = _pending(cfg, prepared, profiles, ranks)
        progress.start(sum(len(v) for v in todo.values()))
        loaded = _load_model(cfg, ranks)
        for (bench_name, profile), records in todo.items():
            progress.describe(f"{bench_name} · {profile}")
            _answer(cfg, loaded, bench_name, profile, records, ranks, progress)
        barrier(ranks)
        if not ranks.main:
            return None
        return [_score(cfg, prepared[b], b, p, ranks) for b in prepared for p in profiles]
    finally:
        shutdown(ranks)


def _pending(
    cfg: EvalConfig, prepared: dict[str, Prepared], profiles: list[str], ranks: Ranks
) -> dict[tuple[str, str], list[Record]]:
    todo = {}
    for name, prep in prepared.items():
        for profile in profiles:
            done = {r["id"] for r in read_rows(cfg.out / name / f"{profile}.jsonl")}
            done |= {r["id"] for r in read_rows(prediction_path(cfg.out, name, profile, ranks))}
            mine = prep.records[ranks.rank :: ranks.world]
            todo[(name, profile)] = [r for r in mine if r.id not in done]
    return todo


def _load_model(cfg: EvalConfig, ranks: Ranks) -> Any:
    from duet_cli.runtime import load_model

    lo, hi = cfg.pixel_range
    return load_model(
        cfg.model, dtype=cfg.dtype, device=device_for(ranks, cfg.device), min_pixels=lo, max_pixels=hi
    )


def _answer(
    cfg: EvalConfig,
    loaded: Any,
    bench_name: str,
    profile: str,
    records: list[Record],
    ranks: Ranks,
    progress: Progress,
) -> None:
    from duet_cli.engine.session import apply_profile
    from duet_cli.errors import InputError
    from duet_cli.runtime import Prompt, run
    from duet_cli.video import load_video

    if not records:
        return
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    with (
        apply_profile(loaded.model, profile) as session,
        PredictionWriter(prediction_path(cfg.out, bench_name, profile, ranks)) as writer,
    ):
        for start in range(0, len(records), cfg.batch_size):
            batch = records[start : start + cfg.batch_size]
            rows: dict[str, dict[str, Any]] = {}
            prompts, answered = [], []
            for rec in batch:
                try:
                    images = [_image(img) for img in rec.images]
                    videos = [load_video(v, cfg.frames) for v in rec.videos]
                except InputError as exc:  # scored as a failure, not a crash
                    rows[rec.id] = {"id": rec.id, "prediction": None, "error": str(exc)}
                    continue
                prompts.append(Prompt(rec.question, images, videos))
                answered.append(rec)
            if prompts:
                result = run(loaded, session, prompts, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
                share = result.trace.timings.prefill_s * 1000 / len(prompts)
                for rec, answer, sample in zip(answered, result.answers, result.trace.samples):
                    rows[rec.id] = {
                        "id": rec.id,
                        "prediction": answer,
                        "error": None,
                        "visual_tokens_in": sample.visual_tokens_in,
                        "unreduced_visual_tokens": sample.unreduced_visual_tokens,
                        "avg_visual_tokens": sample.avg_visual_tokens,
                        "prefill_ms": share,
                    }
            writer.write([rows[r.id] for r in batch])
            progress.advance(len(batch))
            _written["records"] += len(batch)
            if kill_after and _written["records"] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)


def _score(cfg: EvalConfig, prep: Prepared, bench_name: str, profile: str, ranks: Ranks) -> Cell:
    final = cfg.out / bench_name / f"{profile}.jsonl"
    order = [r.id for r in prep.records]
    if ranks.world > 1:
        parts = [cfg.out / bench_name / f"{profile}.rank{r}.jsonl" for r in range(ranks.world)]
        rows = merge_rank_files(final, parts, order)
    else:
        rows = read_rows(final)
    by_id = {r["id"]: r for r in rows}
    predictions = [by_id.get(i, {}).get("prediction") for i in order]
    ok = [by_id[i] for i in order if i in by_id and by_id[i].get("error") is None]
    mean = lambda key: sum(r[key] for r in ok) / len(ok) if ok else 0.0  # noqa: E731
    return Cell(
        benchmark=bench_name,
        profile=profile,
        score=prep.bench.score(prep.records, predictions),
        avg_visual_tokens=mean("avg_visual_tokens"),
        unreduced_visual_tokens=mean("unreduced_visual_tokens"),
        prefill_ms=mean("prefill_ms"),
        failures=sum(1 for p in predictions if p is None),
        predictions=final,
    )
