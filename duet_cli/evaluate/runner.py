"""The eval loop: every profile on every benchmark, predictions appended as they are made, resumable
under the same settings only, sharded across launcher ranks (rank r answers records r, r+W, ...; rank 0
holds the --out folder, merges and scores).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from duet_cli.benchmarks.base import Benchmark, Record, Score
from duet_cli.evaluate import manifest
from duet_cli.evaluate.distributed import Ranks, all_true, barrier, device_for, from_env, shutdown
from duet_cli.evaluate.lock import out_lock
from duet_cli.evaluate.resume import (
    DIGEST,
    Chosen,
    check_merged,
    choose_profiles,
    done_ids,
    final_path,
    prediction_path,
    rank_parts,
)
from duet_cli.evaluate.store import PredictionWriter, has_rows, merge_rank_files, read_rows

if TYPE_CHECKING:
    from duet_cli.errors import InputError

T = TypeVar("T")
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
    chat_template: str | None = None  # --chat-template (a file or a template string)
    image_aspect: str | None = None  # --image-aspect (LLaVA families): pad or crop


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
    profile_hash: str = ""
    first_error: str | None = None  # why the first failed record failed
    settings: dict[str, Any] = field(default_factory=dict)  # the manifest its predictions were made under
    setup: dict[str, Any] = field(default_factory=dict)  # how the loaded model prompts: template, aspect


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
    digests: dict[str, str] = field(default_factory=dict)  # record id -> manifest.record_digest


def prepare(cfg: EvalConfig) -> dict[str, Prepared]:
    """Resolve benchmarks and read their records (a missing dataset fails here, before any model loads)."""
    from duet_cli.benchmarks.registry import data_roots, get_benchmark

    prepared = {}
    roots = data_roots(cfg.benchmarks, cfg.data)  # a misspelt --data name is refused, not ignored
    for name in dict.fromkeys(cfg.benchmarks):
        bench = get_benchmark(name)
        skipped: list[str] = []
        root = roots.get(name.strip().lower())
        records = list(_load(bench, root, cfg.split, cfg.limit, cfg.strict, skipped))
        digests = {r.id: manifest.record_digest(r) for r in records}
        prepared[name] = Prepared(bench, records, skipped, digests)
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
    from duet_cli.inputs.media import load_image

    if not isinstance(ref, Image.Image):
        return load_image(ref)
    try:
        ref.load()
        return ref.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"unreadable image in the dataset: {exc}") from None


def _images_of(rec: Record) -> list[Any] | InputError:
    """A record's decoded images, or the InputError that makes it a failure row (on the prefetch
    thread, the only one decoding images while the loop runs: media.load_image sets PIL and warnings
    state process-wide around each decode)."""
    from duet_cli.errors import InputError

    try:
        return [_image(img) for img in rec.images]
    except InputError as exc:
        return exc


def run_eval(cfg: EvalConfig, progress: Progress | None = None) -> list[Cell] | None:
    """Run everything; returns the scored cells on the main rank (None on the others)."""
    progress = progress or Progress()
    ranks = from_env()
    try:
        chosen = choose_profiles(cfg.profiles)  # a typo fails before the model loads
        prepared = prepare(cfg)
        for name, prep in prepared.items():
            if prep.skipped and ranks.main:
                progress.warn(
                    f"{name}: skipped {len(prep.skipped)} malformed record(s); first: {prep.skipped[0]}"
                )
        with contextlib.ExitStack() as held:
            # one process per folder, its own ranks sharing it: the main rank holds it, and the others
            # read and write only once it does
            _together(ranks, lambda: held.enter_context(out_lock(cfg.out)) if ranks.main else None)
            dtype = _dtype(cfg, ranks)
            wants = {(b, c.stem): _settings(cfg, c, b, prepared[b], dtype) for b in prepared for c in chosen}
            todo = _together(ranks, lambda: _pending(cfg, prepared, chosen, wants, ranks))
            progress.start(sum(len(records) for _, _, records in todo))
            loaded = _load_model(cfg, ranks)
            for bench_name, c, records in todo:
                progress.describe(f"{bench_name} · {c.label}")
                want = wants[(bench_name, c.stem)]
                _answer(cfg, loaded, bench_name, c, want, prepared[bench_name], records, ranks, progress)
            barrier(ranks)
            if not ranks.main:
                return None
            cells = [
                _score(cfg, prepared[b], b, c, wants[(b, c.stem)], ranks) for b in prepared for c in chosen
            ]
            for cell in cells:
                cell.setup = loaded.prompting()
        _check_scored(cells, progress)
        return cells
    finally:
        shutdown(ranks)


def _together(ranks: Ranks, step: Callable[[], T]) -> T:
    """Run `step` on every rank; when it refuses on any, every rank stops with one line (rather than the
    others waiting on a peer that left, then failing on the lost connection)."""
    from duet_cli.errors import DuetError, InputError

    refusal: DuetError | None = None
    try:
        value = step()
    except DuetError as exc:
        refusal = exc
    if not all_true(ranks, refusal is None):
        raise refusal or InputError("another rank of this launch refused the run; see its error line")
    return value


def _dtype(cfg: EvalConfig, ranks: Ranks) -> str:
    """The dtype the model will run in ("auto" is bf16 on CUDA, fp32 elsewhere: not one setting)."""
    from duet_cli.runtime import pick_device, pick_dtype

    return str(pick_dtype(cfg.dtype, pick_device(device_for(ranks, cfg.device)))).removeprefix("torch.")


def _settings(cfg: EvalConfig, c: Chosen, bench_name: str, prep: Prepared, dtype: str) -> dict[str, Any]:
    from duet_cli.catalog import default_model

    return manifest.expected(
        model=cfg.model or default_model(),
        profile_name=c.profile.name,
        profile_hash=c.profile.hash,
        dtype=dtype,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        frames=cfg.frames if any(r.videos for r in prep.records) else None,  # images ignore --frames
        pixels=cfg.pixel_range,
        chat_template=cfg.chat_template,
        image_aspect=cfg.image_aspect,
        benchmark=bench_name,
        split=cfg.split,
    )


def _pending(
    cfg: EvalConfig,
    prepared: dict[str, Prepared],
    chosen: list[Chosen],
    wants: dict[tuple[str, str], dict[str, Any]],
    ranks: Ranks,
) -> list[tuple[str, Chosen, list[Record]]]:
    """This rank's records still to answer; predictions made under other settings or from other data are
    refused here, before the model loads."""
    todo = []
    for name, prep in prepared.items():
        for c in chosen:
            final = final_path(cfg.out, name, c.stem)
            made = any(has_rows(p) for p in [final, *rank_parts(final)])
            manifest.check(final, made, wants[(name, c.stem)])
            done = done_ids(final, prep.digests)
            mine_path = prediction_path(cfg.out, name, c.stem, ranks)
            if mine_path != final:
                done |= done_ids(mine_path, prep.digests)
            mine = prep.records[ranks.rank :: ranks.world]
            todo.append((name, c, [r for r in mine if r.id not in done]))
    return todo


def _load_model(cfg: EvalConfig, ranks: Ranks) -> Any:
    from duet_cli.runtime import load_model

    lo, hi = cfg.pixel_range
    return load_model(
        cfg.model, dtype=cfg.dtype, device=device_for(ranks, cfg.device), min_pixels=lo, max_pixels=hi,
        chat_template=cfg.chat_template, image_aspect=cfg.image_aspect,
    )  # fmt: skip


def _answer(
    cfg: EvalConfig,
    loaded: Any,
    bench_name: str,
    chosen: Chosen,
    want: dict[str, Any],
    prep: Prepared,
    records: list[Record],
    ranks: Ranks,
    progress: Progress,
) -> None:
    from duet_cli.engine.session import apply_profile
    from duet_cli.errors import InputError
    from duet_cli.evaluate.prefetch import Prefetcher
    from duet_cli.inputs.video import load_video
    from duet_cli.runtime import Prompt, run

    if not records:
        return
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    manifest.write(final_path(cfg.out, bench_name, chosen.stem), want)  # before the first row
    batches = [records[s : s + cfg.batch_size] for s in range(0, len(records), cfg.batch_size)]
    with (
        apply_profile(loaded.model, chosen.profile) as session,  # the profile as loaded and hashed
        PredictionWriter(prediction_path(cfg.out, bench_name, chosen.stem, ranks)) as writer,
        # the next batch's images decode on a background thread while this one is answered
        Prefetcher(batches, _images_of, name=lambda r: f"{bench_name} record {r.id}") as loading,
    ):
        for batch, decoded in zip(batches, loading):
            rows: dict[str, dict[str, Any]] = {}
            prompts, answered = [], []
            for rec, images in zip(batch, decoded):
                try:
                    if isinstance(images, InputError):  # raised on the prefetch thread, scored here
                        raise images
                    # videos stay on this thread: decord's decode redirects file descriptor 2 for the
                    # whole process while it runs, which would swallow this thread's stderr meanwhile
                    videos = [load_video(v, cfg.frames) for v in rec.videos]
                except InputError as exc:  # scored as a failure, not a crash
                    rows[rec.id] = {"id": rec.id, "prediction": None, "error": str(exc)}
                    rows[rec.id][DIGEST] = prep.digests[rec.id]
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
                        DIGEST: prep.digests[rec.id],
                    }
            writer.write([rows[r.id] for r in batch])
            progress.advance(len(batch))
            _written["records"] += len(batch)
            if kill_after and _written["records"] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)


def _score(
    cfg: EvalConfig, prep: Prepared, bench_name: str, c: Chosen, want: dict[str, Any], ranks: Ranks
) -> Cell:
    final = final_path(cfg.out, bench_name, c.stem)
    order = [r.id for r in prep.records]
    if ranks.world > 1:
        parts = [final_path(cfg.out, bench_name, f"{c.stem}.rank{r}") for r in range(ranks.world)]
        rows = merge_rank_files(final, parts, order)
    else:
        rows = read_rows(final)
    by_id = {r["id"]: r for r in rows}  # the last row of an id wins: a retried failure replaces the failure
    check_merged(final, [by_id[i] for i in order if i in by_id], prep.digests)
    predictions = [by_id.get(i, {}).get("prediction") for i in order]
    ok = [by_id[i] for i in order if i in by_id and by_id[i].get("error") is None]
    errors = [by_id[i]["error"] for i in order if i in by_id and by_id[i].get("error") is not None]
    mean = lambda key: sum(r[key] for r in ok) / len(ok) if ok else 0.0  # noqa: E731
    return Cell(
        benchmark=bench_name,
        profile=c.label,
        score=prep.bench.score(prep.records, predictions),
        avg_visual_tokens=mean("avg_visual_tokens"),
        unreduced_visual_tokens=mean("unreduced_visual_tokens"),
        prefill_ms=mean("prefill_ms"),
        failures=sum(1 for p in predictions if p is None),
        predictions=final,
        profile_hash=c.profile.hash,
        first_error=errors[0] if errors else None,
        settings=want,
    )


def _check_scored(cells: list[Cell], progress: Progress) -> None:
    """Warn about records that could not be answered (once per benchmark); fail when nothing was scored."""
    from duet_cli.errors import InputError

    for bench in dict.fromkeys(c.benchmark for c in cells):
        worst = max((c for c in cells if c.benchmark == bench), key=lambda c: c.failures)
        if worst.failures:
            progress.warn(
                f"{bench}: {worst.failures} of {worst.score.count} record(s) could not be answered "
                f"and score as wrong; first: {worst.first_error}"
            )
    if not any(c.score.count - c.failures > 0 for c in cells):
        worst = max(cells, key=lambda c: c.failures)
        why = f"; first: {worst.first_error}" if worst.first_error else ""
        raise InputError(
            f"nothing could be scored: no record of {', '.join(dict.fromkeys(c.benchmark for c in cells))} "
            f"was answered{why}"
        )
