"""Pillow drawing of kept-token overlays: one panel per stage and image, one row per profile, a legend.

Pure functions from images and SampleTraces to a PIL image (no torch). The colours are module constants
so that tests can compute expected pixels independently.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from duet_cli.trace import SampleTrace
from duet_cli.visualize.tokens import (
    Cell,
    CellState,
    VisualToken,
    cell_states,
    drop_title,
    frame_view,
    image_caption,
    image_grids,
    row_label,
    stage1_title,
    visual_tokens,
)

CELL = 21  # pixels per patch: 24 x 21 = 504 px panels
MIN_PANEL = 336  # no panel side is smaller than this
VIDEO_CELL = 14  # video frames: 16 x 14 = 224 px panels, so a strip of 8 frames stays readable
VIDEO_MIN_PANEL = 224

DIM = 0.3  # discarded / dropped cells: every channel multiplied by this
DOMINANT_COLOR = (255, 221, 0)  # yellow
DOMINANT_TINT = 0.3  # blend weight of the colour inside a dominant cell
DOMINANT_OUTLINE = 2  # px, drawn inside the cell
GROUP_TINT = 0.55  # blend weight of a group's colour over its target and members
MARKER_FILL = (255, 255, 255)  # the dot on a contextual token's target
MARKER_RING = (0, 0, 0)
GRID_SHIFT = 64  # grid lines: each channel moved this far towards the other end, visible on any colour
# one colour per contextual token, cycled; none is close to the dominant yellow
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 25, 75)),
    ("green", (60, 180, 75)),
    ("blue", (0, 130, 200)),
    ("orange", (245, 130, 48)),
    ("purple", (145, 30, 180)),
    ("cyan", (70, 240, 240)),
    ("magenta", (240, 50, 230)),
    ("brown", (170, 110, 40)),
    ("pink", (250, 190, 212)),
    ("teal", (0, 128, 128)),
)

BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (90, 90, 90)
PAD = 12  # figure margin
GAP_STAGE = 18  # between the panels of two stages
GAP_IMAGE = 6  # between the images of one stage
GAP_ROW = 22
LABEL_W = 170  # profile-name column
FONT_SIZE = 20
SMALL_SIZE = 17
LINE_H = 26
DIM_LUT = [round(v * DIM) for v in range(256)] * 3
GRID_LUT = [v + GRID_SHIFT if v < 128 else v - GRID_SHIFT for v in range(256)] * 3


@cache
def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` (needs FreeType; falls back to the small bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, ValueError):  # Pillow built without FreeType
        return ImageFont.load_default()


def group_color(group: int) -> tuple[int, int, int]:
    return PALETTE[group % len(PALETTE)][1]


def cell_px(grid: tuple[int, int], cell: int = CELL, min_panel: int = MIN_PANEL) -> int:
    """Pixels per patch: `cell`, raised so that the shorter panel side is at least `min_panel`."""
    return max(cell, math.ceil(min_panel / min(grid)))


def image_view(image: Image.Image, grid: tuple[int, int], cell: int) -> Image.Image:
    """The part of the image the encoder saw, at `cell` px per patch.

    CLIP's processor resizes the short side and centre-crops a square; in general the centre crop with
    the grid's aspect ratio, resized to (cols * cell, rows * cell).
    """
    rows, cols = grid
    rgb = image.convert("RGB")
    w, h = rgb.size
    if w * rows > h * cols:  # too wide: crop the sides
        cw, ch = h * cols / rows, float(h)
    else:
        cw, ch = float(w), w * rows / cols
    left, top = (w - cw) / 2, (h - ch) / 2
    box = (round(left), round(top), round(left + cw), round(top + ch))
    return rgb.resize((cols * cell, rows * cell), Image.Resampling.BICUBIC, box=box)


def _grid_lines(img: Image.Image, grid: tuple[int, int], cell: int) -> Image.Image:
    rows, cols = grid
    w, h = img.size
    mask = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(mask)
    for c in range(cols + 1):
        x = min(c * cell, w - 1)
        draw.line([(x, 0), (x, h - 1)], fill=255)
    for r in range(rows + 1):
        y = min(r * cell, h - 1)
        draw.line([(0, y), (w - 1, y)], fill=255)
    return Image.composite(img.point(GRID_LUT), img, mask)


def draw_cells(
    view: Image.Image, grid: tuple[int, int], cell: int, states: Sequence[CellState]
) -> Image.Image:
    """The view with every cell drawn in its state, the patch grid, outlines and target markers on top."""
    rows, cols = grid
    if len(states) != rows * cols:
        raise ValueError(f"{len(states)} cell states for a {rows}x{cols} grid")
    img = view.convert("RGB")  # a copy
    boxes = [
        ((i % cols) * cell, (i // cols) * cell, (i % cols + 1) * cell, (i // cols + 1) * cell)
        for i in range(len(states))
    ]
    for box, st in zip(boxes, states):
        if st.kind is Cell.PATCH:
            continue
        region = img.crop(box)
        if st.kind is Cell.DISCARDED:
            region = region.point(DIM_LUT)
        elif st.kind is Cell.DOMINANT:
            region = Image.blend(region, Image.new("RGB", region.size, DOMINANT_COLOR), DOMINANT_TINT)
        else:
            color = group_color(st.group or 0)
            region = Image.blend(region, Image.new("RGB", region.size, color), GROUP_TINT)
        img.paste(region, box[:2])
    img = _grid_lines(img, grid, cell)
    draw = ImageDraw.Draw(img)
    radius = max(2, cell // 4)
    for box, st in zip(boxes, states):
        x0, y0, x1, y1 = box
        if st.kind is Cell.DOMINANT:
            draw.rectangle((x0 + 1, y0 + 1, x1 - 2, y1 - 2), outline=DOMINANT_COLOR, width=DOMINANT_OUTLINE)
        elif st.kind is Cell.TARGET:
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            draw.ellipse(
                (cx - radius, cy - radius, cx + radius, cy + radius), fill=MARKER_FILL, outline=MARKER_RING
            )
    return img


def _fit_font(text: str, width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for size in (FONT_SIZE, 18, 16, 14, 12):
        f = font(size)
        if f.getlength(text) <= width:
            return f
    return font(12)


# ---------------------------------------------------------------------------------------------------------
# one profile row


@dataclass
class FigureRow:
    """One profile's row: its name, the sample it produced, and the grid to use when stage 1 did not run."""

    profile: str
    sample: SampleTrace
    grid: tuple[int, int] = (24, 24)


