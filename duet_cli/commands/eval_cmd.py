"""`duet eval`: accuracy and cost of profiles on benchmarks, relative to the unreduced model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from duet_cli.commands.options import (
    ChatTemplateOpt,
    DeviceOpt,
    DtypeOpt,
    FramesOpt,
    ImageAspectOpt,
    JsonOpt,
    MaxPixelsOpt,
    MinPixelsOpt,
    ModelOpt,
    SeedOpt,
    check_template_options,
)
from duet_cli.console import err, out, prepare_transformers, print_json
from duet_cli.errors import UsageError


def _parse_data(values: list[str]) -> dict[str, Path]:
    data = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--data {item!r}: expected BENCHMARK=FOLDER, e.g. textvqa=/data/textvqa")
        data[name.strip().lower()] = Path(path).expanduser()
    return data


def eval_cmd(
    benchmark: Annotated[
        list[str],
        typer.Option(
            "--benchmark",
            "-B",
            help="Benchmark (repeatable): synth, synth-large, textvqa, pope, gqa, scienceqa, mme; "
            "video (Video-LLaVA, Qwen2.5-VL): msvd, msrvtt, tgif.",
        ),
    ],
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", "-p", help="Profile (repeatable); baseline is always added."),
    ] = None,
    model: ModelOpt = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Where a benchmark's data lives: NAME=FOLDER (repeatable)."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Benchmark split (synth: train/val/test).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="First N records of each benchmark.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Prompts per forward pass.")
    ] = 1,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for predictions, results.json and the plot.")
    ] = Path("duet-eval"),
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on a malformed record instead of skipping it.")
    ] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Answer length cap.")] = 16,
    frames: FramesOpt = 8,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    min_pixels: MinPixelsOpt = None,
    max_pixels: MaxPixelsOpt = None,
    chat_template: ChatTemplateOpt = None,
    image_aspect: ImageAspectOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Run profiles on benchmarks (resumable: rerun the same command to continue) and compare to baseline."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from duet_cli.catalog import default_model
    from duet_cli.evaluate.report import benchmark_table, results, summary_table, write_outputs
    from duet_cli.evaluate.runner import EvalConfig, run_eval
    from duet_cli.evaluate.runner import Progress as Hooks
    from duet_cli.reports.jsonio import check_writable, provenance

    cfg = EvalConfig(
        benchmarks=benchmark,
        profiles=profile or ["visionzip-64", "duet-64"],
        model=model,
        data=_parse_data(data or []),
        split=split,
        limit=limit,
        batch_size=batch_size,
        out=out_dir,
        strict=strict,
        dtype=dtype,
        device=device,
        seed=seed,
        max_new_tokens=max_new_tokens,
        frames=frames,
        pixel_range=(min_pixels, max_pixels),
        chat_template=chat_template,
        image_aspect=image_aspect,
    )
    check_template_options(chat_template, image_aspect)
    for name in ("results.json", "accuracy_vs_tokens.png"):  # before any model loads; never over an input
        check_writable(out_dir / name, [*(profile or []), *([chat_template] if chat_template else [])])
    prepare_transformers()
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("loading", total=None)
    hooks = Hooks(
        start=lambda total: bar.update(task, total=total),
        advance=lambda n: bar.advance(task, n),
        describe=lambda text: bar.update(task, description=text),
        warn=lambda text: err.print(f"[yellow]warning:[/] {escape(text)}"),
    )
    try:
        with bar:
            cells = run_eval(cfg, hooks)
    except KeyboardInterrupt:
        err.print(
            f"[yellow]interrupted[/]: predictions so far are in {out_dir}; rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    if cells is None:  # a non-main rank: rank 0 reports
        return
    numbers = results(cells)
    made = cells[0].settings  # the settings every predictions file was checked against
    prov = provenance(
        profile_name=",".join(dict.fromkeys(c.profile for c in cells)),
        profile_hash=",".join(dict.fromkeys(c.profile_hash for c in cells)),
        profile={c.profile: {"name": c.settings["profile"], "hash": c.profile_hash} for c in cells},
        model=model or default_model(),
        dtype=made["dtype"],
        device=device,
        seed=seed,
    )
    prov |= cells[0].setup  # chat_template (source, kind, digest) and image_aspect
    prov["generation"] = {
        "max_new_tokens": max_new_tokens,
        "frames": next((c.settings["frames"] for c in cells if c.settings["frames"] is not None), None),
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "split": split,
        "limit": limit,
    }
    paths = write_outputs(
        numbers, out_dir, prov, title=f"{model or default_model()}: {', '.join(cfg.benchmarks)}"
    )
    if json_out:
        print_json({"provenance": prov, **numbers, "files": paths})
        return
    for bench in dict.fromkeys(c.benchmark for c in cells):
        out.print(benchmark_table(numbers, bench))
    from duet_cli.reports.render import setup_line

    out.print(summary_table(numbers, footer=setup_line(prov)))
    err.print(f"wrote {paths['results']} and {paths['plot']}")
