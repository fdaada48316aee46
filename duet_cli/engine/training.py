"""The training forward under a profile: labels travel with the kept columns (DESIGN.md section 5).

Stage 2 ranks with the training query rule (the instruction tokens after the image, label = ignore),
ranking is detached, and the loss is a *sum* with its token count, so a trainer can normalise by the
global number of label tokens across ranks (drops make per-rank counts differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from duet_cli.engine.session import ReductionSession
from duet_cli.methods.pyramiddrop.rank import gather_columns

IGNORE = -100


@dataclass
class LossParts:
    loss_sum: torch.Tensor  # summed token cross-entropy (differentiable)
    tokens: int  # label tokens it sums over
    visual_tokens_in: int  # visual tokens that entered the LLM, summed over the batch
    visual_token_layers: int  # sum over samples of (visual tokens x layers): average = this / (B x L)


def instruction_queries(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """Training query rows: real tokens after the sample's last image token whose label is ignored."""
    b, length = input_ids.shape
    cols = torch.arange(length, device=input_ids.device).expand(b, length)
    visual = input_ids == image_token_id
    last_image = torch.where(visual, cols, -1).max(dim=1, keepdim=True).values
    return attention_mask.bool() & (cols > last_image) & (labels == IGNORE)


def reduced_loss(model: Any, session: ReductionSession, batch: dict[str, torch.Tensor]) -> LossParts:
    """Forward `batch` (input_ids, attention_mask, labels, and the family's pixel inputs: pixel_values,
    image_grid_thw and mm_token_type_ids on Qwen2.5-VL) with the profile on."""
    adapter = session.adapter
    input_ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if session.llm is not None:
        image_id = adapter.image_token_id(model)
        session.llm.query_override = instruction_queries(input_ids, mask, labels, image_id)
    extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
    outputs = adapter.image_features_owner(model)(
        input_ids=input_ids, attention_mask=mask, use_cache=False, **extra
    )
    hidden = outputs.last_hidden_state
    if session.llm is not None and session.llm.state is not None:
        cols = session.llm.final_columns()
        kept_labels = gather_columns(labels, cols.clamp(min=0), fill=IGNORE)
        kept_labels = kept_labels.masked_fill(cols < 0, IGNORE)
    else:
        kept_labels = labels.masked_fill(mask == 0, IGNORE)
    logits = model.lm_head(hidden[:, :-1]).float()
    targets = kept_labels[:, 1:]
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    rows = session.recorder.rows
    n0 = sum(r.n0 for r in rows) if rows else int((input_ids == adapter.image_token_id(model)).sum())
    ledger_sum = _ledger_sum(session, rows, n0)
    return LossParts(loss_sum, int((targets != IGNORE).sum()), n0, ledger_sum)


def _ledger_sum(session: ReductionSession, rows: list[Any], n0_total: int) -> int:
    layers = session.dims.num_layers
    if not rows:
        return n0_total * layers
    bounds = [0, *session.resolved.llm_layers, layers]
    total = 0
    for row in rows:
        counts = [row.n0, *(len(kept) for _, _, kept in row.drops)]
        counts += [counts[-1]] * (len(bounds) - 1 - len(counts))  # no drop ran (no visual tokens)
        total += sum(c * (bounds[i + 1] - bounds[i]) for i, c in enumerate(counts))
    return total