@dataclass
class Used:
    """What the panels drew, so that the legend names exactly those colours."""

    kinds: set[Cell] = field(default_factory=set)
    colors: set[int] = field(default_factory=set)  # palette indices of contextual groups
    cls: bool = False  # a CLS token was kept by stage 1 (it has no patch to draw)

    def add(self, states: Sequence[CellState]) -> None:
        for s in states:
            self.kinds.add(s.kind)
            if s.group is not None:
                self.colors.add(s.group % len(PALETTE))


@dataclass
class StagePanels:
    """One stage of one profile: its title, and per image a caption, the cell states and the drawn panel."""

    title: str
    captions: list[str]  # per image; shown only when the prompt has several images
    states: list[list[CellState]]
    panels: list[Image.Image]


def stage_panels(
    images: Sequence[Image.Image],
    row: FigureRow,
    cell: int = CELL,
    *,
    media: str = "image",
    min_panel: int = MIN_PANEL,
) -> list[StagePanels]:
    """The panels of one profile: stage 1 (or its absence), then one per stage-2 drop point."""
    n = len(images)
    tokens: list[VisualToken] = visual_tokens(row.sample, n, row.grid)
    grids = image_grids(row.sample, n, row.grid)
    cells = [cell_px(g, cell, min_panel) for g in grids]
    views = [image_view(im, g, c) for im, g, c in zip(images, grids, cells)]
    stages: list[tuple[str, set[int] | None]] = [(stage1_title(row.sample), None)]
    stages += [(drop_title(row.sample, d), set(d.kept)) for d in row.sample.drops]
    out = []
    for title, alive in stages:
        states = [cell_states(tokens, i, g, alive) for i, g in enumerate(grids)]
        out.append(
            StagePanels(
                title=title,
                captions=[image_caption(tokens, i, n, alive, media) for i in range(n)],
                states=states,
                panels=[draw_cells(v, g, c, st) for v, g, c, st in zip(views, grids, cells, states)],
            )
        )
    return out


def title_lines(text: str, width: int) -> list[str]:
    """A panel title as it is drawn: one line when it fits at 18 px or more, else split after the colon."""
    if font(18).getlength(text) <= width or ": " not in text:
        return [text]
    head, tail = text.split(": ", 1)
    return [f"{head}:", tail]


