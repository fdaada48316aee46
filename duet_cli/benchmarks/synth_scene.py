"""Scenes of the offline `synth` benchmarks: a seeded layout of coloured shapes (some carrying a glyph),
rendered pixel-exactly with integer arithmetic in numpy, so images are byte-identical everywhere. The
scale (object sizes, glyph scale, object count) is a `Geometry`: `SYNTH` (fine detail) or `SYNTH_LARGE`.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image

SIZE = 336  # LLaVA-1.5 input resolution
PATCH = 14  # CLIP ViT-L/14: a 24 x 24 grid of 576 patches
GRID = SIZE // PATCH

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 205, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 10),
    "black": (25, 25, 25),
}
BACKGROUNDS = ((245, 243, 235), (236, 239, 245), (238, 245, 236))  # light tints, none close to a colour
INK_ON = {"yellow": (20, 20, 20), "orange": (20, 20, 20)}  # glyph ink: black on light fills...
INK_DEFAULT = (250, 250, 250)  # ...white on every darker one

# 5 x 7 bitmap font ('#' = ink), drawn at a Geometry's glyph_scale (synth: 20 x 28 px, 4 px strokes).
FONT = {
    "A": ["..#..", ".#.#.", "#...#", "#...#", "#####", "#...#", "#...#"],
    "B": ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
    "C": [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
    "D": ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."],
    "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    "F": ["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
    "G": [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"],
    "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "I": [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "J": ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
    "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    "L": ["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
    "M": ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
    "N": ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"],
    "O": [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    "P": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
    "Q": [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"],
    "R": ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
    "S": [".####", "#....", "#....", ".###.", "....#", "....#", "####."],
    "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
    "U": ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    "V": ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
    "W": ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."],
    "X": ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
    "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
    "Z": ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"],
    "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    "3": ["####.", "....#", "....#", ".###.", "....#", "....#", "####."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    "6": [".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."],
}
LETTERS = tuple(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in "IO")  # I, O look like 1, 0
DIGITS = tuple("0123456789")
GLYPH_CARRIERS = ("circle", "square")  # a glyph is only drawn inside these
CARRIER_RATE = 0.35  # chance that an object after the first carries a glyph


@functools.cache
def glyph_mask(ch: str, scale: int) -> np.ndarray:
    """The glyph's ink as a boolean (7 * scale, 5 * scale) array: each font cell a scale x scale block."""
    bits = np.array([[c == "#" for c in line] for line in FONT[ch]])
    mask = np.repeat(np.repeat(bits, scale, 0), scale, 1)
    mask.flags.writeable = False  # shared by every caller (cached)
    return mask


@dataclass(frozen=True)
class Geometry:
    """The scale of a synth variant: object sizes and count, spacing, glyph scale, relation margin.

    Size classes are separated by gaps so "the small square" is never a judgement call; the first class
    is the crowded-scene fallback and must hold `min_carrier`, the smallest circle or square a glyph is
    drawn in (one whose inscribed circle holds the whole glyph box).
    """

    objects: tuple[int, int]  # objects per image, inclusive range (fewer only when crowded, never < 2)
    size_classes: tuple[tuple[str, int, int], ...]  # (name, min side, max side) in px, small to large
    size_weights: tuple[int, ...]  # how often each class is drawn
    glyph_scale: int  # px per font cell: the glyph is 5 x 7 cells, strokes one cell wide
    min_carrier: int  # smallest side (px) of a shape that carries a glyph
    gap: int = 8  # minimum free pixels between two objects' boxes
    border: int = 6  # minimum free pixels between an object and the image edge
    margin: int = 28  # relations: centres closer than this on the axis are never asked about

    def __post_init__(self) -> None:
        (_, lo, hi), *_ = self.size_classes
        if not lo <= self.min_carrier <= hi:
            raise ValueError(f"min_carrier {self.min_carrier} is not a {self.size_classes[0][0]} size")
        if math.hypot(self.glyph_w, self.glyph_h) > self.min_carrier:
            raise ValueError(
                f"a {self.glyph_w} x {self.glyph_h} glyph does not fit a {self.min_carrier} px circle"
            )
        if len(self.size_weights) != len(self.size_classes):
            raise ValueError("one weight per size class")
        if lo + self.gap < self.margin:  # else two apart objects might have no askable relation
            raise ValueError(f"margin {self.margin} exceeds the closest centres, {lo + self.gap} px apart")

    @property
    def glyph_w(self) -> int:
        return 5 * self.glyph_scale

    @property
    def glyph_h(self) -> int:
        return 7 * self.glyph_scale

    def size_class(self, size: int) -> str:
        return next(name for name, lo, hi in self.size_classes if lo <= size <= hi)


