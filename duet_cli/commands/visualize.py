"""`duet visualize`: run one prompt under each profile and draw what each stage kept over the image (PNG),
or, with `--video`, over a strip of the sampled frames (one strip per stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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

ProfilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--profile",
        "-p",
        help="Shipped profile name or YAML path; repeat to compare profiles (one row each). "
        "Default: the model's.",
    ),
]


def visualize(
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Image file (repeat for several images).")
    ] = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="The question to ask.")] = None,
    video: Annotated[
        Path | None,
        typer.Option(
            "--video",
            help="A video (Video-LLaVA, Qwen2.5-VL) instead of images: draws a strip of its frames.",
        ),
    ] = None,
    frames: FramesOpt = 8,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="The PNG to write (atomically), e.g. kept.png.")
    ] = None,
    model: ModelOpt = None,
    profile: ProfilesOpt = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate (the drawing needs none).")
    ] = 8,
    patch_px: Annotated[
        int | None,
        typer.Option(
            "--patch-px",
            min=2,
            max=64,
            help="Pixels per patch (default 21; video frames 14). Panels stay >= 336 px a side (frames 224).",
        ),
    ] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    min_pixels: MinPixelsOpt = None,
    max_pixels: MaxPixelsOpt = None,
    chat_template: ChatTemplateOpt = None,
    image_aspect: ImageAspectOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Draw which patches each stage kept, merged and dropped, one row per profile, to a PNG."""
    from duet_cli.reports.jsonio import check_writable

    if video is not None and image:
        raise UsageError("give either --image (one or more) or one --video, not both")
    if not image and video is None:
        raise UsageError("give at least one --image, or a --video")
    if question is None:
        raise UsageError("give --question")
    if out_file is None:
        raise UsageError("give --out FILE.png")
    if out_file.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, not {out_file.name!r}")
    check_template_options(chat_template, image_aspect)
    named = [*(image or []), video, *(profile or []), *([chat_template] if chat_template else [])]
    check_writable(out_file, named)  # never over an input

    from duet_cli import api
    from duet_cli.inputs.image_aspect import prepare_images
    from duet_cli.reports.render import infer_numbers, numbers_table, setup_line, untrained_notice
    from duet_cli.runtime import check_question
    from duet_cli.visualize import FigureRow, render_figure, render_video_figure, write_png
    from duet_cli.visualize.draw import CELL, VIDEO_CELL

    check_question(question)
    clip = None
    if video is not None:
        check_question(question, "<video>")
        clip = api.load_video(video, frames)  # a bad file fails here, before any model loads
    pictures = [api.load_image(p) for p in image or []]  # likewise
    names: list[str | None] = list(profile) if profile else [None]
    for name in names:
        if name is not None:
            api.load_profile(name)
    prepare_transformers()

    grids: list[tuple[int, int]] = []
    shared: list[Any] = []  # the model, loaded once for every profile

    def remember_grid(loaded: Any) -> None:
        grids.append(loaded.adapter.dims(loaded.model).grid)
        shared[:] = [loaded]

    reports = []
    with err.status("running", spinner="dots"):
        for name in names:
            reports.append(
                api.infer(
                    shared[0] if shared else model,
                    name,
                    [(question, list(image or []), [video] if video is not None else [])],
                    frames=frames,
                    dtype=dtype,
                    device=device,
                    min_pixels=min_pixels,
                    max_pixels=max_pixels,
                    chat_template=chat_template,
                    image_aspect=image_aspect,
                    seed=seed,
                    on_loaded=remember_grid,
                    max_new_tokens=max_new_tokens,
                )
            )
    first = reports[0]
    untrained = " (untrained: random weights)" if first.untrained else ""
    rows = [FigureRow(r.profile.name, r.trace.samples[0], g) for r, g in zip(reports, grids)]
    if clip is not None:
        numbers_line = ", ".join(f"#{i}" for i in clip.indices)
        header = [
            f"{first.model}{untrained} · {question}",
            f"{video}: {len(clip.indices)} of {clip.total_frames} frames ({numbers_line})",
        ]
        figure = render_video_figure(
            panel_frames(clip, first.trace.samples[0]), rows, header=header, cell=patch_px or VIDEO_CELL
        )
    else:
        header = [f"{first.model}{untrained} · {question}", " + ".join(str(p) for p in image or [])]
        seen = prepare_images(shared[0], pictures)  # padded to a square: the whole image is in view
        figure = render_figure(seen, rows, header=header, cell=patch_px or CELL)
    write_png(out_file, figure)

    numbers = [infer_numbers(r.trace) for r in reports]
    if json_out:
        document = {
            "out": str(out_file),
            "size": list(figure.size),
            "question": question,
            "images": [str(p) for p in image or []],
            **({"video": str(video), "frames": clip.indices} if clip is not None else {}),
            "runs": [
                {
                    "provenance": r.provenance,
                    "answer": r.answers[0],
                    "numbers": n,
                    "trace": r.trace.to_dict(),
                }
                for r, n in zip(reports, numbers)
            ],
        }
        print_json(document)
        return
    if first.untrained:
        err.print(untrained_notice(first.model))
    for r, n in zip(reports, numbers):
        title = f"{r.model} · profile {r.profile.name}"
        out.print(numbers_table(n, title=title, footer=setup_line(r.provenance)))
    err.print(f"wrote {out_file} ({figure.width}x{figure.height} px)", markup=False)


def panel_frames(clip: Any, sample: Any) -> list[Any]:
    """The frame drawn for each frame span: every sampled frame (Video-LLaVA: a frame per span), or the
    first frame of each temporal slice (Qwen2.5-VL: two sampled frames make one slice of tokens)."""
    spans = [s for s in sample.spans if s.kind == "frame"]
    if len(spans) == len(clip.frames):
        return list(clip.frames)
    return [clip.frames[clip.indices.index(s.source_frame)] for s in spans]
