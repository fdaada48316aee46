"""The cache-free Qwen2.5-VL reference the stage-1 tests compare generate() to: one unpadded sequence
recomputed from scratch over fixed kept tokens, its 3-D positions from the stock get_rope_index."""

from __future__ import annotations

import torch
from tiny_qwen import IMAGE_ID, VIDEO_ID


@torch.no_grad()
def reference_logits(model, seq, types, items, features, kept, starts):  # type: ignore[no-untyped-def]
    """Last-position logits of ONE unpadded sequence from scratch over fixed kept tokens. Positions: the
    stock get_rope_index on the same prompt with every image and video at its full grid, gathered at the
    merge units stage 1 kept. `items`: (kind, grid, units, seconds) per image/video in prompt order."""
    lm = model.model.language_model
    full_seq: list[int] = []
    full_types: list[int] = []
    columns: list[int] = []
    pending = iter(items)
    i = 0
    while i < len(seq):
        if types[i] == 0:
            columns.append(len(full_seq))
            full_seq.append(seq[i])
            full_types.append(0)
            i += 1
            continue
        key, (t, h, w), units, _ = next(pending)
        while i < len(seq) and types[i] == key:
            i += 1
        columns += [len(full_seq) + u for u in units]
        full_seq += [IMAGE_ID if key == 1 else VIDEO_ID] * (t * h * w // 4)
        full_types += [key] * (t * h * w // 4)
    grids = {key: [g for k, g, _, _ in items if k == key] for key in (1, 2)}
    pos_full, _ = model.model.get_rope_index(
        torch.tensor([full_seq]),
        mm_token_type_ids=torch.tensor([full_types]),
        image_grid_thw=torch.tensor(grids[1]) if grids[1] else None,
        video_grid_thw=torch.tensor(grids[2]) if grids[2] else None,
        second_per_grid_ts=torch.tensor([sec for k, _, _, sec in items if k == 2]),
    )
    pos3 = pos_full[:, :, columns]
    ids = torch.tensor([seq])
    h = lm.embed_tokens(ids)
    visual = torch.tensor(types) > 0
    h[0, visual] = features.to(h.dtype)
    vis_index = torch.cumsum(visual.long(), 0) - 1
    cols = list(range(len(seq)))
    for layer_index, layer in enumerate(lm.layers):
        if layer_index in starts[1:]:
            keep_vis = set(kept[starts.index(layer_index) - 1])
            keep = [j for j, c in enumerate(cols) if not visual[c] or int(vis_index[c]) in keep_vis]
            h, cols = h[:, keep], [cols[j] for j in keep]
        n = len(cols)
        mask = torch.full((n, n), float("-inf")).triu(1).view(1, 1, n, n)
        h = layer(h, attention_mask=mask, position_embeddings=lm.rotary_emb(h, pos3[:, :, cols]))
    return model.lm_head(lm.norm(h))[0, -1]
