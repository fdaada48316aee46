"""`duet profile`'s numbers: every figure of a ProfileReport, JSON-ready (what --json prints and what
duet_cli.reports.render_profile's tables show)."""

from __future__ import annotations

import statistics
from typing import Any

from duet_cli.cost.profiling import ProfileReport


def _spread(xs: list[float]) -> dict[str, Any] | None:
    if not xs:
        return None
    return {
        "median": round(statistics.median(xs), 3),
        "min": round(min(xs), 3),
        "max": round(max(xs), 3),
        "runs": [round(x, 3) for x in xs],
    }


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 3) if den else None


def _grid_numbers(report: ProfileReport) -> dict[str, Any] | None:
    if report.image_grid is None:
        return None
    t, h, w = report.image_grid
    return {"t": t, "h": h, "w": w, "source": report.image_grid_source}


def report_numbers(report: ProfileReport) -> dict[str, Any]:
    """Every number of the report, JSON-ready. FLOPs and KV bytes are exact integers for the whole batch."""
    base = report.rows[0]
    assert base.analysis.profile == "baseline"
    b = report.batch
    base_prefill = base.analysis.prefill
    base_ms = statistics.median(base.measured.prefill_ms) if base.measured else None
    rows: list[dict[str, Any]] = []
    for row in report.rows:
        a = row.analysis
        entry: dict[str, Any] = {
            "profile": a.profile,
            "hash": a.hash,
            "tokens_in": a.tokens_in,
            "unreduced": a.unreduced,
            "avg_visual_tokens": round(a.avg_visual_tokens, 2),
            "ledger": a.ledger,
            "flops": {
                "vision": {"paper": b * a.vision.paper, "actual": b * a.vision.actual},
                "prefill": {"paper": b * a.prefill.paper, "actual": b * a.prefill.actual},
                "decode_step": {"paper": b * a.decode.paper, "actual": b * a.decode.actual},
                "overhead": {"stage1_scoring": b * a.vision.scoring, "stage2_ranking": b * a.prefill.ranking},
            },
            "kv_cache_bytes": b * a.kv.bytes,
            "bound": _ratio(base_prefill.actual, a.prefill.actual),
            "bound_paper": _ratio(base_prefill.paper, a.prefill.paper),
            "measured": None,
        }
        m = row.measured
        if m is not None:
            prefill_ms = statistics.median(m.prefill_ms)
            entry["measured"] = {
                "vision_ms": _spread(m.vision_ms),
                "prefill_ms": _spread(m.prefill_ms),
                "decode_ms_per_token": _spread(m.decode_ms_per_token),
                "peak_memory_bytes": m.peak_memory_bytes,
                "speedup": _ratio(base_ms, prefill_ms) if base_ms is not None else None,
            }
        rows.append(entry)
    return {
        "model": report.model,
        "config_only": report.config_only,
        "num_layers": report.num_layers,
        "batch_size": b,
        "text_tokens": report.text_tokens,
        "text_tokens_source": report.text_tokens_source,
        "frames": report.frames,
        "image_grid": _grid_numbers(report),
        "kv_bytes_per_element": report.bytes_per_element,
        "attention_counted": "causal",
        "repeats": report.repeats,
        "warmup": report.warmup,
        "max_new_tokens": report.max_new_tokens,
        "image": report.image,
        "question": report.question,
        "device": report.device,
        "dtype": report.dtype,
        "process_max_rss_bytes": report.process_max_rss_bytes,
        "rows": rows,
    }
