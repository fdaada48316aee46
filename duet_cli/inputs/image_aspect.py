"""How a LLaVA-family image becomes the square its tower sees: `pad` or `crop`.

- `crop`: the image processor as shipped (CLIP: resize the short side, centre-crop a square), what the
  llava-hf processors do;
- `pad`: LLaVA-1.5's own `image_aspect_ratio: pad`: the image centred on a square filled with the
  image processor's mean colour (each channel `int(mean * 255)`, as LLaVA computes it), then the
  processor (a square: nothing is cropped). LLaVA-1.5 was trained and evaluated this way, and so were
  the published VisionZip, PyramidDrop and DUET tables.

Qwen2.5-VL keeps every image's own aspect ratio (dynamic resolution): its aspect is `native`, and
`--image-aspect` does not apply to it. Video frames go through the video processor unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from duet_cli.errors import UsageError

ASPECTS = ("pad", "crop")
NATIVE = "native"


def check_aspect(option: str) -> None:
    """Refuse an --image-aspect value other than pad or crop (one line)."""
    if option not in ASPECTS:
        raise UsageError(f"--image-aspect {option!r}: choose pad or crop")


def resolve_aspect(adapter: Any, card: Any, option: str | None) -> str:
    """`--image-aspect` if given, else the catalog card's `image_aspect`, else `crop` (the processor)."""
    if adapter.family == "qwen2_5_vl":
        if option is not None:
            raise UsageError(
                f"--image-aspect {option}: Qwen2.5-VL keeps each image's aspect ratio (dynamic resolution); "
                "the option applies to LLaVA-family models"
            )
        return NATIVE
    if option is not None:
        check_aspect(option)
        return option
    return getattr(card, "image_aspect", None) or "crop"


def declared_aspect(model: str, option: str | None) -> str | None:
    """The aspect known before the model loads: the option, else a catalog card's (None: not declared,
    the processor's crop or a family without the choice)."""
    if option is not None:
        return option
    from duet_cli.catalog import list_cards

    card = next((c for c in list_cards() if c.name == model.strip()), None)
    return card.image_aspect if card is not None else None


def fill_colour(image_processor: Any) -> tuple[int, int, int]:
    """The pad colour: the processor's per-channel mean in 0-255, truncated as LLaVA does."""
    mean = list(getattr(image_processor, "image_mean", None) or [0.5, 0.5, 0.5])
    if len(mean) == 1:
        mean *= 3
    r, g, b = (int(float(m) * 255) for m in mean[:3])
    return r, g, b


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """`image` (as RGB) centred on a square of side max(w, h) filled with `fill`."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    if w == h:
        return rgb
    side = max(w, h)
    square = Image.new("RGB", (side, side), fill)
    square.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return square


def prepare_images(loaded: Any, images: Sequence[Image.Image]) -> list[Image.Image]:
    """The images as the model's processor should get them under the model's aspect setting."""
    if getattr(loaded, "image_aspect", "crop") != "pad":
        return list(images)
    fill = fill_colour(loaded.processor.image_processor)
    return [pad_to_square(image, fill) for image in images]
