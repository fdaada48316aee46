"""The FamilyAdapter contract: what the reduction engine needs to know about one model family."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from duet_cli.dims import ModelDims


class FamilyAdapter(Protocol):
    family: str

    def dims(self, model: Any) -> ModelDims: ...

    # -- vision side (stage 1) --
    def image_features_owner(self, model: Any) -> nn.Module:
        """The module whose `get_image_features` method stage 1 replaces (per instance)."""
        ...

    def vision_tower(self, model: Any) -> nn.Module: ...

    def vision_score_layer(self, model: Any) -> nn.Module:
        """The encoder self-attention module whose input gives the CLS query and keys."""
        ...

    def vision_feature_layer(self, model: Any) -> int:
        """Index into the tower's `hidden_states` tuple that the projector reads."""
        ...

    def project(self, model: Any, features: torch.Tensor) -> torch.Tensor: ...

    # -- language side (stage 2) --
    def language_model(self, model: Any) -> nn.Module: ...

    def decoder_layers(self, model: Any) -> nn.ModuleList: ...

    def image_token_id(self, model: Any) -> int: ...

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
        self, template: str, question: str, n_images: int, tokens_per_image: int
    ) -> tuple[str, int]:
        """The chat prompt (placeholder count = what stage 1 emits per image) and the question's offset."""
        ...
