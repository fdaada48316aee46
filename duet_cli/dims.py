"""ModelDims: the few numbers a profile needs to be checked against a model, from a config alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from duet_cli.errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelDims:
    family: str  # "llava", ...
    num_layers: int  # decoder layers of the language model
    vision_tokens: int  # tokens the vision encoder emits per image (CLIP-L/336: 577, CLS included)
    has_cls: bool  # whether vision token 0 is a CLS token
    unreduced_tokens: int  # visual tokens per image the stock model feeds the LLM (LLaVA-1.5: 576)
    grid: tuple[int, int]  # patch grid per image (rows, cols)
    # visual tokens per video frame the stock model feeds the LLM (Video-LLaVA: 257, CLS kept); 0 = no video
    unreduced_frame_tokens: int = 0
    # dynamic resolution (Qwen2.5-VL): every image has its own grid and token count; the per-image numbers
    # above describe a reference image (QWEN_REFERENCE_SIDE px square) and only serve the arithmetic
    dynamic_resolution: bool = False


# Qwen2.5-VL: the reference image of the profile arithmetic, 896 x 896 px = 64 x 64 patches of 14 px,
# merged 2 x 2 into 32 x 32 = 1024 LLM tokens (a run counts each image's own merged tokens)
QWEN_REFERENCE_SIDE = 896


def dims_from_config(config: Any) -> ModelDims:
    """Dims of a transformers config object (no weights needed)."""
    model_type = getattr(config, "model_type", None)
    if model_type == "llava":
        vc = config.vision_config
        side = vc.image_size // vc.patch_size
        tokens = side * side + 1
        unreduced = tokens - 1 if config.vision_feature_select_strategy == "default" else tokens
        return ModelDims(
            family="llava",
            num_layers=config.text_config.num_hidden_layers,
            vision_tokens=tokens,
            has_cls=True,
            unreduced_tokens=unreduced,
            grid=(side, side),
        )
    if model_type == "video_llava":
        # two CLIP towers of one config: images drop CLS under the "default" strategy, frames never do
        vc = config.vision_config
        side = vc.image_size // vc.patch_size
        tokens = side * side + 1
        unreduced = tokens - 1 if config.vision_feature_select_strategy == "default" else tokens
        return ModelDims(
            family="video_llava",
            num_layers=config.text_config.num_hidden_layers,
            vision_tokens=tokens,
            has_cls=True,
            unreduced_tokens=unreduced,
            grid=(side, side),
            unreduced_frame_tokens=tokens,
        )
    if model_type == "qwen2_5_vl":
        vc = config.vision_config
        merge = getattr(vc, "spatial_merge_size", 2)  # a catalog card's config view has none: always 2
        side = QWEN_REFERENCE_SIDE // vc.patch_size // merge  # merged units per side of the reference image
        return ModelDims(
            family="qwen2_5_vl",
            num_layers=config.text_config.num_hidden_layers,
            vision_tokens=side * side,
            has_cls=False,
            unreduced_tokens=side * side,
            grid=(side, side),
            dynamic_resolution=True,
        )
    raise ModelNotFoundError(
        f"model type {model_type!r} is not supported by duet (supported: llava, qwen2_5_vl, video_llava)"
    )
