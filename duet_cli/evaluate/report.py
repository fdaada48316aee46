"""Eval results: numbers relative to baseline, the paper-style summary, tables, results JSON and the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from duet_cli.evaluate.runner import Cell

FAMILIES = {
    "visionzip": "VisionZip",
    "pdrop": "PyramidDrop",
    "duet": "DUET",
    "fastv": "FastV",
    "random": "Random",
    "pool": "Pool",
}


def family(profile: str) -> str:
    """Method family of a profile, by its name's prefix (custom profiles form their own line)."""
    return FAMILIES.get(profile.split("-")[0], "custom")


def results(cells: Sequence[Cell]) -> dict[str, Any]:
    """Every number of the tables: per benchmark and profile, and the summary per profile."""
    base = {c.benchmark: c for c in cells if c.profile == "baseline"}
    rows: list[dict[str, Any]] = []
    for c in cells:
        b = base.get(c.benchmark)
        rel = 100 * c.score.headline / b.score.headline if b and b.score.headline else None
        unreduced = c.unreduced_visual_tokens or (b.avg_visual_tokens if b else 0.0)
        rows.append(
            {
                "benchmark": c.benchmark,
                "profile": c.profile,
                "family": family(c.profile) if c.profile != "baseline" else "baseline",
                "headline_name": c.score.headline_name,
                "score": c.score.headline,
                "relative_pct": rel,
                "avg_visual_tokens": c.avg_visual_tokens,
                "reduction_pct": 100 * (1 - c.avg_visual_tokens / unreduced) if unreduced else None,
                "prefill_ms": c.prefill_ms,
                "count": c.score.count,
                "failures": c.failures,
                "metrics": c.score.metrics,
                "predictions": str(c.predictions),
            }
        )
    summary = []
    for profile in dict.fromkeys(c.profile for c in cells):
        mine = [r for r in rows if r["profile"] == profile]
        rels: list[float | None] = [r["relative_pct"] for r in mine]
        summary.append(
            {
                "profile": profile,
                "family": mine[0]["family"],
                "avg_accuracy_pct": _mean(rels),
                "avg_visual_tokens": sum(r["avg_visual_tokens"] for r in mine) / len(mine),
            }
        )
    return {"cells": rows, "summary": summary}


def _mean(values: list[float | None]) -> float | None:
    """Mean, or None when any value is undefined (a baseline that scored 0 has no relative numbers)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def benchmark_table(numbers: dict[str, Any], benchmark: str) -> Table:
    rows = [r for r in numbers["cells"] if r["benchmark"] == benchmark]
    title = f"{benchmark}: {rows[0]['headline_name']} on {rows[0]['count']} records; prefill in ms per record"
    table = Table(title=title)
    table.add_column("profile", no_wrap=True)
    for col in ("score", "vs base", "avg tokens", "reduction", "prefill", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["profile"],
            _fmt(r["score"]),
            _fmt(r["relative_pct"], ".1f") + ("%" if r["relative_pct"] is not None else ""),
            _fmt(r["avg_visual_tokens"]),
            _fmt(r["reduction_pct"], ".1f") + ("%" if r["reduction_pct"] is not None else ""),
            _fmt(r["prefill_ms"], ".1f"),
            str(r["failures"]),
        )
    return table


def summary_table(numbers: dict[str, Any], footer: str | None = None) -> Table:
    """The summary over benchmarks; `footer` (how prompts and images were prepared) as its caption."""
    table = Table(
        title="Avg Accuracy (%): mean over benchmarks of score / baseline score x 100", caption=footer
    )
    for col in ("profile", "family", "Avg Accuracy (%)", "avg tokens"):
        table.add_column(col, justify="left" if col in ("profile", "family") else "right", no_wrap=True)
    for s in numbers["summary"]:
        table.add_row(
            s["profile"], s["family"], _fmt(s["avg_accuracy_pct"], ".1f"), _fmt(s["avg_visual_tokens"])
        )
    return table


def plot_png(numbers: dict[str, Any], title: str) -> bytes:
    """Avg Accuracy (%) against average visual tokens, one line per method family, baseline starred."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    summary = [s for s in numbers["summary"] if s["avg_accuracy_pct"] is not None]
    for fam in dict.fromkeys(s["family"] for s in summary if s["family"] != "baseline"):
        points = sorted(
            (s["avg_visual_tokens"], s["avg_accuracy_pct"], s["profile"])
            for s in summary
            if s["family"] == fam
        )
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", label=fam)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for s in summary:
        if s["family"] == "baseline":
            ax.scatter(
                [s["avg_visual_tokens"]],
                [s["avg_accuracy_pct"]],
                marker="*",
                s=160,
                color="black",
                zorder=5,
                label="baseline",
            )
    if not summary:
        ax.text(
            0.5,
            0.5,
            "no relative accuracy: the baseline scored 0",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("average visual tokens per decoder layer (measured)")
    ax.set_ylabel("Avg Accuracy (% of baseline)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if summary:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(
    numbers: dict[str, Any], out: Path, provenance: dict[str, Any], title: str
) -> dict[str, Path]:
    """results.json and accuracy_vs_tokens.png under `out`, each written atomically."""
    from duet_cli.reports.jsonio import atomic_write_bytes, atomic_write_text, to_json

    paths = {"results": out / "results.json", "plot": out / "accuracy_vs_tokens.png"}
    atomic_write_text(paths["results"], to_json({"provenance": provenance, **numbers}) + "\n")
    atomic_write_bytes(paths["plot"], plot_png(numbers, title))
    return paths
