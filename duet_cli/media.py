"""Image loading that never tracebacks: every bad file becomes one InputError line naming the file.

Images come back as fully decoded RGB (alpha composited on white, as transformers' `convert_rgb` does).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from duet_cli.errors import InputError

MAX_PIXELS = 8192 * 8192  # larger headers are refused before decoding (decompression-bomb guard)


def _open_binary(path: Path) -> BinaryIO:
    """The one place a file is opened (closed by the caller's `with`); tests patch it to simulate EACCES."""
    return open(path, "rb")


def _check_file(path: Path, name: str) -> None:
    try:
        if not path.exists():
            raise InputError(f"image not found: {name}")
        if path.is_dir():
            raise InputError(f"image path is a directory, not a file: {name}")
        if path.stat().st_size == 0:
            raise InputError(f"image file is empty (0 bytes): {name}")
    except PermissionError as exc:
        raise InputError(f"cannot read image {name}: permission denied") from exc
    except OSError as exc:
        raise InputError(f"cannot read image {name}: {exc.strerror or exc}") from exc


def _check_size(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"image {name} has an invalid size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"image {name} is too large: {width}x{height} = {width * height:,} pixels "
            f"(limit {MAX_PIXELS:,}; possible decompression bomb)"
        )


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image; alpha over white; 16/32-bit greyscale scaled to 8 bits rather than clipped."""
    if image.mode.startswith("I") or image.mode == "F":
        high = float(image.getextrema()[1])  # type: ignore[arg-type]
        scale = 255.0 / max(65535.0, high) if high > 255 else 1.0
        image = image.convert("F").point(lambda v: v * scale).convert("L")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open, fully decode and convert to RGB, or raise InputError with one line naming the file."""
    name = str(path)
    file = Path(path).expanduser()
    _check_file(file, name)
    previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_binary(file) as fp, Image.open(fp) as image:
                _check_size(image.size, name)
                image.load()
                upright: Image.Image = image
                # A broken EXIF block is no reason to refuse the pixels.
                with contextlib.suppress(Exception):
                    upright = ImageOps.exif_transpose(image) or image
                rgb = _to_rgb(upright)
                rgb.info["duet_path"] = name  # so a later refusal (e.g. by a processor) can name the file
                return rgb
    except InputError:
        raise
    except PermissionError as exc:
        raise InputError(f"cannot read image {name}: permission denied") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"not a recognized image file: {name}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"image {name} is too large (limit {MAX_PIXELS:,} pixels; possible decompression bomb)"
        ) from exc
    except Exception as exc:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"image {name} is corrupt or truncated: {detail}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
