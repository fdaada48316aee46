"""Image loading that never tracebacks: every bad file becomes one InputError line naming the file.

Images come back as fully decoded RGB (alpha composited on white, as transformers' `convert_rgb` does).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from duet_cli.errors import InputError
from duet_cli.inputs import userfiles
from duet_cli.inputs.bounded import clip, show

MAX_PIXELS = 8192 * 8192  # larger headers are refused before decoding (decompression-bomb guard)
# Processors resize first: CLIP scales the short side to 336, so a 263-byte 30000x2 PNG would become a
# 336x5,040,000 float tensor (5 GB). 200:1 is Qwen2.5-VL's own limit (its smart_resize raises past it),
# and on CLIP it caps the resized image at 336 x 67,200 = 22.6 M pixels, a third of MAX_PIXELS
# (measured: +150 MB, 0.2 s); the widest real panoramas are nearer 20:1.
MAX_ASPECT = 200


def _open_binary(path: Path) -> BinaryIO:
    """The one place a file is read: whole and bounded (a FIFO or device refused, never blocked on),
    closed by the caller's `with`; tests patch it to simulate EACCES."""
    return io.BytesIO(userfiles.read_bytes(path, "image", userfiles.IMAGE_BYTES))


def _check_file(path: Path, name: str) -> None:
    if "\0" in name:  # os.stat would raise ValueError
        raise InputError(f"image path {show(name)} contains a NUL character")
    try:
        if path.is_dir():
            raise InputError(f"image path is a directory, not a file: {name}")
    except OSError as exc:
        raise InputError(f"cannot read image {name}: {exc.strerror or exc}") from exc
    if userfiles.check_regular(path, "image", userfiles.IMAGE_BYTES) == 0:
        raise InputError(f"image file is empty (0 bytes): {name}")


def size_problem(size: tuple[int, int]) -> str | None:
    """Why an image of this (width, height) is refused before it is decoded ('is too large: ...'), or None."""
    width, height = size
    if width <= 0 or height <= 0:
        return f"has an invalid size {width}x{height}"
    if width * height > MAX_PIXELS:
        return (
            f"is too large: {width}x{height} = {width * height:,} pixels "
            f"(limit {MAX_PIXELS:,}; possible decompression bomb)"
        )
    long, short = max(width, height), min(width, height)
    if long > MAX_ASPECT * short:
        return (
            f"is {width}x{height}, an aspect ratio of {long / short:,.0f}:1 "
            f"(limit {MAX_ASPECT}:1: resized for the model it would become a huge image)"
        )
    return None


def _check_size(size: tuple[int, int], name: str) -> None:
    problem = size_problem(size)
    if problem is not None:
        raise InputError(f"image {name} {problem}")


def check_image(image: Image.Image, name: str | None = None) -> None:
    """Refuse an image (already open, e.g. from a dataset or an API caller) that `load_image` would
    refuse for its size or aspect ratio; `name` defaults to the file it was loaded from."""
    _check_size(image.size, clip(name or str(image.info.get("duet_path") or "in memory"), 200))


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
