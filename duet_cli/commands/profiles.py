"""`duet profiles list | show | check`: inspect reduction profiles and their token arithmetic.

Nothing here loads a model or imports torch; model numbers come from the catalog's config-only dims.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from duet_cli.commands.options import JsonOpt
from duet_cli.console import out, print_json
from duet_cli.dims import ModelDims

if TYPE_CHECKING:
    from duet_cli.profiles import Profile

# LLaVA-1.5-7B: what `list` reports averages on, and `show`/`check` resolve against without --model
# (so this ModelOpt differs from the shared one in commands/options.py, whose default is the bundled model).
LLAVA_7B = ModelDims(
    family="llava", num_layers=32, vision_tokens=577, has_cls=True, unreduced_tokens=576, grid=(24, 24)
)
LLAVA_7B_LABEL = "llava-1.5-7b"

app = typer.Typer(
    help="List, show and check reduction profiles (what each stage does and its token arithmetic).",
    no_args_is_help=True,
)

ProfileArg = Annotated[str, typer.Argument(help="A shipped profile name (see `duet profiles list`).")]
FileArg = Annotated[str, typer.Argument(help="A profile YAML file (or a shipped profile name).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model to resolve the profile against (catalog name, hub id or folder; read from its config "
        "only). Default: LLaVA-1.5-7B's numbers.",
    ),
]


def _dims(model: str | None) -> tuple[ModelDims, str]:
    if model is None:
        return LLAVA_7B, LLAVA_7B_LABEL
    from duet_cli.catalog import dims_for

    return dims_for(model), model


def _stage_summaries(profile: Profile) -> tuple[str, str]:
    vision = profile.vision.summary() if profile.vision is not None else "-"
    llm = profile.llm.summary() if profile.llm is not None else "-"
    return vision, llm


def profile_row(profile: Profile, dims: ModelDims) -> dict[str, Any]:
    """One profile's line of `list`: its stages and, if it resolves on `dims`, its average tokens."""
    from duet_cli.errors import ProfileError
    from duet_cli.profiles import resolve_profile

    vision, llm = _stage_summaries(profile)
    try:
        resolved = resolve_profile(profile, dims)
    except ProfileError:
        avg = None
    else:
        avg = resolved.avg_visual_tokens(resolved.tokens_per_image(dims))
    return profile.to_dict() | {"vision_summary": vision, "llm_summary": llm, "avg_visual_tokens": avg}


def profiles_table(rows: list[dict[str, Any]], model_label: str) -> Table:
    """The `list` table (pure: rows in, Rich table out)."""
    table = Table(caption=f"Avg: visual tokens per decoder layer on {model_label}, one image")
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Vision stage", overflow="fold")
    table.add_column("LLM stage", overflow="fold")
    table.add_column("Avg", justify="right", no_wrap=True)
    for row in rows:
        avg = row["avg_visual_tokens"]
        table.add_row(
            escape(row["name"]),
            escape(row["vision_summary"]),
            escape(row["llm_summary"]),
            f"{avg:.2f}" if avg is not None else "n/a",
        )
    return table


def show_view(profile: Profile, info: dict[str, Any], model_label: str, dims: ModelDims) -> Group:
    """The `show` output (pure): header lines, a segment table, and the average written out."""
    vision, llm = _stage_summaries(profile)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("profile", escape(f"{profile.name}  (hash {info['hash']})"))
    if profile.description:
        head.add_row("", escape(profile.description))
    if profile.source is not None:
        head.add_row("source", escape(str(profile.source)))
    cls = " (CLS included)" if dims.has_cls else ""
    head.add_row(
        "model",
        escape(
            f"{model_label}: {dims.num_layers} decoder layers, {dims.vision_tokens} vision tokens{cls}, "
            f"{dims.unreduced_tokens} visual tokens unreduced"
        ),
    )
    n0 = info["tokens_per_image"]
    if profile.vision is not None:
        head.add_row("stage 1", escape(f"{vision} -> {n0} tokens per image"))
    else:
        head.add_row("stage 1", f"none ({n0} unreduced tokens per image)")
    if info["llm_layers"]:
        points = ", ".join(str(n) for n in info["llm_layers"])
        counts = ", ".join(str(n) for n in info["keep_counts"])
        head.add_row("stage 2", escape(f"{llm} -> after layers {points} keep {counts}"))
    else:
        head.add_row("stage 2", "none")
    segments = Table(title=f"N0 = {info['n0']} (one image)", title_justify="left")
    segments.add_column("Layers", justify="right")
    segments.add_column("Visual tokens", justify="right")
    segments.add_column("Layer count", justify="right")
    for first, last, n in info["segments"]:
        segments.add_row(f"{first}-{last}" if last > first else str(first), str(n), str(last - first + 1))
    kept = 100 * info["kept_fraction"]
    average = (
        f"[bold]average[/]  {escape(info['arithmetic'])} visual tokens per layer: "
        f"{kept:.1f}% of {info['unreduced_tokens']}"
    )
    return Group(head, segments, average)


@app.command("list")
def list_profiles_cmd(json_: JsonOpt = False) -> None:
    """List the shipped profiles with their stages and average tokens on LLaVA-1.5-7B."""
    from duet_cli.profiles import list_profiles

    rows = [profile_row(p, LLAVA_7B) for p in list_profiles()]
    if json_:
        print_json([row | {"model": LLAVA_7B_LABEL} for row in rows])
        return
    out.print(profiles_table(rows, LLAVA_7B_LABEL))


@app.command("show")
def show_cmd(name: ProfileArg, model: ModelOpt = None, json_: JsonOpt = False) -> None:
    """Show a profile resolved on a model: drop layers, keep counts and average visual tokens."""
    from duet_cli.profiles import describe, load_profile, resolve_profile

    dims, label = _dims(model)
    profile = load_profile(name)
    info = describe(resolve_profile(profile, dims), dims)
    if json_:
        print_json(profile.to_dict() | info | {"model": label})
        return
    out.print(show_view(profile, info, label, dims))


@app.command("check")
def check_cmd(file: FileArg, model: ModelOpt = None, json_: JsonOpt = False) -> None:
    """Validate a profile file without running anything (and, with --model, check it fits that model)."""
    from duet_cli.profiles import describe, load_profile, resolve_profile

    profile = load_profile(file)
    vision, llm = _stage_summaries(profile)
    result: dict[str, Any] = {"ok": True, "file": file, "name": profile.name, "hash": profile.hash}
    detail = f"{profile.name}, hash {profile.hash}; vision: {vision}; llm: {llm}"
    if model is not None:
        dims, label = _dims(model)
        info = describe(resolve_profile(profile, dims), dims)
        result |= {"model": label, "llm_layers": info["llm_layers"]}
        result["avg_visual_tokens"] = info["avg_visual_tokens"]
        detail += f"; on {label}: {info['arithmetic']} average visual tokens"
    if json_:
        print_json(result)
        return
    out.print(f"[green]ok:[/] {escape(file)} ({escape(detail)})", soft_wrap=True)
