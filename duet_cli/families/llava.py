"""LLaVA-1.5 adapter: stock `LlavaForConditionalGeneration` (CLIP tower + projector + Llama decoder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from duet_cli.dims import ModelDims, dims_from_config
from duet_cli.errors import HookError, InputError, UnsupportedSetupError

NO_VIDEO = "LLaVA-1.5 takes images, not video (use a Video-LLaVA or Qwen2.5-VL model for --video)"
IMAGE_PLACEHOLDER = "<image>"

# every path into the stock model, in one place
PATHS = {
    "owner": "model",
    "tower": "model.vision_tower",
    "vision_layers": "model.vision_tower.encoder.layers",
    "projector": "model.multi_modal_projector",
    "lm": "model.language_model",
    "layers": "model.language_model.layers",
    "rotary": "model.language_model.rotary_emb",
}


def find(model: nn.Module, key: str, paths: dict[str, str] = PATHS, layout: str = "LLaVA") -> Any:
    """The module at paths[key], or a HookError naming the missing hook point."""
    obj: Any = model
    for part in paths[key].split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HookError(
                f"hook point not found: {type(model).__name__}.{paths[key]} (missing {part!r}); "
                f"this model does not have the stock {layout} layout"
            ) from None
    return obj


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def feature_layer_attention(layers: Any, feature_layer: int, where: str) -> nn.Module:
    """Self-attention of the encoder layer whose output is `hidden_states[feature_layer]` (CLIP towers)."""
    n = len(layers)
    if n == 0:
        raise HookError(f"hook point not found: {where} is empty")
    index = feature_layer % (n + 1) - 1  # hidden_states[k] is layer k-1's output
    if index < 0:
        raise UnsupportedSetupError("stage 1 cannot score the embedding output (vision_feature_layer=0)")
    return layers[index].self_attn


class LlavaAdapter:
    family = "llava"
    modalities: tuple[str, ...] = ("image",)
    placeholders: tuple[str, ...] = (IMAGE_PLACEHOLDER,)
    media_markers: tuple[tuple[str, str], ...] = (("image", IMAGE_PLACEHOLDER),)  # Jinja markers
    rope_rows = 1
    default_template = "USER: <image>\n{question} ASSISTANT:"
    answer_prefix, turn_suffix = " ", ""  # LLaVA-1.5 "v1": "... ASSISTANT: A1</s>USER: Q2 ..."

    def dims(self, model: Any) -> ModelDims:
        return dims_from_config(model.config)

    # -- vision side --------------------------------------------------------------------------
    def image_features_owner(self, model: Any) -> nn.Module:
        return find(model, "owner")  # LlavaModel: generate() and forward() both call its get_image_features

    def vision_tower(self, model: Any, modality: str = "image") -> nn.Module:
        _image_only(modality)
        return find(model, "tower")

    def vision_feature_layer(self, model: Any) -> int:
        layer = model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise UnsupportedSetupError(
                f"vision_feature_layer={layer!r}: stage 1 needs a single vision feature layer"
            )
        return layer

    def vision_score_layer(self, model: Any, modality: str = "image") -> nn.Module:
        """Self-attention of the encoder layer whose output `hidden_states[feature_layer]` is."""
        _image_only(modality)
        layers = find(model, "vision_layers")
        return feature_layer_attention(layers, self.vision_feature_layer(model), PATHS["vision_layers"])

    def projector(self, model: Any) -> nn.Module:
        return find(model, "projector")

    def project(self, model: Any, features: torch.Tensor) -> torch.Tensor:
        return find(model, "projector")(features)

    def pooled_output(self, modality: str, features: torch.Tensor) -> Any:
        return list(features)  # LlavaModel reads pooler_output as one tensor per image

    # -- language side ------------------------------------------------------------------------
    def language_model(self, model: Any) -> nn.Module:
        return find(model, "lm")

    def decoder_layers(self, model: Any) -> nn.ModuleList:
        return find(model, "layers")

    def image_token_id(self, model: Any) -> int:
        return int(model.config.image_token_id)

    def visual_token_id(self, model: Any, modality: str) -> int:
        _image_only(modality)
        return self.image_token_id(model)

    def visual_token_ids(self, model: Any) -> list[int]:
        return [self.image_token_id(model)]

    def rotary_embedding(self, model: Any) -> nn.Module:
        return find(model, "rotary")

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return (x * cos) + (rotate_half(x) * sin)

    def attention_geometry(self, layer: Any) -> tuple[int, int, int, float]:
        attn = layer.self_attn
        cfg = attn.config
        return cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim, float(attn.scaling)

    def query_key(
        self, layer: Any, hidden: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        b, length, _ = x.shape
        xq = torch.gather(x, 1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        q = attn.q_proj(xq).view(b, rows.shape[1], -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, length, -1, attn.head_dim).transpose(1, 2)
        return q, k

    # -- prompts -----------------------------------------------------------------------------
    def build_prompt(
        self,
        template: str,
        question: str,
        n_images: int,
        tokens_per_image: int,
        video_tokens: Sequence[int] = (),
    ) -> tuple[str, int]:
        """Chat prompt with `tokens_per_image` placeholders per image, and where the question starts."""
        if video_tokens:
            raise InputError(NO_VIDEO)
        block = "\n".join([IMAGE_PLACEHOLDER * tokens_per_image] * n_images)

        def fill(part: str) -> str:
            if n_images:
                return part.replace(IMAGE_PLACEHOLDER, block, 1)
            return part.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")

        head, sep, tail = template.partition("{question}")
        head = fill(head)
        return head + (question + fill(tail) if sep else ""), len(head)

    def turn_template(self, template: str) -> str:
        return template  # "USER: {question} ASSISTANT:" once the image placeholder is gone

    def pixel_inputs(
        self, processor: Any, images: Sequence[Any], videos: Sequence[Sequence[Any]]
    ) -> dict[str, torch.Tensor]:
        if videos:
            raise InputError(NO_VIDEO)
        if not images:
            return {}
        return {"pixel_values": processor.image_processor(list(images), return_tensors="pt")["pixel_values"]}


def _image_only(modality: str) -> None:
    if modality != "image":
        raise HookError(f"LLaVA-1.5 has no {modality} input")
