"""`duet train`'s outputs: the summary table (pure), the loss-curve PNG and report.json (atomic writes)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from rich.table import Table

from duet_cli.training.trainer import TrainReport


def numbers(report: TrainReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


def summary_table(report: TrainReport) -> Table:
    table = Table(title=f"{report.model} · {report.data} · profile {report.profile}")
    table.add_column("")
    table.add_column("value", justify="right")
    resumed = f" (resumed at {report.resumed_from_step})" if report.resumed_from_step else ""
    table.add_row("steps", f"{report.steps} of {report.total_steps}{resumed}")
    table.add_row("samples (this run)", f"{report.samples:,}")
    table.add_row("global batch", f"{report.global_batch} ({report.world_size} rank(s))")
    table.add_row("wall time", f"{report.wall_s:.1f} s")
    table.add_row("samples/s", f"{report.samples_per_s:.2f}")
    table.add_row("visual tokens entering the LLM", f"{report.visual_tokens_in:.2f}")
    table.add_row(
        "average visual tokens per sample",
        f"{report.avg_visual_tokens:.2f} of {report.unreduced_visual_tokens:g} unreduced",
    )
    table.add_row("final loss", "n/a" if report.final_loss is None else f"{report.final_loss:.4f}")
    table.add_row("trainable parameters", f"{report.trainable_parameters:,}")
    return table


def loss_png(report: TrainReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [h[0] for h in report.history]
    ax.plot(steps, [h[1] for h in report.history], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over label tokens)")
    ax.set_title(f"{report.model} · {report.profile} · {report.avg_visual_tokens:.2f} avg visual tokens")
    if steps and min(h[1] for h in report.history) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(report: TrainReport, out: Path, provenance: dict[str, Any]) -> dict[str, str]:
    from duet_cli.reports.jsonio import atomic_write_bytes, atomic_write_text, to_json

    paths = {"report": out / "report.json", "loss_curve": out / "loss.png"}
    report.files.update({k: str(v) for k, v in paths.items()})
    atomic_write_bytes(paths["loss_curve"], loss_png(report))
    atomic_write_text(paths["report"], to_json({"provenance": provenance, **numbers(report)}) + "\n")
    return report.files
