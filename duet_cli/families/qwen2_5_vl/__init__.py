"""Qwen2.5-VL adapter: stock `Qwen2_5_VLForConditionalGeneration` (dynamic-resolution ViT with window
attention and a 2x2 patch merger, a GQA Qwen2 decoder with M-RoPE).

The decoder side has LLaVA's paths and per-layer calls (input norm, q/k projections with bias, rotary
applied as `q * cos + rotate_half(q) * sin`); what differs is the position layout: the decoder takes
position ids of shape (4, B, L) (row 0 text positions for the mask, rows 1-3 the temporal/height/width
M-RoPE positions), and its rotary module turns the three rows into one cos/sin per token
(`mrope_section`). Stage 2 therefore carries three position rows (`rope_rows = 3`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from duet_cli.dims import ModelDims, dims_from_config
from duet_cli.errors import HookError, InputError
from duet_cli.families.llava import LlavaAdapter, find

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_MARK = "<image>"  # where a catalog card's chat template puts the images
USER_BLOCK = "<|im_start|>user"

# every path into the stock model, in one place
PATHS = {
    "owner": "model",
    "tower": "model.visual",
    "vision_blocks": "model.visual.blocks",
    "merger": "model.visual.merger",
    "lm": "model.language_model",
    "layers": "model.language_model.layers",
    "rotary": "model.language_model.rotary_emb",
}


def _find(model: nn.Module, key: str) -> Any:
    return find(model, key, PATHS, "Qwen2.5-VL")


class Qwen25VLAdapter:
    family = "qwen2_5_vl"
    modalities: tuple[str, ...] = ("image", "video")
    placeholders: tuple[str, ...] = (IMAGE_MARK, IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)
    media_markers: tuple[tuple[str, str], ...] = (("image", IMAGE_PAD), ("video", VIDEO_PAD))
    rope_rows = 3  # M-RoPE: temporal, height and width position rows
    default_template = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    answer_prefix, turn_suffix = "", "\n"  # ChatML: "assistant\nA1<|im_end|>\n<|im_start|>user..."

    def __init__(self) -> None:
        self._lm = LlavaAdapter()  # same decoder paths and q/k/rotary arithmetic

    def dims(self, model: Any) -> ModelDims:
        return dims_from_config(model.config)

    # -- vision side --------------------------------------------------------------------------
    def image_features_owner(self, model: Any) -> nn.Module:
        return _find(model, "owner")  # Qwen2_5_VLModel: forward() and generate() call its get_image_features

    def vision_tower(self, model: Any, modality: str = "image") -> nn.Module:
        _check_modality(modality)
        return _find(model, "tower")  # one tower for images and videos

    def vision_feature_layer(self, model: Any) -> int:
        return -1  # the merger reads the last block's output

    def vision_score_layer(self, model: Any, modality: str = "image") -> nn.Module:
        """Attention of the last full-attention vision block (stage 1 scores the attention received there)."""
        _check_modality(modality)
        block: Any = self.last_full_attention_block(model)
        attn: nn.Module = block.attn
        return attn

    def last_full_attention_block(self, model: Any) -> nn.Module:
        """The last vision block that attends over the whole image (not a window)."""
        blocks = _find(model, "vision_blocks")
        full = list(model.config.vision_config.fullatt_block_indexes)
        if not full:
            raise HookError("Qwen2.5-VL vision config has no full-attention block (fullatt_block_indexes)")
        return blocks[max(full)]

    def projector(self, model: Any) -> nn.Module:
        """The patch merger (2x2 patches -> one LLM token), which plays LLaVA's projector part."""
        return _find(model, "merger")

    def project(self, model: Any, features: torch.Tensor) -> torch.Tensor:
        raise HookError("Qwen2.5-VL merges and projects inside the vision tower (no separate projector)")

    def pooled_output(self, modality: str, features: torch.Tensor) -> Any:
        return list(features)  # Qwen2_5_VLModel concatenates pooler_output, one tensor per image

    # -- language side (LLaVA's paths and arithmetic) -------------------------------------------
    def language_model(self, model: Any) -> nn.Module:
        return _find(model, "lm")

    def decoder_layers(self, model: Any) -> nn.ModuleList:
        return _find(model, "layers")

    def image_token_id(self, model: Any) -> int:
        return int(model.config.image_token_id)

    def visual_token_id(self, model: Any, modality: str) -> int:
        if modality not in ("image", "video"):
            raise HookError(f"Qwen2.5-VL has no {modality} input")
        return int(getattr(model.config, f"{modality}_token_id"))

    def visual_token_ids(self, model: Any) -> list[int]:
        return [self.visual_token_id(model, "image"), self.visual_token_id(model, "video")]

    def rotary_embedding(self, model: Any) -> nn.Module:
        return _find(model, "rotary")

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # the rotary module already folded the three M-RoPE rows into one (B, L, head_dim) table, so the
        # rotation is the stock `apply_rotary_pos_emb`
        return self._lm.apply_rope(x, cos, sin)

    def attention_geometry(self, layer: Any) -> tuple[int, int, int, float]:
        return self._lm.attention_geometry(layer)

    def query_key(
        self, layer: Any, hidden: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lm.query_key(layer, hidden, rows)  # q_proj / k_proj carry their biases

    # -- prompts -----------------------------------------------------------------------------
    def build_prompt(
        self,
        template: str,
        question: str,
        n_images: int,
        tokens_per_image: int,
        video_tokens: Sequence[int] = (),
    ) -> tuple[str, int]:
        """The template's `<image>` becomes one `<|vision_start|>` + pads + `<|vision_end|>` block per
        image, then one per video (placeholder counts are per image and per video on Qwen: the runtime
        passes them one by one)."""
        return self.build_prompt_counts(template, question, [tokens_per_image] * n_images, video_tokens)

    def build_prompt_counts(
        self, template: str, question: str, counts: Sequence[int], video_counts: Sequence[int] = ()
    ) -> tuple[str, int]:
        blocks = "".join(VISION_START + IMAGE_PAD * n + VISION_END for n in counts)
        blocks += "".join(VISION_START + VIDEO_PAD * n + VISION_END for n in video_counts)
        head, sep, tail = template.partition("{question}")
        if (counts or video_counts) and IMAGE_MARK not in head:
            raise InputError(f"the chat template {template!r} has no {IMAGE_MARK} placeholder")
        head = head.replace(IMAGE_MARK, blocks, 1)
        return head + (question + tail if sep else ""), len(head)

    def turn_template(self, template: str) -> str:
        """ChatML's later turns start at the user block: the system block is said once, in turn 1."""
        user = template.find(USER_BLOCK)
        return template[user:] if user > 0 else template

    def pixel_inputs(
        self, processor: Any, images: Sequence[Any], videos: Sequence[Sequence[Any]]
    ) -> dict[str, torch.Tensor]:
        """Image patches and grids from the image processor; video patches and grids from the video
        processor (frames in pairs: `temporal_patch_size` frames make one temporal slice, an odd count is
        padded by repeating the last frame, as the processor does)."""
        out: dict[str, torch.Tensor] = {}
        if images:
            encoded = processor.image_processor(list(images), return_tensors="pt")
            out |= {"pixel_values": encoded["pixel_values"], "image_grid_thw": encoded["image_grid_thw"]}
        if videos:
            encoded = processor.video_processor(videos=[list(v) for v in videos], return_tensors="pt")
            out["pixel_values_videos"] = encoded["pixel_values_videos"]
            out["video_grid_thw"] = encoded["video_grid_thw"]
        return out


def _check_modality(modality: str) -> None:
    if modality not in ("image", "video"):
        raise HookError(f"Qwen2.5-VL has no {modality} input")