# Fine detail: small objects (2-3 patches wide) are the most frequent class; glyphs 20 x 28 px, 4 px strokes.
SYNTH = Geometry(
    objects=(2, 6),
    size_classes=(("small", 30, 44), ("medium", 54, 70), ("large", 84, 104)),
    size_weights=(4, 3, 3),
    glyph_scale=4,
    min_carrier=40,
)
# Legible to a small tower: every object at least 4 x 4 patches (56 px), glyphs at twice the scale (40 x 56
# px, 8 px strokes), 2-4 objects so they still fit and evidence stays local, relations at twice the margin.
SYNTH_LARGE = Geometry(
    objects=(2, 4),
    size_classes=(("small", 56, 70), ("medium", 80, 94), ("large", 104, 118)),
    size_weights=(5, 3, 2),
    glyph_scale=8,
    min_carrier=70,
    margin=56,
)

# `synth`'s values under their historical names (scripts read them)
SIZE_CLASSES = {name: (lo, hi) for name, lo, hi in SYNTH.size_classes}
SIZE_WEIGHTS = SYNTH.size_weights
GAP, BORDER = SYNTH.gap, SYNTH.border
GLYPH_SCALE = SYNTH.glyph_scale
GLYPH_W, GLYPH_H = SYNTH.glyph_w, SYNTH.glyph_h
MIN_CARRIER = SYNTH.min_carrier
_GLYPH_MASKS = {ch: glyph_mask(ch, GLYPH_SCALE) for ch in FONT}


