"""Scenes of the offline `synth` benchmark: a seeded layout of coloured shapes (some carrying a glyph),
rendered pixel-exactly with integer arithmetic in numpy, so images are byte-identical everywhere.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
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

# Size classes are separated by gaps so "the small square" is never a judgement call.
SIZE_CLASSES = {"small": (30, 44), "medium": (54, 70), "large": (84, 104)}
SIZE_WEIGHTS = (4, 3, 3)  # small objects are the point of the benchmark: the most frequent class
GAP = 8  # minimum free pixels between two objects' boxes
BORDER = 6  # minimum free pixels between an object and the image edge

# 5 x 7 bitmap font ('#' = ink), drawn at GLYPH_SCALE: 20 x 28 px, strokes 4 px wide.
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
GLYPH_SCALE = 4
GLYPH_W, GLYPH_H = 5 * GLYPH_SCALE, 7 * GLYPH_SCALE
LETTERS = tuple(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in "IO")  # I, O look like 1, 0
DIGITS = tuple("0123456789")
_GLYPH_MASKS = {
    ch: np.repeat(
        np.repeat(np.array([[c == "#" for c in line] for line in rows]), GLYPH_SCALE, 0), GLYPH_SCALE, 1
    )
    for ch, rows in FONT.items()
}
GLYPH_CARRIERS = ("circle", "square")  # a 20 x 28 glyph fits inside these from 40 px up
MIN_CARRIER = 40


@dataclass(frozen=True)
class Obj:
    """One shape: its bounding box is the square [x, x + size) x [y, y + size) in pixels."""

    shape: str
    color: str
    size: int
    x: int
    y: int
    glyph: str | None = None

    @property
    def cx(self) -> float:
        return self.x + self.size / 2

    @property
    def cy(self) -> float:
        return self.y + self.size / 2

    @property
    def size_class(self) -> str:
        return next(name for name, (lo, hi) in SIZE_CLASSES.items() if lo <= self.size <= hi)

    @property
    def glyph_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive, of the glyph centred in the object."""
        gx, gy = self.x + (self.size - GLYPH_W) // 2, self.y + (self.size - GLYPH_H) // 2
        return gx, gy, gx + GLYPH_W, gy + GLYPH_H


@dataclass(frozen=True)
class Scene:
    background: tuple[int, int, int]
    objects: tuple[Obj, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"background": list(self.background), "objects": [asdict(o) for o in self.objects]}


def box_patches(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    """CLIP patch numbers (1..576, raster order; 0 is CLS) overlapped by the end-exclusive pixel box."""
    cols = range(x0 // PATCH, (x1 - 1) // PATCH + 1)
    rows = range(y0 // PATCH, (y1 - 1) // PATCH + 1)
    return [r * GRID + c + 1 for r in rows for c in cols]


def object_patches(obj: Obj) -> list[int]:
    return box_patches(obj.x, obj.y, obj.x + obj.size, obj.y + obj.size)


def _free(x: int, y: int, size: int, placed: list[Obj]) -> bool:
    return all(
        x + size + GAP <= o.x or o.x + o.size + GAP <= x or y + size + GAP <= o.y or o.y + o.size + GAP <= y
        for o in placed
    )


def _place(rng: random.Random, size: int, placed: list[Obj], tries: int = 60) -> tuple[int, int] | None:
    hi = SIZE - BORDER - size
    for _ in range(tries):
        x, y = rng.randint(BORDER, hi), rng.randint(BORDER, hi)
        if _free(x, y, size, placed):
            return x, y
    return None


def generate_scene(rng: random.Random) -> Scene:
    """2-6 objects in distinct colours, no overlaps; the first drawn always carries a glyph.

    Glyph characters are distinct within a scene, so every referring expression used by the questions
    (a colour, which is unique; a shape or size+shape when unique) picks out one object.
    """
    background = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    n = rng.randint(2, 6)
    colors = rng.sample(list(COLORS), n)
    used_glyphs: set[str] = set()
    placed: list[Obj] = []
    for i, color in enumerate(colors):
        carrier = i == 0 or rng.random() < 0.35
        shape = rng.choice(GLYPH_CARRIERS) if carrier else rng.choice(SHAPES)
        size_class = rng.choices(list(SIZE_CLASSES), weights=SIZE_WEIGHTS)[0]
        lo, hi = SIZE_CLASSES[size_class]
        size = rng.randint(max(lo, MIN_CARRIER) if carrier else lo, hi)
        spot = _place(rng, size, placed)
        if spot is None:  # crowded: fall back to the smallest size that still fits the glyph
            size = MIN_CARRIER if carrier else SIZE_CLASSES["small"][0]
            spot = _place(rng, size, placed)
        if spot is None:
            if len(placed) >= 2:
                break
            raise AssertionError("cannot place two objects on an empty canvas")  # unreachable at 336 px
        glyph = None
        if carrier:
            pool = LETTERS if rng.random() < 0.5 else DIGITS
            glyph = rng.choice([c for c in pool if c not in used_glyphs])
            used_glyphs.add(glyph)
        placed.append(Obj(shape, color, size, spot[0], spot[1], glyph))
    return Scene(background, tuple(placed))


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
            gx, gy, _, _ = obj.glyph_box
            canvas[gy : gy + GLYPH_H, gx : gx + GLYPH_W][_GLYPH_MASKS[obj.glyph]] = ink
    return Image.fromarray(canvas)
