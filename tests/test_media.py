"""Image loading: every bad file is one InputError line naming it; good files of any mode load as RGB."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageFile
from pngs import png_header

from duet_cli.errors import InputError
from duet_cli.inputs import media
from duet_cli.inputs.media import MAX_PIXELS, load_image


def _assert_input_error(path: Path | str, *fragments: str) -> str:
    with pytest.raises(InputError) as err:
        load_image(path)
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nope.png", "not found")


def test_directory(tmp_path: Path) -> None:
    _assert_input_error(tmp_path, "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_input_error(path, "empty")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    _assert_input_error(path, "not a recognized image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _assert_input_error(path, "corrupt or truncated")


def test_truncated_image_refused_even_if_pil_flag_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _assert_input_error(path, "corrupt or truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


@pytest.mark.parametrize(
    "side",
    [
        9000,  # 81M pixels: above duet's limit, below PIL's own warning threshold
        10000,  # 100M: PIL would only warn
        20000,  # 400M: PIL raises DecompressionBombError itself
    ],
)
def test_decompression_bomb(tmp_path: Path, side: int) -> None:
    assert side * side > MAX_PIXELS
    path = png_header(tmp_path / f"bomb{side}.png", side, side)
    _assert_input_error(path, "too large")


def test_pil_bomb_warning_becomes_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1600 pixels now warns inside PIL
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(path)
    _assert_input_error(path, "too large")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(path)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        path.chmod(0)
    else:  # root ignores file modes: simulate the EACCES that open() would raise

        def refuse(p: Path):
            raise PermissionError(13, "Permission denied", str(p))

        monkeypatch.setattr(media, "_open_binary", refuse)
    try:
        _assert_input_error(path, "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize(
    ("mode", "color"),
    [
        ("RGB", (10, 20, 30)),
        ("L", 128),
        ("1", 1),
        ("P", 3),
        ("RGBA", (255, 0, 0, 255)),
        ("LA", (50, 255)),
        ("CMYK", (0, 255, 255, 0)),
        ("I;16", 65535),
        ("I", 300),
    ],
)
def test_good_images_load_as_rgb(tmp_path: Path, mode: str, color: object) -> None:
    fmt, ext = ("TIFF", "tif") if mode in ("CMYK", "I;16", "I") else ("PNG", "png")
    path = tmp_path / f"good-{mode.replace(';', '')}.{ext}"
    Image.new(mode, (17, 11), color).save(path, format=fmt)  # type: ignore[arg-type]
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (17, 11)
    image.getpixel((0, 0))  # fully decoded and usable after the file is closed


def test_jpeg_and_string_path(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (32, 24), (200, 100, 50)).save(path, format="JPEG")
    assert load_image(str(path)).size == (32, 24)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)
    palette = tmp_path / "palette.gif"
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    image.save(palette, transparency=0)
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.new("I;16", (4, 4), 32768).save(path)
    value = load_image(path).getpixel((0, 0))
    assert isinstance(value, tuple) and 120 <= value[0] <= 135


def test_bundled_examples_load() -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    for name in ("shapes.png", "grid.png"):
        image = load_image(root / name)
        assert image.size == (336, 336)
