"""`pool`'s stage-1 apply function: adaptive average pooling of the patch grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from duet_cli.engine.stage1_inputs import Stage1Inputs
from duet_cli.methods.pool.config import PoolConfig
from duet_cli.methods.registry import get_method
from duet_cli.trace import ContextualGroup, ImageSelection


def pool_regions(rows: int, cols: int, out: int) -> list[list[int]]:
    """Patch indices (raster, 0-based) averaged into each output cell, as adaptive_avg_pool2d does."""

    def spans(n: int) -> list[range]:
        return [range(math.floor(i * n / out), math.ceil((i + 1) * n / out)) for i in range(out)]

    return [[r * cols + c for r in rs for c in cs] for rs in spans(rows) for cs in spans(cols)]


def apply(inputs: Stage1Inputs, cfg: PoolConfig) -> tuple[torch.Tensor, list[ImageSelection]]:
    hidden = inputs.hidden
    offset = 1 if inputs.has_cls else 0
    rows, cols = inputs.grid
    b, _, d = hidden.shape
    grid = hidden[:, offset:].reshape(b, rows, cols, d).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(grid.float(), cfg.grid).to(hidden.dtype)
    tokens = pooled.flatten(2).transpose(1, 2)
    regions = pool_regions(rows, cols, cfg.grid)

    def record() -> ImageSelection:
        groups = [ContextualGroup(r[0] + offset, [p + offset for p in r[1:]]) for r in regions]
        return ImageSelection(hidden.shape[1], inputs.grid, inputs.has_cls, [], groups, method="pool")

    return tokens, [record() for _ in range(b)]


get_method("pool", "vision").apply = apply
