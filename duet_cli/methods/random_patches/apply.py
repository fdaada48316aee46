"""`random`'s stage-1 apply function: a uniform draw of patches, seeded per image by its pixels."""

from __future__ import annotations

import zlib

import torch

from duet_cli.engine.stage1_inputs import Stage1Inputs
from duet_cli.methods.random_patches.config import RandomPatchesConfig
from duet_cli.methods.registry import get_method
from duet_cli.trace import ImageSelection


def image_seed(seed: int, pixels: torch.Tensor) -> int:
    """A seed from the profile's seed and the image's bytes: stable alone and in any batch."""
    data = pixels.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return (seed * 1_000_003 + zlib.crc32(data)) % (2**63)


def apply(inputs: Stage1Inputs, cfg: RandomPatchesConfig) -> tuple[torch.Tensor, list[ImageSelection]]:
    hidden = inputs.hidden
    offset = 1 if inputs.has_cls else 0
    patches = hidden.shape[1] - offset
    rows = []
    for b in range(hidden.shape[0]):
        gen = torch.Generator().manual_seed(image_seed(cfg.seed, inputs.pixel_values[b]))
        rows.append(torch.randperm(patches, generator=gen)[: cfg.count].sort().values + offset)
    index = torch.stack(rows).to(hidden.device)
    tokens = torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    selections = [
        ImageSelection(hidden.shape[1], inputs.grid, inputs.has_cls, row.tolist(), [], method="random")
        for row in index
    ]
    return tokens, selections


get_method("random", "vision").apply = apply
