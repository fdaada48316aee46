"""Rich renderables for `duet infer`: the token and timing table, the answers, the untrained-model notice.

Pure functions. The table is built from `infer_numbers`, the same dict that `--json` prints.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from duet_cli.trace import ReductionTrace, SampleTrace

MAX_SAMPLE_COLUMNS = 8  # beyond this many distinct samples, show the first ones and a mean column


def _num(x: float) -> int | float:
    """A count as it is shown: an int when whole, else rounded to 2 decimals."""
    return int(x) if float(x).is_integer() else round(float(x), 2)


def _fmt_count(x: int | float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _fmt_ms(x: float) -> str:
    return f"{x:.1f} ms"


def _sample_numbers(s: SampleTrace) -> dict[str, Any]:
    return {
        "tokens_in": s.visual_tokens_in,
        "unreduced": s.unreduced_visual_tokens,
        "segments": [[a, b, n] for a, b, n in s.segments()],
        "avg_visual_tokens": round(s.avg_visual_tokens, 2),
        "reduction_pct": round(100.0 * s.reduction, 1),
    }


def _row_spans(samples: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Layer ranges that are constant for every sample: the union of all samples' segment boundaries."""
    starts = sorted({seg[0] for s in samples for seg in s["segments"]})
    if not starts:
        return []
    last = max(seg[1] for s in samples for seg in s["segments"])
    ends = [nxt - 1 for nxt in starts[1:]] + [last]
    return list(zip(starts, ends, strict=True))


def _count_at(sample: dict[str, Any], layer: int) -> int | float | None:
    for first, last, n in sample["segments"]:
        if first <= layer <= last:
            return n
    return None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _mean_numbers(samples: list[dict[str, Any]], raw: list[SampleTrace]) -> dict[str, Any]:
    segments: list[list[int | float]] = []
    for first, last in _row_spans(samples):
        counts = [c for c in (_count_at(s, first) for s in samples) if c is not None]
        segments.append([first, last, _num(_mean(counts))])
    return {
        "tokens_in": _num(_mean([s.visual_tokens_in for s in raw])),
        "unreduced": _num(_mean([s.unreduced_visual_tokens for s in raw])),
        "segments": segments,
        "avg_visual_tokens": round(_mean([s.avg_visual_tokens for s in raw]), 2),
        "reduction_pct": round(100.0 * _mean([s.reduction for s in raw]), 1),
    }


def infer_numbers(trace: ReductionTrace) -> dict[str, Any]:
    """Every number the infer table shows, rounded as shown (JSON-ready).

    Per sample: tokens_in (N0), unreduced, segments [[first_layer, last_layer, count]] (1-based),
    avg_visual_tokens (2 decimals), reduction_pct (percent of the unreduced count, 1 decimal).
    "mean" is over all samples (None when there are none); timings are for the whole run.
    """
    samples = [_sample_numbers(s) for s in trace.samples]
    t = trace.timings
    decode_ms = round(t.decode_s * 1000.0, 1)
    return {
        "profile": trace.profile,
        "num_layers": trace.num_layers,
        "samples": samples,
        "mean": _mean_numbers(samples, trace.samples) if samples else None,
        "timings": {
            "vision_ms": round(t.vision_s * 1000.0, 1),
            "prefill_ms": round(t.prefill_s * 1000.0, 1),
            "decode_ms": decode_ms,
            "decode_steps": t.decode_steps,
            "decode_ms_per_token": round(t.decode_s * 1000.0 / t.decode_steps, 1) if t.decode_steps else None,
        },
    }