@dataclass(frozen=True)
class Obj:
    """One shape: its bounding box is the square [x, x + size) x [y, y + size) in pixels."""

    shape: str
    color: str
    size: int
    x: int
    y: int
    glyph: str | None = None
    geometry: Geometry = field(default=SYNTH, repr=False, compare=False)  # the scale it was drawn at

    @property
    def cx(self) -> float:
        return self.x + self.size / 2

    @property
    def cy(self) -> float:
        return self.y + self.size / 2

    @property
    def size_class(self) -> str:
        return self.geometry.size_class(self.size)

    @property
    def glyph_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive, of the glyph centred in the object."""
        w, h = self.geometry.glyph_w, self.geometry.glyph_h
        gx, gy = self.x + (self.size - w) // 2, self.y + (self.size - h) // 2
        return gx, gy, gx + w, gy + h

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "geometry"}


@dataclass(frozen=True)
class Scene:
    background: tuple[int, int, int]
    objects: tuple[Obj, ...]
    geometry: Geometry = field(default=SYNTH, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"background": list(self.background), "objects": [o.to_dict() for o in self.objects]}


def box_patches(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    """CLIP patch numbers (1..576, raster order; 0 is CLS) overlapped by the end-exclusive pixel box."""
    cols = range(x0 // PATCH, (x1 - 1) // PATCH + 1)
    rows = range(y0 // PATCH, (y1 - 1) // PATCH + 1)
    return [r * GRID + c + 1 for r in rows for c in cols]


def object_patches(obj: Obj) -> list[int]:
    return box_patches(obj.x, obj.y, obj.x + obj.size, obj.y + obj.size)


def _free(x: int, y: int, size: int, placed: list[Obj], gap: int) -> bool:
    return all(
        x + size + gap <= o.x or o.x + o.size + gap <= x or y + size + gap <= o.y or o.y + o.size + gap <= y
        for o in placed
    )


def _place(
    rng: random.Random, size: int, placed: list[Obj], geo: Geometry, tries: int = 60
) -> tuple[int, int] | None:
    hi = SIZE - geo.border - size
    for _ in range(tries):
        x, y = rng.randint(geo.border, hi), rng.randint(geo.border, hi)
        if _free(x, y, size, placed, geo.gap):
            return x, y
    return None


def generate_scene(rng: random.Random, geo: Geometry = SYNTH) -> Scene:
    """`geo.objects` objects (synth: 2-6) in distinct colours, no overlaps; the first always has a glyph.

    Glyph characters are distinct within a scene, so every referring expression used by the questions
    (a colour, which is unique; a shape or size+shape when unique) picks out one object.
    """
    background = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    n = rng.randint(*geo.objects)
    colors = rng.sample(list(COLORS), n)
    used_glyphs: set[str] = set()
    placed: list[Obj] = []
    classes = {name: (lo, hi) for name, lo, hi in geo.size_classes}
    for i, color in enumerate(colors):
        carrier = i == 0 or rng.random() < CARRIER_RATE
        shape = rng.choice(GLYPH_CARRIERS) if carrier else rng.choice(SHAPES)
        size_class = rng.choices(list(classes), weights=geo.size_weights)[0]
        lo, hi = classes[size_class]
        size = rng.randint(max(lo, geo.min_carrier) if carrier else lo, hi)
        spot = _place(rng, size, placed, geo)
        if spot is None:  # crowded: fall back to the smallest size that still fits the glyph
            size = geo.min_carrier if carrier else geo.size_classes[0][1]
            spot = _place(rng, size, placed, geo)
        if spot is None:
            if len(placed) >= 2:
                break
            raise AssertionError("cannot place two objects on an empty canvas")  # unreachable at 336 px
        glyph = None
        if carrier:
            pool = LETTERS if rng.random() < 0.5 else DIGITS
            glyph = rng.choice([c for c in pool if c not in used_glyphs])
            used_glyphs.add(glyph)
        placed.append(Obj(shape, color, size, spot[0], spot[1], glyph, geo))
    return Scene(background, tuple(placed), geo)


def _mask(obj: Obj) -> np.ndarray:
    """Boolean mask over the object's box, testing pixel centres in doubled integer coordinates."""
    s = obj.size
    d = 2 * np.arange(s) + 1 - s  # doubled offset of each pixel centre from the box centre: -s+1..s-1
    dx, dy = d[None, :], d[:, None]
    if obj.shape == "square":
        return np.ones((s, s), dtype=bool)
    if obj.shape == "circle":
        return dx * dx + dy * dy <= s * s
    if obj.shape == "triangle":  # apex at the top middle, base along the bottom edge
        return 2 * np.abs(dx) <= dy + s
    if obj.shape == "cross":  # a plus sign with arms one third of the box wide
        return (3 * np.abs(dx) <= s) | (3 * np.abs(dy) <= s)
    raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene) -> Image.Image:
    """The scene as a 336 x 336 RGB image (integer rasterisation: identical bytes on every machine)."""
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    canvas[:] = scene.background
    for obj in scene.objects:
        region = canvas[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
        region[_mask(obj)] = COLORS[obj.color]
        if obj.glyph is not None:
            ink = INK_ON.get(obj.color, INK_DEFAULT)
            gx, gy, gx1, gy1 = obj.glyph_box
            canvas[gy:gy1, gx:gx1][glyph_mask(obj.glyph, obj.geometry.glyph_scale)] = ink
    return Image.fromarray(canvas)
