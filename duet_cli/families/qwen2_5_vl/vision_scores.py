"""Stage-1 signals on Qwen2.5-VL's vision tower (DESIGN.md section 4, Qwen part), as tensor functions.

Importance of a merged token = the attention its 4 patches *receive* in the last full-attention vision
block (softmax per head, summed over the queries of the same image only, mean over heads), averaged over
the merge unit; keys are averaged over heads and over the unit. The tower keeps patches in window order
(merge units permuted by `window_index`, the 4 patches of a unit consecutive); results come back in
raster order of merge units, all images concatenated, the order of the merger's output.
Received attention is a column sum over every query of an image: at real resolutions the full map
would need many GB, so the queries go through in chunks.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

DEFAULT_QUERY_CHUNK = 1024


def received_attention(
    q: Tensor, k: Tensor, cu_seqlens: Tensor, scale: float, chunk: int = DEFAULT_QUERY_CHUNK
) -> Tensor:
    """q, k (heads, N, hd), already rotated; `cu_seqlens` (images + 1,) the image boundaries (the full-
    attention blocks attend within an image). Returns (N,) float32: for each token, the fp32 softmax
    attention it receives from the queries of its own image, summed over queries, mean over heads."""
    if q.dim() != 3 or q.shape != k.shape:
        raise ValueError(
            f"expected q and k (heads, N, hd) of one shape, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    out = torch.zeros(q.shape[1], dtype=torch.float32, device=q.device)
    bounds = [int(b) for b in cu_seqlens.tolist()]
    for start, stop in itertools.pairwise(bounds):
        keys = k[:, start:stop].float().transpose(-1, -2)
        total = torch.zeros(stop - start, dtype=torch.float32, device=q.device)
        for first in range(start, stop, max(1, chunk)):
            last = min(first + chunk, stop)
            probs = (torch.matmul(q[:, first:last].float(), keys) * scale).softmax(dim=-1)  # (H, Qc, n)
            total += probs.sum(dim=1).mean(dim=0)
        out[start:stop] = total
    return out


def per_unit_raster(values: Tensor, window_index: Tensor, unit: int) -> Tensor:
    """values (N, ...) in the tower's window order -> (N / unit, ...): mean over each merge unit's
    `unit` consecutive patches, reordered to raster order of units (as the stock merger's output)."""
    if values.shape[0] % unit:
        raise ValueError(f"{values.shape[0]} patches do not form merge units of {unit}")
    units = values.reshape(-1, unit, *values.shape[1:]).float().mean(dim=1)
    return units[torch.argsort(window_index.to(units.device))]
