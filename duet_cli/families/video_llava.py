"""Video-LLaVA adapter: stock `VideoLlavaForConditionalGeneration` (an image and a video CLIP tower of one
config, one projector, a Llama decoder).

Images go through the image tower and lose CLS under the "default" strategy (256 tokens at 224 px);
video frames go through the video tower and keep it (257 per frame, 8 x 257 = 2056 per clip). The
language side is LLaVA's Llama, so those accessors are LLaVA's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from duet_cli.dims import ModelDims, dims_from_config
from duet_cli.errors import HookError, InputError
from duet_cli.families.llava import LlavaAdapter, feature_layer_attention, find

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"

# every path into the stock model, in one place
PATHS = {
    "owner": "model",
    "image_tower": "model.image_tower",
    "image_layers": "model.image_tower.encoder.layers",
    "video_tower": "model.video_tower",
    "video_layers": "model.video_tower.encoder.layers",
    "projector": "model.multi_modal_projector",
}


def _find(model: nn.Module, key: str) -> Any:
    return find(model, key, PATHS, "Video-LLaVA")


def _modality(modality: str) -> str:
    if modality not in ("image", "video"):
        raise HookError(f"Video-LLaVA has no {modality} input")
    return modality


class VideoLlavaAdapter:
    family = "video_llava"
    modalities: tuple[str, ...] = ("image", "video")
    placeholders: tuple[str, ...] = (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)
    media_markers: tuple[tuple[str, str], ...] = (("image", IMAGE_PLACEHOLDER), ("video", VIDEO_PLACEHOLDER))
    rope_rows = 1
    default_template = "USER: <video>\n{question} ASSISTANT:"
    answer_prefix, turn_suffix = " ", ""

    def __init__(self) -> None:
        self._lm = LlavaAdapter()  # the decoder side is the same stock Llama under the same paths

    def dims(self, model: Any) -> ModelDims:
        return dims_from_config(model.config)

    # -- vision side --------------------------------------------------------------------------
    def image_features_owner(self, model: Any) -> nn.Module:
        return _find(model, "owner")  # VideoLlavaModel: get_image_features and get_video_features

    def vision_tower(self, model: Any, modality: str = "image") -> nn.Module:
        return _find(model, f"{_modality(modality)}_tower")

    def vision_feature_layer(self, model: Any) -> int:
        return self._lm.vision_feature_layer(model)

    def vision_score_layer(self, model: Any, modality: str = "image") -> nn.Module:
        """Self-attention of the layer whose output `hidden_states[feature_layer]` is, in that tower."""
        key = f"{_modality(modality)}_layers"
        return feature_layer_attention(_find(model, key), self.vision_feature_layer(model), PATHS[key])

    def projector(self, model: Any) -> nn.Module:
        return _find(model, "projector")

    def project(self, model: Any, features: torch.Tensor) -> torch.Tensor:
        return _find(model, "projector")(features)

    def pooled_output(self, modality: str, features: torch.Tensor) -> Any:
        return features  # VideoLlavaModel reads pooler_output as one (N, tokens, D) tensor

    # -- language side (LLaVA's) ----------------------------------------------------------------
    def language_model(self, model: Any) -> nn.Module:
        return self._lm.language_model(model)

    def decoder_layers(self, model: Any) -> nn.ModuleList:
        return self._lm.decoder_layers(model)

    def image_token_id(self, model: Any) -> int:
        return int(model.config.image_token_id)

    def visual_token_id(self, model: Any, modality: str) -> int:
        key = f"{_modality(modality)}_token_id"
        return int(getattr(model.config, key))

    def visual_token_ids(self, model: Any) -> list[int]:
        return [self.visual_token_id(model, m) for m in self.modalities]

    def rotary_embedding(self, model: Any) -> nn.Module:
        return self._lm.rotary_embedding(model)

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self._lm.apply_rope(x, cos, sin)

    def attention_geometry(self, layer: Any) -> tuple[int, int, int, float]:
        return self._lm.attention_geometry(layer)

    def query_key(
        self, layer: Any, hidden: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lm.query_key(layer, hidden, rows)

    # -- prompts -----------------------------------------------------------------------------
    def build_prompt(
        self,
        template: str,
        question: str,
        n_images: int,
        tokens_per_image: int,
        video_tokens: Sequence[int] = (),
    ) -> tuple[str, int]:
        """The template's media placeholder (`<video>` or `<image>`) becomes the images' placeholder
        blocks, then each video's (its frames back to back, as the stock processor writes them), one
        per line; without media the placeholder line goes."""
        blocks = [IMAGE_PLACEHOLDER * tokens_per_image] * n_images
        blocks += [VIDEO_PLACEHOLDER * n for n in video_tokens]
        head, sep, tail = template.partition("{question}")
        marks = [m for m in (VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER) if m in head]
        mark = min(marks, key=head.index) if marks else None

        def fill(part: str) -> str:
            if mark is None:
                return part
            if blocks:
                return part.replace(mark, "\n".join(blocks), 1)
            return part.replace(mark + "\n", "").replace(mark, "")

        if blocks and mark is None:
            raise InputError(f"the chat template {template!r} has no <image> or <video> placeholder")
        head = fill(head)
        return head + (question + tail if sep else ""), len(head)

    def turn_template(self, template: str) -> str:
        return template  # "USER: {question} ASSISTANT:" once the image placeholder is gone

    def pixel_inputs(
        self, processor: Any, images: Sequence[Any], videos: Sequence[Sequence[Any]]
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if images:
            encoded = processor.image_processor(
                list(images), return_tensors="pt", return_legacy_image_output=False
            )
            out["pixel_values"] = encoded["pixel_values"]
        if videos:
            counts = sorted({len(v) for v in videos})
            if len(counts) > 1:
                raise InputError(
                    f"videos in one batch must have the same number of frames (got {counts}); "
                    "use one --frames for all of them"
                )
            encoded = processor.video_processor(videos=[list(v) for v in videos], return_tensors="pt")
            out["pixel_values_videos"] = encoded["pixel_values_videos"]
        return out
