"""What a stage-1 method's apply function receives: the feature-layer tokens of a batch of images."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Stage1Inputs:
    hidden: torch.Tensor  # (B, N, D) hidden states of the feature layer (CLS at index 0 when has_cls)
    pixel_values: torch.Tensor  # (B, 3, H, W), for methods seeded by the image itself
    grid: tuple[int, int]  # patch grid (rows, cols)
    has_cls: bool
    scores: torch.Tensor | None = None  # (B, N) CLS attention summed over heads (methods that need it)
    keys: torch.Tensor | None = None  # (B, N, Dk) keys of the scoring layer, averaged over heads
