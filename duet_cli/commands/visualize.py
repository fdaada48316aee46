"""`duet visualize`: run one prompt under each profile and draw what each stage kept over the image (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from duet_cli.commands.options import DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, SeedOpt
from duet_cli.console import err, out, quiet_transformers
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
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="The PNG to write (atomically), e.g. kept.png.")
    ] = None,
    model: ModelOpt = None,
    profile: ProfilesOpt = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate (the drawing needs none).")
    ] = 8,
    patch_px: Annotated[
        int,
        typer.Option("--patch-px", min=2, max=64, help="Pixels per patch (panels stay >= 336 px a side)."),
    ] = 21,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Draw which patches each stage kept, merged and dropped, one row per profile, to a PNG."""
    from duet_cli.jsonio import check_writable

    if not image:
        raise UsageError("give at least one --image")
    if question is None:
        raise UsageError("give --question")
    if out_file is None:
        raise UsageError("give --out FILE.png")
    if out_file.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, not {out_file.name!r}")
    check_writable(out_file)

    from duet_cli import api
    from duet_cli.jsonio import to_json
    from duet_cli.render import infer_numbers, numbers_table, untrained_notice
    from duet_cli.runtime import check_question
    from duet_cli.visualize import FigureRow, render_figure, write_png

    check_question(question)
    pictures = [api.load_image(p) for p in image]  # bad files fail here, before any model loads
    names: list[str | None] = list(profile) if profile else [None]
    for name in names:
        if name is not None:
            api.load_profile(name)
    quiet_transformers()

    grids: list[tuple[int, int]] = []

    def remember_grid(loaded: Any) -> None:
        grids.append(loaded.adapter.dims(loaded.model).grid)

    reports = []
    with err.status("running", spinner="dots"):
        for name in names:
            reports.append(
                api.infer(
                    model,
                    name,
                    [(question, list(image))],
                    dtype=dtype,
                    device=device,
                    seed=seed,
                    on_loaded=remember_grid,
                    max_new_tokens=max_new_tokens,
                )
            )
    first = reports[0]
    untrained = " (untrained: random weights)" if first.untrained else ""
    header = [f"{first.model}{untrained} · {question}", " + ".join(str(p) for p in image)]
    rows = [FigureRow(r.profile.name, r.trace.samples[0], g) for r, g in zip(reports, grids)]
    figure = render_figure(pictures, rows, header=header, cell=patch_px)
    write_png(out_file, figure)

    numbers = [infer_numbers(r.trace) for r in reports]
    if json_out:
        document = {
            "out": str(out_file),
            "size": list(figure.size),
            "question": question,
            "images": [str(p) for p in image],
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
        out.print(to_json(document), markup=False, highlight=False, soft_wrap=True)
        return
    if first.untrained:
        err.print(untrained_notice(first.model))
    for r, n in zip(reports, numbers):
        out.print(numbers_table(n, title=f"{r.model} · profile {r.profile.name}"))
    err.print(f"wrote {out_file} ({figure.width}x{figure.height} px)", markup=False)
