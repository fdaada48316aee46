"""Shared command-line options, defined once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

import typer

from duet_cli.gen_settings import SEED_MAX, check_seed

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Catalog name (see models/), a local folder, or a hub id. "
        "Default: the bundled model ($DUET_MODEL overrides it).",
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="Shipped profile name (duet profiles list) or a YAML path. Default: the model's.",
    ),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        help=f"Random seed (sampling, random baselines), 0 to {SEED_MAX}.",
        callback=check_seed,  # a DuetError: one line, before anything loads
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
FramesOpt = Annotated[
    int,
    typer.Option(
        "--frames",
        min=1,
        help="Frames sampled uniformly from each --video (default 8; Qwen2.5-VL makes a slice of every 2).",
    ),
]
MinPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--min-pixels", min=1, help="Qwen2.5-VL: smallest image area in pixels (processor default if unset)."
    ),
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-pixels", min=1, help="Qwen2.5-VL: largest image area in pixels (fewer visual tokens)."
    ),
]
ChatTemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--chat-template",
        help="A chat template file or string (Jinja, or duet's form with <image> and {question}) "
        "instead of the checkpoint's own.",
    ),
]
ImageAspectOpt = Annotated[
    str | None,
    typer.Option(
        "--image-aspect",
        help="LLaVA families: pad (to a square in the mean colour, as LLaVA-1.5 was trained) or crop "
        "(the processor's centre crop). Default: the model card's, else crop.",
    ),
]


def check_template_options(
    chat_template: str | None, image_aspect: str | None, *, messages: bool = False
) -> None:
    """--chat-template and --image-aspect checked before any model loads (one line each)."""
    from duet_cli.errors import UsageError

    if chat_template is not None:
        from duet_cli.inputs.chat_template import from_option

        from_option(chat_template)
    if image_aspect is not None:
        if messages:
            raise UsageError("--image-aspect is not for --messages (Qwen2.5-VL keeps each image's aspect)")
        from duet_cli.inputs.image_aspect import check_aspect

        check_aspect(image_aspect)
