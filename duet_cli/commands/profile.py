"""`duet profile`: FLOPs (two conventions), KV-cache bytes, measured latency and peak memory per profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from duet_cli.commands.options import (
    ChatTemplateOpt,
    DeviceOpt,
    DtypeOpt,
    ImageAspectOpt,
    JsonOpt,
    ModelOpt,
    SeedOpt,
    check_template_options,
)
from duet_cli.console import err, out, prepare_transformers, print_json
from duet_cli.errors import UsageError

ProfilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--profile",
        "-p",
        help="Profile name or YAML path (repeat for several; baseline is always included). "
        "Default: the model's default profile.",
    ),
]


def _default_image() -> Path:
    from duet_cli.resources import data_root

    path = data_root() / "examples" / "shapes.png"
    if not path.is_file():
        raise UsageError("give --image: the default examples/shapes.png is only in a source checkout")
    return path


def profile(
    model: ModelOpt = None,
    profiles: ProfilesOpt = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Image to run (default: examples/shapes.png).")
    ] = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="The question to ask.")] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Identical prompts per forward pass.")
    ] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per profile.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per profile first.")] = 1,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Tokens generated per run (decode timing).")
    ] = 8,
    layers: Annotated[bool, typer.Option("--layers", help="Add the per-layer visual-token ledger.")] = False,
    config_only: Annotated[
        bool,
        typer.Option("--config-only", help="Arithmetic only, from the catalog card or config: no weights."),
    ] = False,
    text_tokens: Annotated[
        int | None,
        typer.Option(
            "--text-tokens", min=0, help="Text tokens per prompt for --config-only (default: 24, assumed)."
        ),
    ] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    chat_template: ChatTemplateOpt = None,
    image_aspect: ImageAspectOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Per profile: FLOPs (papers' formula and actual), KV-cache bytes, times, speedup vs baseline."""
    from duet_cli.cost import profiling
    from duet_cli.cost.profile_numbers import report_numbers
    from duet_cli.reports.render_profile import flops_table, ledger_table, measured_table, tokens_table

    if text_tokens is not None and not config_only:
        raise UsageError("--text-tokens is for --config-only (a measured run counts the prompt's tokens)")
    names = list(profiles or [])
    check_template_options(chat_template, image_aspect)
    if config_only and (chat_template is not None or image_aspect is not None):
        raise UsageError("--chat-template and --image-aspect are for a measured run, not --config-only")
    if config_only:
        from duet_cli.catalog import default_model, get_card, list_cards

        spec = model or default_model()
        if not names and spec in {c.name for c in list_cards()}:
            names = [get_card(spec).default_profile]
        report = profiling.profile_config_only(
            spec, names, text_tokens=text_tokens, dtype=dtype, batch=batch_size
        )
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prepare_transformers()
        if not names:
            from duet_cli.catalog import default_model, get_card, list_cards

            spec = model or default_model()
            names = [get_card(spec).default_profile] if spec in {c.name for c in list_cards()} else []
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        with progress:
            task = progress.add_task("loading model", total=None)
            report = profiling.profile_measured(
                model,
                names,
                image=image or _default_image(),
                question=question or profiling.DEFAULT_QUESTION,
                batch=batch_size,
                repeats=repeats,
                warmup=warmup,
                max_new_tokens=max_new_tokens,
                dtype=dtype,
                device=device,
                seed=seed,
                chat_template=chat_template,
                image_aspect=image_aspect,
                on_loaded=lambda total: progress.update(task, total=total, description="profiling"),
                on_step=lambda name: progress.update(task, advance=1, description=name),
            )
    numbers = report_numbers(report)
    if json_out:
        document = {"provenance": report.provenance or None, "numbers": numbers}
        print_json(document)
        return
    if report.untrained:
        from duet_cli.reports.render import untrained_notice

        err.print(untrained_notice(report.model))
    out.print(tokens_table(numbers))
    out.print(flops_table(numbers))
    if not report.config_only:
        from duet_cli.reports.render import setup_line

        out.print(measured_table(numbers, footer=setup_line(report.provenance or {})))
    if layers:
        out.print(ledger_table(numbers))