def _layer_label(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def setup_line(provenance: dict[str, Any]) -> str | None:
    """The footer line saying how prompts and images were prepared (chat template, image aspect)."""
    parts = []
    chat = provenance.get("chat_template")
    if isinstance(chat, dict):
        parts.append(f"chat template: {chat.get('source')}")
    aspect = provenance.get("image_aspect")
    if aspect in ("pad", "crop"):
        parts.append(f"images: {'padded to a square' if aspect == 'pad' else 'centre-cropped'} ({aspect})")
    return "\n".join(parts) or None


def numbers_table(numbers: dict[str, Any], *, title: str | None = None, footer: str | None = None) -> Table:
    """The infer table, from an `infer_numbers` dict (use this when the dict is also printed as JSON).
    `footer` (e.g. `setup_line`) ends the caption."""
    samples: list[dict[str, Any]] = numbers["samples"]
    n = len(samples)
    caption: str | None = None
    if n > 1 and all(s == samples[0] for s in samples):
        columns, headers = [samples[0]], [f"all {n} samples"]
    elif n <= 1:
        columns, headers = samples[:1], ["value"]
    else:
        shown = samples[:MAX_SAMPLE_COLUMNS]
        columns = [*shown, numbers["mean"]]
        headers = [f"sample {i}" for i in range(1, len(shown) + 1)] + ["mean"]
        if n > MAX_SAMPLE_COLUMNS:
            caption = f"first {MAX_SAMPLE_COLUMNS} of {n} samples shown; mean over all {n}"
    if n > 1:
        note = f"times are for the whole run of {n} samples"
        caption = f"{caption}; {note}" if caption else note
    if footer:
        caption = f"{caption}\n{footer}" if caption else footer

    table = Table(
        title=title or f"profile {numbers['profile']}, {numbers['num_layers']} decoder layers",
        caption=caption,
        show_header=True,
        header_style="bold",
        title_style="bold",
    )
    table.add_column("", no_wrap=True)
    for h in headers:
        table.add_column(h, justify="right")

    def row(label: str, cells: list[str], *, end_section: bool = False) -> None:
        table.add_row(label, *cells, end_section=end_section)

    def blank_after_first(text: str) -> list[str]:
        return [text] + [""] * (len(headers) - 1)

    if columns:
        if len(columns) == 1:
            label, tokens_in = "tokens entering the LLM", "{} of {} unreduced"
        else:  # keep narrow columns narrow
            label, tokens_in = "tokens entering the LLM (of unreduced)", "{} of {}"
        row(
            label,
            [tokens_in.format(_fmt_count(c["tokens_in"]), _fmt_count(c["unreduced"])) for c in columns],
            end_section=True,
        )
        for first, last in _row_spans(columns):
            row(_layer_label(first, last), [_fmt_count(_count_at(c, first)) for c in columns])
        row("average visual tokens", [f"{c['avg_visual_tokens']:.2f}" for c in columns])
        row("reduction vs unreduced", [f"{c['reduction_pct']:.1f}%" for c in columns], end_section=True)

    t = numbers["timings"]
    row("vision encode", blank_after_first(_fmt_ms(t["vision_ms"])))
    row("prefill", blank_after_first(_fmt_ms(t["prefill_ms"])))
    row(f"decode ({t['decode_steps']} tokens)", blank_after_first(_fmt_ms(t["decode_ms"])))
    if t["decode_steps"]:
        row("decode per token", blank_after_first(_fmt_ms(t["decode_ms_per_token"])))
    return table


def infer_table(trace: ReductionTrace, *, title: str | None = None) -> Table:
    """Visual tokens per layer segment, average, reduction and timings of one `duet infer` run."""
    return numbers_table(infer_numbers(trace), title=title)


def answers_renderable(questions: list[str], answers: list[str]) -> RenderableType:
    """Each question (dim) followed by its answer (bold); numbered when there are several."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    parts: list[RenderableType] = []
    several = len(questions) > 1
    for i, (q, a) in enumerate(zip(questions, answers, strict=True), start=1):
        if i > 1:
            parts.append(Text(""))
        parts.append(Text(f"{i}. {q}" if several else q, style="dim"))
        parts.append(Text(a, style="bold"))
    return Group(*parts)


def untrained_notice(model_name: str) -> Text:
    """A yellow one-liner for a model built with random weights (e.g. a tiny model made from a config)."""
    return Text(
        f"note: {model_name} has random (untrained) weights; its answers are meaningless.",
        style="yellow",
    )
