"""Write the deterministic example images used by the README quickstart into `examples/`: shapes.png and
grid.png drawn here, scene.png a synth test scene (the kind of image the bundled synth-llava reads).

Run from the repository root:  python scripts/make_examples.py [--out examples]
Glyphs come from a built-in 5x7 bitmap font, so the PNGs are byte-identical on every Pillow version.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 336  # LLaVA-1.5 input resolution: the processor will not need to resize these
BACKGROUND = (245, 243, 235)

# 5x7 bitmap glyphs ('#' = ink), enough for the letter A and the digits 1-9.
GLYPHS = {
    "A": ["..#..", ".#.#.", "#...#", "#...#", "#####", "#...#", "#...#"],
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


def draw_glyph(draw: ImageDraw.ImageDraw, char: str, x: int, y: int, scale: int, fill: tuple) -> None:
    """Draw one bitmap glyph with its top-left corner at (x, y), each font pixel `scale` px wide."""
    for row, line in enumerate(GLYPHS[char]):
        for col, ink in enumerate(line):
            if ink == "#":
                x0, y0 = x + col * scale, y + row * scale
                draw.rectangle((x0, y0, x0 + scale - 1, y0 + scale - 1), fill=fill)


def shapes() -> Image.Image:
    """A red circle, a blue square, a green triangle and a small black letter A on a light background."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse((28, 28, 148, 148), fill=(220, 40, 40))  # red circle, top left
    draw.rectangle((196, 36, 300, 140), fill=(40, 80, 210))  # blue square, top right
    draw.polygon([(88, 190), (148, 300), (28, 300)], fill=(40, 160, 70))  # green triangle, bottom left
    draw_glyph(draw, "A", 230, 215, 7, (10, 10, 10))  # letter A (35x49 px), bottom right
    return image


def grid() -> Image.Image:
    """A 3x3 grid of coloured cells, each with a white digit 1-9 in reading order."""
    colors = [
        (214, 39, 40),
        (255, 127, 14),
        (188, 189, 34),
        (44, 160, 44),
        (23, 190, 207),
        (31, 119, 180),
        (148, 103, 189),
        (227, 119, 194),
        (127, 127, 127),
    ]
    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cell = SIZE // 3
    scale = 6  # glyph 30x42 px
    for i, color in enumerate(colors):
        row, col = divmod(i, 3)
        x0, y0 = col * cell, row * cell
        draw.rectangle((x0 + 2, y0 + 2, x0 + cell - 3, y0 + cell - 3), fill=color)
        draw_glyph(
            draw, str(i + 1), x0 + (cell - 5 * scale) // 2, y0 + (cell - 7 * scale) // 2, scale, (255,) * 3
        )
    return image


def scene() -> Image.Image:
    """Scene 1 of the synth test split (never trained on), what the bundled synth-llava reads."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from duet_cli.benchmarks.synth import scene_for
    from duet_cli.benchmarks.synth_scene import render

    return render(scene_for("test", 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "examples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in (("shapes.png", shapes()), ("grid.png", grid()), ("scene.png", scene())):
        path = args.out / name
        image.save(path, format="PNG", optimize=True)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
