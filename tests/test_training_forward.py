"""The training forward: labels stay aligned with their tokens after drops, against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import reference_hidden
from tiny import IMAGE_ID, batch_inputs, profile
from transformers import LlavaForConditionalGeneration

from duet_cli.engine.session import apply_profile
from duet_cli.engine.training import IGNORE, instruction_queries, reduced_loss

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

ANSWER = 3  # the last 3 tokens of each prompt play the answer


def with_labels(inputs: dict) -> dict:
    labels = torch.full_like(inputs["input_ids"], IGNORE)
    labels[:, -ANSWER:] = inputs["input_ids"][:, -ANSWER:]
    return {**inputs, "labels": labels}


def test_instruction_queries_hand_example() -> None:
    ids = torch.tensor([[0, 1, 5, IMAGE_ID, IMAGE_ID, 6, 7, 8, 9]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1]])
    labels = torch.tensor([[IGNORE] * 7 + [8, 9]])
    assert instruction_queries(ids, mask, labels, IMAGE_ID).tolist() == [
        [False] * 5 + [True, True, False, False]
    ]


def test_keep_everything_equals_stock_loss(tiny_llava: LlavaForConditionalGeneration) -> None:
    batch = with_labels(batch_inputs(576))
    stock = tiny_llava(**batch).loss
    prof = profile(llm={"layers": [3, 5], "keep_ratios": [1.0, 1.0], "queries": "after_image"})
    with apply_profile(tiny_llava, prof) as session:
        parts = reduced_loss(tiny_llava, session, batch)
    assert parts.tokens == 3 * ANSWER
    torch.testing.assert_close(parts.loss_sum / parts.tokens, stock, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def reference_loss(model, seq, labels, features, kept, starts, positions):  # type: ignore[no-untyped-def]
    """Summed CE of ONE unpadded sample over exactly the kept tokens, every position (hand-built masks)."""
    hidden, cols = reference_hidden(model, seq, features, kept, starts, positions, IMAGE_ID)
    logits = model.lm_head(hidden)[0]
    kept_labels = torch.tensor([labels[c] for c in cols])
    return F.cross_entropy(logits[:-1], kept_labels[1:], ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("positions", ["keep", "renumber"])
def test_labels_follow_the_kept_tokens(tiny_llava: LlavaForConditionalGeneration, positions: str) -> None:
    prof = profile(
        vision={"dominant": 300, "contextual": 7, "contextual_mode": "pooled"},
        llm={
            "at_depth": [0.5, 0.75],
            "keep_ratios": [0.5, 0.25],
            "queries": "after_image",
            "positions": positions,
        },
    )
    batch = with_labels(batch_inputs(307))
    with apply_profile(tiny_llava, prof) as session:
        parts = reduced_loss(tiny_llava, session, batch)
        kept = [[d[2] for d in row.drops] for row in session.recorder.rows]
        with torch.no_grad():
            features = tiny_llava.model.get_image_features(batch["pixel_values"]).pooler_output
    assert [[len(k) for k in row] for row in kept] == [[153, 76]] * 3
    assert parts.visual_token_layers == 3 * (4 * 307 + 2 * 153 + 2 * 76)
    total = torch.tensor(0.0)
    for row in range(3):
        real = batch["attention_mask"][row].bool()
        seq = batch["input_ids"][row][real].tolist()
        labels = batch["labels"][row][real].tolist()
        total += reference_loss(tiny_llava, seq, labels, features[row], kept[row], [0, 4, 6], positions)
    torch.testing.assert_close(parts.loss_sum.detach(), total, rtol=1e-4, atol=1e-4)
    parts.loss_sum.backward()  # gradients flow through the kept tokens
    grad = tiny_llava.model.language_model.layers[7].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    tiny_llava.zero_grad(set_to_none=True)
