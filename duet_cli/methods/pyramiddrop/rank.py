"""PyramidDrop's tensor functions: text-to-visual attention scores, the keep plan, and left repacking.

Plain tensor-in, tensor-out; the decoder hooks in `duet_cli.engine.stage2` wire them to a model.
"""

from __future__ import annotations

import torch


def query_rows(query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices of the query rows of each sample, padded to a common count.

    query_mask (B, L) bool -> rows (B, Q) long, valid (B, Q) bool. Padding entries point at the last
    column (always a real token with left padding) and carry valid=False.
    """
    b, length = query_mask.shape
    q = max(int(query_mask.sum(dim=1).max().item()), 1)
    cols = torch.arange(length, device=query_mask.device).expand(b, length)
    # real query columns first (ascending), then the rest; stable so the order is deterministic
    order = torch.sort((~query_mask).to(torch.int8), dim=1, stable=True).indices[:, :q]
    valid = torch.gather(query_mask, 1, order)
    rows = torch.where(valid, torch.gather(cols, 1, order), torch.full_like(order, length - 1))
    return rows, valid


def text_to_visual_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    row_valid: torch.Tensor,
    key_valid: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Attention the query rows pay to every column: fp32 causal softmax, mean over heads, then rows.

    q (B, H, Q, hd) and k (B, Hkv, L, hd) already carry rotary positions; rows (B, Q) are the query
    columns, row_valid (B, Q) marks real ones, key_valid (B, L) marks non-padding columns.
    Returns (B, L) float32.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads != kv_heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scaling  # (B, H, Q, L)
    length = k.shape[2]
    cols = torch.arange(length, device=k.device)
    allowed = (cols.view(1, 1, length) <= rows.unsqueeze(-1)) & key_valid.unsqueeze(1)  # (B, Q, L)
    logits = logits.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    probs = torch.softmax(logits, dim=-1).mean(dim=1)  # (B, Q, L)
    weights = row_valid.float()
    return (probs * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


def plan_keep(
    scores: torch.Tensor, visual: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Columns to keep: every real non-visual column plus each sample's top-`keep[b]` visual columns.

    Ranking is by descending score with a stable sort (ties go to the earlier column), so a sample
    keeps the same tokens alone and in a batch. Returns (B, L) bool.
    """
    b, length = scores.shape
    ranked = scores.masked_fill(~visual, float("-inf"))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(length, device=scores.device).expand(b, length))
    return (valid & ~visual) | (visual & (rank < keep.unsqueeze(1)))


def repack_left(keep: torch.Tensor) -> torch.Tensor:
    """Gather index that packs each row's kept columns to the right, left-padded with -1.

    keep (B, L) bool -> index (B, L') long, L' = the largest kept count; the last column stays each
    sample's last kept column (its last prompt token).
    """
    b, length = keep.shape
    counts = keep.sum(dim=1)
    width = int(counts.max().item()) if b else 0
    dest = keep.long().cumsum(dim=1) - 1 + (width - counts).unsqueeze(1)
    dest = torch.where(keep, dest, torch.full_like(dest, width))  # discarded -> a spill column
    index = torch.full((b, width + 1), -1, dtype=torch.long, device=keep.device)
    src = torch.arange(length, device=keep.device).expand(b, length)
    index.scatter_(1, dest, torch.where(keep, src, torch.full_like(src, -1)))
    return index[:, :width]


def gather_columns(x: torch.Tensor, index: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
    """x (B, L, ...) gathered at index (B, L'); -1 entries become `fill`."""
    safe = index.clamp(min=0)
    shape = safe.shape + x.shape[2:]
    expanded = safe.view(*safe.shape, *([1] * (x.dim() - 2))).expand(shape)
    out = torch.gather(x, 1, expanded)
    pad = (index < 0).view(*index.shape, *([1] * (x.dim() - 2)))
    return out.masked_fill(pad, fill)
