"""`duet train`: fine-tune a model with a reduction profile active in the forward, resumable."""

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
from duet_cli.console import err, out, print_json


def train(
    data: Annotated[
        str,
        typer.Option("--data", "-d", help="'synth' (the synth train split) or a LLaVA JSON / JSONL file."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for checkpoints, the model and reports.")],
    model: ModelOpt = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Profile active during training (name or YAML path).")
    ] = "baseline",
    image_folder: Annotated[
        Path | None,
        typer.Option(
            "--image-folder", help="Where the JSON's image paths start. Default: the JSON's folder."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="First N records (synth: images; default 50,000).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Passes over the data.")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Optimizer steps (instead of --epochs).")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-5,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="adamw, or sgd (plain, no momentum).")
    ] = "adamw",
    schedule: Annotated[
        str, typer.Option("--schedule", help="cosine, linear or constant (after warmup).")
    ] = "cosine",
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", min=0, help="Linear warmup steps.")] = 0,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW decay.")] = 0.0,
    max_grad_norm: Annotated[
        float, typer.Option("--max-grad-norm", min=0.0, help="Clip the global gradient norm (0: off).")
    ] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per device.")] = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-steps per update.")] = 1,
    train_parts: Annotated[
        str,
        typer.Option(
            "--train", help="Parts to train, comma-separated: vision, projector, llm (rest frozen)."
        ),
    ] = "projector,llm",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out (if any).")
    ] = False,
    save_every: Annotated[
        int | None, typer.Option("--save-every", min=1, help="Checkpoint every N steps (and at the end).")
    ] = None,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Checkpoints to keep.")] = 2,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail on a malformed record or missing image instead of skipping."),
    ] = False,
    mixed_precision: Annotated[
        str | None, typer.Option("--mixed-precision", help="no, bf16 or fp16 (default: accelerate config).")
    ] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    chat_template: ChatTemplateOpt = None,
    image_aspect: ImageAspectOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Train with a profile active; several GPUs: `accelerate launch -m duet_cli train ...`."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from duet_cli.reports.jsonio import provenance
    from duet_cli.training.plan import TrainConfig, parse_parts
    from duet_cli.training.report import summary_table, write_outputs
    from duet_cli.training.trainer import Hooks
    from duet_cli.training.trainer import train as run_train

    cfg = TrainConfig(
        data=data,
        out=out_dir,
        model=model,
        profile=profile,
        image_folder=image_folder,
        limit=limit,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        grad_accum=grad_accum,
        train=parse_parts(train_parts),
        seed=seed,
        resume=resume,
        save_every=save_every,
        keep=keep,
        strict=strict,
        dtype=dtype,
        mixed_precision=mixed_precision,
        device=device,
        chat_template=chat_template,
        image_aspect=image_aspect,
    )
    check_template_options(chat_template, image_aspect)
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
    task = bar.add_task("checking", total=None, loss="-", rate="-")
    hooks = Hooks(
        start=lambda total, done: bar.update(task, total=total, completed=done),
        step=lambda i: bar.update(
            task, completed=i.step, loss=f"{i.loss:.4f}", rate=f"{i.samples_per_s:.2f}"
        ),
        warn=lambda text: err.print(f"[yellow]warning:[/] {escape(text)}"),
        describe=lambda text: bar.update(task, description=text),
    )
    try:
        with bar:
            report = run_train(cfg, hooks)
    except KeyboardInterrupt:
        err.print(
            f"[yellow]interrupted[/]: the newest checkpoint in {out_dir}/checkpoints is intact; "
            "rerun with --resume to continue from it"
        )
        raise typer.Exit(130) from None
    if report is None:  # a non-main rank
        return
    prov = provenance(
        profile_name=report.profile,
        profile_hash="",
        profile={},
        model=report.model,
        dtype=dtype,
        device=device,
        seed=seed,
    )
    prov |= report.setup  # chat_template (source, kind, digest) and image_aspect
    files = write_outputs(report, out_dir, prov)
    if json_out:
        from duet_cli.training.report import numbers

        doc = {"provenance": prov, **numbers(report)}
        print_json(doc)
        return
    out.print(summary_table(report))
    err.print(f"wrote {files['model']}, {files['report']} and {files['loss_curve']}")
