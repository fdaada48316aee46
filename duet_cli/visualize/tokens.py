"""What each visual token of a sample stands for on the patch grid, and the panel titles with their counts.

Pure functions over a SampleTrace (no torch, no Pillow), so the drawing code and its tests share them.
Grid cells are 0-based raster indices `row * cols + col` into one image's patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from duet_cli.trace import DropPoint, ImageSelection, SampleTrace


@dataclass(frozen=True)
class VisualToken:
    """One visual token entering the LLM, located on its image's patch grid."""

    image: int  # which image of the sample (0-based, prompt order)
    kind: str  # "cls" (no patch), "dominant", "contextual" (stage 1 merged) or "patch" (no stage 1)
    target: int | None  # grid cell the token sits on; None for CLS
    members: tuple[int, ...] = ()  # grid cells merged into a contextual token (target excluded)
    group: int | None = None  # contextual token's index among its image's contextual tokens

    @property
    def cells(self) -> tuple[int, ...]:
        """Every grid cell this token stands for."""
        return (() if self.target is None else (self.target,)) + self.members


class Cell(Enum):
    """How one grid cell is drawn in a panel."""

    DISCARDED = "discarded"  # not (or no longer) represented by any visual token: dimmed
    PATCH = "patch"  # kept as is without stage 1: drawn plain
    DOMINANT = "dominant"  # a dominant token: highlighted
    TARGET = "target"  # a contextual token's target: group tint + marker
    MEMBER = "member"  # merged into a contextual token: group tint


@dataclass(frozen=True)
class CellState:
    kind: Cell
    group: int | None = None  # contextual group (TARGET / MEMBER)


def _cell(token: int, selection: ImageSelection) -> int | None:
    """Grid cell of an encoder token index (None for CLS), checked against the grid."""
    rows, cols = selection.grid
    if selection.has_cls and token == 0:
        return None
    cell = token - 1 if selection.has_cls else token
    if not 0 <= cell < rows * cols:
        raise ValueError(f"token index {token} is outside the {rows}x{cols} grid")
    return cell


def _stage1_tokens(index: int, selection: ImageSelection) -> list[VisualToken]:
    tokens = []
    for t in selection.dominant:
        cell = _cell(t, selection)
        tokens.append(VisualToken(index, "cls" if cell is None else "dominant", cell))
    for g, group in enumerate(selection.contextual):
        members = tuple(c for c in (_cell(m, selection) for m in group.members) if c is not None)
        tokens.append(VisualToken(index, "contextual", _cell(group.target, selection), members, g))
    return tokens


def _unreduced_tokens(index: int, per_image: int, grid: tuple[int, int]) -> list[VisualToken]:
    n_cells = grid[0] * grid[1]
    if per_image == n_cells:  # LLaVA's default strategy drops CLS
        return [VisualToken(index, "patch", c) for c in range(n_cells)]
    if per_image == n_cells + 1:  # "full" strategy: CLS first
        return [VisualToken(index, "cls", None)] + [VisualToken(index, "patch", c) for c in range(n_cells)]
    raise ValueError(f"{per_image} visual tokens per image do not fit a {grid[0]}x{grid[1]} grid")


def visual_tokens(sample: SampleTrace, n_images: int, grid: tuple[int, int]) -> list[VisualToken]:
    """The sample's visual tokens as they entered the LLM (stage-2 index order), each placed on its grid.

    With stage 1, per image in order: its dominant tokens (CLS first), then its contextual tokens.
    Without stage 1 (`sample.images == []`), each image contributes its grid's patches in raster order:
    the trace's grid of each image on dynamic-resolution models, else `unreduced / n_images` tokens on
    the caller's `grid` (e.g. ModelDims.grid).
    """
    if n_images < 1:
        raise ValueError("a sample with visual tokens has at least one image")
    if sample.images:
        if len(sample.images) != n_images:
            raise ValueError(
                f"the trace has stage-1 records for {len(sample.images)} image(s), the prompt {n_images}"
            )
        tokens = [t for i, sel in enumerate(sample.images) for t in _stage1_tokens(i, sel)]
    elif sample.grids:  # dynamic resolution: every image (or video slice) has its own grid
        if len(sample.grids) != n_images:
            raise ValueError(f"the trace has grids for {len(sample.grids)} image(s), the prompt {n_images}")
        tokens = [t for i, g in enumerate(sample.grids) for t in _unreduced_tokens(i, g[0] * g[1], g)]
    else:
        per_image, rest = divmod(sample.unreduced_visual_tokens, n_images)
        if rest:
            raise ValueError(
                f"{sample.unreduced_visual_tokens} visual tokens do not split over {n_images} images"
            )
        tokens = [t for i in range(n_images) for t in _unreduced_tokens(i, per_image, grid)]
    if len(tokens) != sample.visual_tokens_in:
        raise ValueError(f"mapped {len(tokens)} visual tokens but the trace says {sample.visual_tokens_in}")
    return tokens


