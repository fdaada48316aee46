"""The FamilyAdapter contract: what the reduction engine needs to know about one model family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from duet_cli.dims import ModelDims


class FamilyAdapter(Protocol):
    family: str
    # what the model takes besides text: "image", and "video" for video families. For each modality
    # the owner has a stock `get_<modality>_features` method (what forward() and generate() call).
    modalities: tuple[str, ...]
    placeholders: tuple[str, ...]  # the prompt placeholders a question may not contain
    # the marker a Jinja chat template writes for each image / video (duet repeats it to the count)
    media_markers: tuple[tuple[str, str], ...]  # (modality, marker) pairs
    # position rows the decoder rotary reads: 1 (Llama) or 3 (M-RoPE: temporal, height, width)
    rope_rows: int
    # the chat template of a model with no catalog card ("<image>" and "{question}" placeholders)
    default_template: str
    # a training conversation: prompt + answer_prefix + answer + eos + turn_suffix, turn after turn
    answer_prefix: str
    turn_suffix: str

    def dims(self, model: Any) -> ModelDims: ...

    # -- vision side (stage 1) --
    def image_features_owner(self, model: Any) -> nn.Module:
        """The module whose `get_<modality>_features` methods stage 1 replaces (per instance)."""
        ...

    def vision_tower(self, model: Any, modality: str = "image") -> nn.Module: ...

    def vision_score_layer(self, model: Any, modality: str = "image") -> nn.Module:
        """The encoder self-attention module whose input gives the CLS query and keys."""
        ...

    def pooled_output(self, modality: str, features: torch.Tensor) -> Any:
        """`features` (N, tokens, D) as the owner's forward reads `pooler_output` (list or tensor)."""
        ...

    def vision_feature_layer(self, model: Any) -> int:
        """Index into the tower's `hidden_states` tuple that the projector reads."""
        ...

    def project(self, model: Any, features: torch.Tensor) -> torch.Tensor: ...

    def projector(self, model: Any) -> nn.Module:
        """The module between the vision features and the LLM (`duet train --train projector`)."""
        ...

    # -- language side (stage 2) --
    def language_model(self, model: Any) -> nn.Module: ...

    def decoder_layers(self, model: Any) -> nn.ModuleList: ...

    def image_token_id(self, model: Any) -> int: ...

    def visual_token_id(self, model: Any, modality: str) -> int:
        """The placeholder token id of one modality's visual tokens."""
        ...

    def visual_token_ids(self, model: Any) -> list[int]:
        """Placeholder ids of every modality: stage 2 ranks all of these tokens together."""
        ...

    def rotary_embedding(self, model: Any) -> nn.Module: ...

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate `x` (B, heads, L, head_dim) by `cos`/`sin` (B, L, head_dim)."""
        ...

    def attention_geometry(self, layer: Any) -> tuple[int, int, int, float]:
        """(num_heads, num_kv_heads, head_dim, scaling) of a decoder layer's self-attention."""
        ...

    def query_key(
        self, layer: Any, hidden: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries of hidden[:, rows] and keys of all of hidden, before rotary, head-split.

        `hidden` (B, L, D) enters the layer; `rows` (B, Q) are column indices. Returns q (B, H, Q, hd)
        and k (B, Hkv, L, hd), computed with the layer's own input norm and projections.
        """
        ...

    def build_prompt(
        self,
        template: str,
        question: str,
        n_images: int,
        tokens_per_image: int,
        video_tokens: Sequence[int] = (),
    ) -> tuple[str, int]:
        """The chat prompt (placeholder count = what stage 1 emits per image, and per video the total of
        its frames, `video_tokens`) and the question's offset."""
        ...

    def turn_template(self, template: str) -> str:
        """The template of a conversation's later turns (no images; Qwen2.5-VL: no second system block)."""
        ...

    def pixel_inputs(
        self, processor: Any, images: Sequence[Any], videos: Sequence[Sequence[Any]]
    ) -> dict[str, torch.Tensor]:
        """Model inputs for the images (PIL) and videos (each a list of PIL frames), via the processor."""
        ...
