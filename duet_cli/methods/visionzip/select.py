"""VisionZip stage-1 selection: keep the dominant tokens, fold the rest into contextual tokens.

Plain tensor functions (DESIGN.md section 4), vectorized over the batch; no model objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("uniform", "pooled")


def cls_attention_scores(q_cls: Tensor, keys: Tensor, scale: float) -> Tensor:
    """CLS attention over all tokens, softmaxed per head in fp32 and summed over heads.

    q_cls: (B, H, hd), the CLS query row of each head; keys: (B, H, N, hd). Returns (B, N) float32;
    column 0 is CLS attending to itself.
    """
    if (
        q_cls.dim() != 3
        or keys.dim() != 4
        or keys.shape[:2] != q_cls.shape[:2]
        or keys.shape[3] != q_cls.shape[2]
    ):
        raise ValueError(
            "expected q_cls (B, H, hd) and keys (B, H, N, hd), "
            f"got {tuple(q_cls.shape)} and {tuple(keys.shape)}"
        )
    logits = torch.einsum("bhd,bhnd->bhn", q_cls.float(), keys.float()) * scale
    return logits.softmax(dim=-1).sum(dim=1)


def scores_from_projections(q: Tensor, k: Tensor, heads: int, scale: float) -> tuple[Tensor, Tensor]:
    """A CLIP layer's CLS attention scores and head-mean keys, from its own q/k projections.

    q, k: (B, N, H * hd) the layer's query and key projections of its input (CLS first). Returns the
    (B, N) `cls_attention_scores` and the (B, N, hd) keys averaged over heads (the merge metric)."""
    b, n, width = k.shape
    head_dim = width // heads
    q_cls = q[:, 0].reshape(b, heads, head_dim)
    keys = k.reshape(b, n, heads, head_dim).transpose(1, 2)
    return cls_attention_scores(q_cls, keys, scale), keys.mean(dim=1)


@dataclass
class Stage1Selection:
    """Which tokens stage 1 kept and how the rest were merged (indices into the N input tokens)."""

    dominant: Tensor  # (B, d) long, kept as they are, ascending (CLS, index 0, first when present)
    targets: Tensor  # (B, c) long, the target token of each contextual slot, in output order
    assign: Tensor  # (B, N) long, contextual slot in [0, c) of targets and members; -1 otherwise


def select_and_merge(
    hidden: Tensor,
    scores: Tensor,
    keys: Tensor,
    *,
    dominant: int,
    contextual: int,
    mode: str = "uniform",
    cluster_width: int = 4,
    has_cls: bool = True,
) -> tuple[Tensor, Stage1Selection]:
    """Select dominant tokens by score and merge the remaining ones into `contextual` tokens.

    hidden: (B, N, D); scores: (B, N), column 0 ignored when `has_cls` (CLS is always kept);
    keys: (B, N, Dk), already averaged over heads. Returns (B, dominant + contextual, D) in hidden's
    dtype, laid out as [dominant tokens in position order, contextual tokens], and the selection.
    """
    if (
        hidden.dim() != 3
        or scores.shape != hidden.shape[:2]
        or keys.dim() != 3
        or keys.shape[:2] != hidden.shape[:2]
    ):
        raise ValueError(
            "expected hidden (B, N, D), scores (B, N) and keys (B, N, Dk), got "
            f"{tuple(hidden.shape)}, {tuple(scores.shape)} and {tuple(keys.shape)}"
        )
    if mode not in MODES:
        raise ValueError(f"unknown stage-1 mode {mode!r}; expected one of {', '.join(MODES)}")
    batch, n, width = hidden.shape
    d, c = dominant, contextual
    if d < (1 if has_cls else 0) or c < 0 or d + c > n:
        raise ValueError(
            f"cannot keep dominant={d} + contextual={c} of {n} tokens"
            + (" (dominant includes CLS, so it must be >= 1)" if has_cls else "")
        )
    if cluster_width < 1:
        raise ValueError(f"cluster_width must be >= 1, got {cluster_width}")
    device = hidden.device

    # Global ranking, descending score, ties -> lower index (stable). With CLS, rank only the patches
    # and put CLS in front, so CLS is always dominant whatever its own score is.
    if has_cls:
        order = torch.sort(scores[:, 1:], dim=1, descending=True, stable=True).indices + 1
        cls = torch.zeros(batch, 1, dtype=torch.long, device=device)
        order = torch.cat([cls, order], dim=1)
    else:
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    dom_idx = order[:, :d].sort(dim=1).values
    # The tail of a stable ranking is the stable ranking of the remaining tokens.
    rest_by_score = order[:, d:]
    m = n - d

    assign = torch.full((batch, n), -1, dtype=torch.long, device=device)
    dom_hidden = hidden.gather(1, dom_idx.unsqueeze(-1).expand(-1, -1, width))
    if c == 0:
        targets = torch.zeros(batch, 0, dtype=torch.long, device=device)
        return dom_hidden, Stage1Selection(dominant=dom_idx, targets=targets, assign=assign)

    # Candidates: every remaining token in position order (uniform), or the top-P remaining tokens in
    # score order (pooled). Targets sit at a uniform stride over the candidates; the rest merge.
    if mode == "uniform":
        cand = rest_by_score.sort(dim=1).values
    else:
        cand = rest_by_score[:, : min(max(1, cluster_width * c), m)]
    k = cand.shape[1]
    stride = max(1, k // c)
    is_target = torch.zeros(k, dtype=torch.bool, device=device)
    is_target[torch.arange(c, device=device) * stride] = True
    targets = cand[:, is_target]
    members = cand[:, ~is_target]

    keys_n = F.normalize(keys.float(), dim=-1)
    dk = keys_n.shape[-1]
    t_keys = keys_n.gather(1, targets.unsqueeze(-1).expand(-1, -1, dk))
    m_keys = keys_n.gather(1, members.unsqueeze(-1).expand(-1, -1, dk))
    slot = torch.bmm(m_keys, t_keys.transpose(1, 2)).argmax(dim=-1)  # (B, k - c); ties -> lowest slot

    # Mean of members per slot via a one-hot matmul (deterministic, unlike scatter_add on GPU).
    one_hot = F.one_hot(slot, c).float()  # (B, k - c, c)
    m_hidden = hidden.gather(1, members.unsqueeze(-1).expand(-1, -1, width)).float()
    sums = torch.bmm(one_hot.transpose(1, 2), m_hidden)  # (B, c, D)
    counts = one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    t_hidden = hidden.gather(1, targets.unsqueeze(-1).expand(-1, -1, width)).float()
    ctx = (t_hidden + sums / counts).to(hidden.dtype)

    slots = torch.arange(c, device=device).expand(batch, -1)
    assign.scatter_(1, targets, slots)
    assign.scatter_(1, members, slot)
    out = torch.cat([dom_hidden, ctx], dim=1)
    return out, Stage1Selection(dominant=dom_idx, targets=targets, assign=assign)