def _block(stage: StagePanels, title_h: int) -> Image.Image:
    """A stage's panels side by side (one per image) under its title."""
    n = len(stage.panels)
    width = sum(p.width for p in stage.panels) + GAP_IMAGE * (n - 1)
    block = Image.new("RGB", (width, title_h + max(p.height for p in stage.panels)), BACKGROUND)
    draw = ImageDraw.Draw(block)
    lines = title_lines(stage.title, width)
    for k, line in enumerate(lines):
        draw.text((0, 2 + k * LINE_H), line, fill=INK, font=_fit_font(line, width))
    x = 0
    for caption, p in zip(stage.captions, stage.panels):
        if n > 1:
            draw.text((x, 2 + len(lines) * LINE_H), caption, fill=MUTED, font=_fit_font(caption, p.width))
        block.paste(p, (x, title_h))
        x += p.width + GAP_IMAGE
    return block


def _row_image(images: Sequence[Image.Image], row: FigureRow, cell: int, used: Used) -> Image.Image:
    stages = stage_panels(images, row, cell)
    for stage in stages:
        for st in stage.states:
            used.add(st)
    if row.sample.images and any(sel.has_cls and 0 in sel.dominant for sel in row.sample.images):
        used.cls = True
    n_title = max(len(title_lines(s.title, sum(p.width for p in s.panels))) for s in stages)
    title_h = LINE_H * (n_title + (1 if len(images) > 1 else 0)) + 6
    blocks = [_block(stage, title_h) for stage in stages]
    width = LABEL_W + sum(b.width for b in blocks) + GAP_STAGE * (len(blocks) - 1)
    out = Image.new("RGB", (width, max(b.height for b in blocks)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(row_label(row.profile, row.sample)):
        f = _fit_font(line, LABEL_W - 10) if k == 0 else font(SMALL_SIZE)
        draw.text((0, title_h + k * LINE_H), line, fill=INK if k == 0 else MUTED, font=f)
    x = LABEL_W
    for b in blocks:
        out.paste(b, (x, 0))
        x += b.width + GAP_STAGE
    return out


# ---------------------------------------------------------------------------------------------------------
# legend


def _swatch(states: Sequence[CellState], size: int = 24) -> Image.Image:
    """A one-cell sample of a state, drawn by the same code as the panels over mid-grey."""
    return draw_cells(Image.new("RGB", (size, size), (128, 128, 128)), (1, 1), size, states)


def legend_entries(used: Used) -> list[tuple[Image.Image | None, str]]:
    """(swatch, label) for every colour the panels used, in a fixed order; a None swatch is a heading."""
    entries: list[tuple[Image.Image | None, str]] = []
    kinds = used.kinds
    if Cell.DOMINANT in kinds:
        entries.append((_swatch([CellState(Cell.DOMINANT)]), "dominant token, kept as is (yellow)"))
    if Cell.PATCH in kinds:
        entries.append((_swatch([CellState(Cell.PATCH)]), "patch kept as is, no stage 1 (unchanged)"))
    if Cell.DISCARDED in kinds:
        entries.append(
            (_swatch([CellState(Cell.DISCARDED)]), "discarded by stage 1 or dropped by stage 2 (dimmed)")
        )
    groups = sorted(used.colors)
    if groups:
        entries.append(
            (_swatch([CellState(Cell.TARGET, groups[0])]), "contextual token: white dot on its target")
        )
        entries.append((None, "merged members, one colour per contextual token (cycled):"))
        entries += [(_swatch([CellState(Cell.MEMBER, g)]), PALETTE[g][0]) for g in groups]
    if used.cls:
        entries.append((None, "CLS counts as a dominant token but has no patch"))
    return entries


def _legend_image(used: Used, width: int) -> Image.Image:
    f = font(SMALL_SIZE)
    entries = legend_entries(used)
    placed: list[tuple[int, int, Image.Image | None, str]] = []
    x = y = 0
    for swatch, label in entries:
        w = (0 if swatch is None else swatch.width + 6) + int(f.getlength(label)) + 20
        if x and x + w > width:
            x, y = 0, y + 30
        placed.append((x, y, swatch, label))
        x += w
    img = Image.new("RGB", (width, y + 30), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for x, y, swatch, label in placed:
        if swatch is not None:
            img.paste(swatch, (x, y))
            x += swatch.width + 6
        draw.text((x, y + 3), label, fill=INK if swatch is not None else MUTED, font=f)
    return img


# ---------------------------------------------------------------------------------------------------------
# the figure


def render_figure(
    images: Sequence[Image.Image],
    rows: Sequence[FigureRow],
    *,
    header: Sequence[str] = (),
    cell: int = CELL,
) -> Image.Image:
    """The whole figure: header lines, one row of panels per profile (stacked), and the legend."""
    if not images:
        raise ValueError("nothing to draw: no images")
    if not rows:
        raise ValueError("nothing to draw: no profiles")
    used = Used()
    return _assemble([_row_image(images, r, cell, used) for r in rows], used, header)


def header_line(text: str) -> str:
    """One drawn header line: a multi-line text (e.g. a question with LLaVA's answer-format suffix on its
    own line) would otherwise be drawn over the line below it."""
    return " ".join(text.split())


def _assemble(row_imgs: Sequence[Image.Image], used: Used, header: Sequence[str]) -> Image.Image:
    """Header lines, the profile rows stacked, and the legend of every colour the rows used."""
    width = max(max(r.width for r in row_imgs), 720)
    legend = _legend_image(used, width)
    header = [header_line(text) for text in header]
    head_h = LINE_H * len(header) + (8 if header else 0)
    height = head_h + sum(r.height for r in row_imgs) + GAP_ROW * len(row_imgs) + legend.height
    fig = Image.new("RGB", (width + 2 * PAD, height + 2 * PAD), BACKGROUND)
    draw = ImageDraw.Draw(fig)
    for k, line in enumerate(header):
        draw.text((PAD, PAD + k * LINE_H), line, fill=INK, font=_fit_font(line, width))
    y = PAD + head_h
    for r in row_imgs:
        fig.paste(r, (PAD, y))
        y += r.height + GAP_ROW
    fig.paste(legend, (PAD, y))
    return fig


# ---------------------------------------------------------------------------------------------------------
# video: a strip of frames per stage


def _video_row_image(frames: Sequence[Image.Image], row: FigureRow, cell: int, used: Used) -> Image.Image:
    """One profile on a clip: a strip of the frames per stage (stage 1, then each drop), stacked."""
    view = FigureRow(row.profile, frame_view(row.sample), row.grid)
    stages = stage_panels(frames, view, cell, media="frame", min_panel=VIDEO_MIN_PANEL)
    for stage in stages:
        for st in stage.states:
            used.add(st)
    if any(sel.has_cls and 0 in sel.dominant for sel in view.sample.images):
        used.cls = True
    blocks = []
    for stage in stages:
        width = sum(p.width for p in stage.panels)
        title_h = LINE_H * (len(title_lines(stage.title, width)) + (1 if len(frames) > 1 else 0)) + 6
        blocks.append(_block(stage, title_h))
    width = LABEL_W + max(b.width for b in blocks)
    height = sum(b.height for b in blocks) + GAP_STAGE * (len(blocks) - 1)
    out = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(row_label(row.profile, row.sample)):
        f = _fit_font(line, LABEL_W - 10) if k == 0 else font(SMALL_SIZE)
        draw.text((0, LINE_H * 2 + k * LINE_H), line, fill=INK if k == 0 else MUTED, font=f)
    y = 0
    for b in blocks:
        out.paste(b, (LABEL_W, y))
        y += b.height + GAP_STAGE
    return out


def render_video_figure(
    frames: Sequence[Image.Image],
    rows: Sequence[FigureRow],
    *,
    header: Sequence[str] = (),
    cell: int = VIDEO_CELL,
) -> Image.Image:
    """A clip's figure: header lines, per profile a strip of frames for each stage (stacked), the legend.

    Each row's sample must be video-only (its `frames` and frame `spans` filled); the frames are drawn
    in clip order with the patches each stage kept in that frame, and every panel says its share.
    """
    if not frames:
        raise ValueError("nothing to draw: no frames")
    if not rows:
        raise ValueError("nothing to draw: no profiles")
    used = Used()
    return _assemble([_video_row_image(frames, r, cell, used) for r in rows], used, header)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], img: Image.Image) -> None:
    """Save as PNG atomically (a temporary file and a rename: never a half-written image)."""
    from duet_cli.reports.jsonio import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(img))
