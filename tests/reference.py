"""Independent references for the invariant tests: a cache-free decoder, and a model snapshot.

The decoder runs the stock layers one by one on exactly the kept tokens of each segment of ONE unpadded
sequence, with a hand-built causal mask and positions written out here (no duet code involved), and
returns the final normed hidden states with the original column of each.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def reference_hidden(  # type: ignore[no-untyped-def]
    model,
    seq: list[int],
    features: torch.Tensor,
    kept: list[list[int]],
    starts: list[int],
    positions: str,
    visual_id: int,
) -> tuple[torch.Tensor, list[int]]:
    """(1, n, D) normed hidden states after the last layer, and the original column of each of the n.

    `features` fill the `visual_id` placeholders in order; after layer `starts[s]` begins, only the
    visual tokens in `kept[s-1]` (indices among the sequence's visual tokens) remain. `positions` is
    "keep" (original column as position) or "renumber" (0..n-1 over what remains).
    """
    lm = model.model.language_model
    ids = torch.tensor([seq])
    h = lm.embed_tokens(ids)
    visual = ids[0] == visual_id
    h[0, visual] = features.to(h.dtype)
    vis_index = torch.cumsum(visual.long(), 0) - 1
    cols = list(range(len(seq)))
    for i, layer in enumerate(lm.layers):
        if i in starts[1:]:
            keep_vis = set(kept[starts.index(i) - 1])
            keep = [j for j, c in enumerate(cols) if not visual[c] or int(vis_index[c]) in keep_vis]
            h, cols = h[:, keep], [cols[j] for j in keep]
        n = len(cols)
        pos = torch.tensor([cols if positions == "keep" else list(range(n))])
        mask = torch.full((n, n), float("-inf")).triu(1).view(1, 1, n, n)
        h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=lm.rotary_emb(h, pos))
    return lm.norm(h), cols


def model_snapshot(model: torch.nn.Module) -> tuple[dict, dict]:
    """Every tensor, and per module its hook counts and instance attributes (what removal must restore)."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modules = {
        name: (
            len(m._forward_pre_hooks),
            len(m._forward_hooks),
            len(m._forward_pre_hooks_with_kwargs),
            sorted(vars(m).keys()),
        )
        for name, m in model.named_modules()
    }
    return tensors, modules