def image_grids(sample: SampleTrace, n_images: int, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """Patch grid (rows, cols) of each image: stage 1's own record when it ran, else the trace's grid of
    each image (dynamic resolution), else the caller's grid."""
    if sample.images:
        return [sel.grid for sel in sample.images]
    return list(sample.grids) if sample.grids else [grid] * n_images


def cell_states(
    tokens: list[VisualToken], image: int, grid: tuple[int, int], alive: set[int] | None = None
) -> list[CellState]:
    """The state of every cell of one image's grid, given which tokens are alive (None: all of them)."""
    states = [CellState(Cell.DISCARDED)] * (grid[0] * grid[1])
    for i, tok in enumerate(tokens):
        if tok.image != image or tok.target is None or (alive is not None and i not in alive):
            continue
        if tok.kind == "contextual":
            for m in tok.members:
                states[m] = CellState(Cell.MEMBER, tok.group)
            states[tok.target] = CellState(Cell.TARGET, tok.group)
        else:
            states[tok.target] = CellState(Cell.DOMINANT if tok.kind == "dominant" else Cell.PATCH)
    return states


# ---------------------------------------------------------------------------------------------------------
# titles: every count a panel shows comes from here


def stage1_title(sample: SampleTrace) -> str:
    """Title of the first panel: what entered the LLM after stage 1 (or that stage 1 did not run)."""
    n0, unreduced = sample.visual_tokens_in, sample.unreduced_visual_tokens
    if not sample.images:
        return f"no stage 1: {n0} of {unreduced} visual tokens"
    dominant = sum(len(sel.dominant) for sel in sample.images)
    contextual = sum(len(sel.contextual) for sel in sample.images)
    method = getattr(sample.images[0], "method", "visionzip")  # the field arrived with the baselines
    if method == "pool":
        return f"stage 1 (pool): {contextual} pooled tokens ({n0} of {unreduced})"
    if method == "random":
        return f"stage 1 (random): {dominant} random patches ({n0} of {unreduced})"
    return f"stage 1: {dominant} dominant + {contextual} contextual ({n0} of {unreduced})"


def drop_title(sample: SampleTrace, drop: DropPoint) -> str:
    """Title of a stage-2 panel: the visual tokens still alive after that layer."""
    return f"after layer {drop.layer}: {len(drop.kept)} of {sample.visual_tokens_in} visual tokens"


def image_caption(
    tokens: list[VisualToken],
    image: int,
    n_images: int,
    alive: set[int] | None = None,
    media: str = "image",
) -> str:
    """Second title line of one image's (or video frame's) panel when there are several: its share."""
    mine = [i for i, t in enumerate(tokens) if t.image == image]
    label = f"{media} {image + 1} of {n_images}" if media == "image" else f"{media} {image + 1}"
    if alive is None:
        return f"{label}: {len(mine)} tokens"
    return f"{label}: {sum(1 for i in mine if i in alive)} of {len(mine)}"


def row_label(profile: str, sample: SampleTrace) -> list[str]:
    """The lines at the start of a profile's row: its name and the measured average (never the name's)."""
    return [profile, f"avg {sample.avg_visual_tokens:.2f}", "visual tokens"]


def frame_view(sample: SampleTrace) -> SampleTrace:
    """A video sample seen frame by frame: each frame is one 'image' of the returned sample.

    Stage-2 indices already run over the frames in order (each frame's tokens: stage 1's dominant, then
    contextual), so drops carry over unchanged. Only video-only samples (no images) have such a view.
    """
    if sample.images or any(span.kind != "frame" for span in sample.spans):
        raise ValueError("a frame view needs a sample whose visual tokens are video frames only")
    if not sample.spans:
        raise ValueError("the sample has no video frames")
    return SampleTrace(
        images=list(sample.frames),
        unreduced_visual_tokens=sample.unreduced_visual_tokens,
        visual_tokens_in=sample.visual_tokens_in,
        drops=list(sample.drops),
        ledger=list(sample.ledger),
        grids=list(sample.grids),
    )
