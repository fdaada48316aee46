"""Trace arithmetic, batch-vs-single and cache-vs-recompute invariants (DESIGN.md section 8).

The cache-free reference below is written independently of duet's hooks: it runs the stock decoder
layers one by one on exactly the kept tokens of each segment, with a hand-built causal mask, one
sample at a time (no padding), and decodes greedily by recomputing everything at every step.
"""

from __future__ import annotations

import pytest
import torch
from reference import reference_hidden
from tiny import IMAGE_ID, PAD_ID, batch_inputs, profile
from transformers import LlavaForConditionalGeneration

from duet_cli.engine.session import apply_profile
from duet_cli.runtime import Prompt, assemble_trace

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

STEPS = 6


def duet_like(queries: str = "after_image", positions: str = "renumber", ratios=(0.5, 0.0)):  # type: ignore[no-untyped-def]
    return profile(
        "duet-like",
        vision={"dominant": 300, "contextual": 7, "contextual_mode": "pooled", "cluster_width": 4},
        llm={
            "at_depth": [0.5, 0.75],
            "keep_ratios": list(ratios),
            "queries": queries,
            "positions": positions,
        },
    )


def generated(out: torch.Tensor, inputs: dict) -> list[list[int]]:
    return out[:, inputs["input_ids"].shape[1] :].tolist()


def run_traced(model, prof, inputs, **gen):  # type: ignore[no-untyped-def]
    with torch.no_grad(), apply_profile(model, prof) as session:
        out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, **gen)
        n = inputs["input_ids"].shape[0]
        trace = assemble_trace(session, [Prompt("q", [None])] * n, len(session.recorder.rows) // n)  # type: ignore[list-item]
    return generated(out, inputs), trace


# -- arithmetic -----------------------------------------------------------------------------------


def test_shipped_duet_192_on_depth_8(tiny_llava: LlavaForConditionalGeneration) -> None:
    _, trace = run_traced(tiny_llava, "duet-192", batch_inputs(307))
    for sample in trace.samples:
        assert sample.visual_tokens_in == 307
        assert [len(img.dominant) for img in sample.images] == [300]
        assert [len(img.contextual) for img in sample.images] == [7]
        assert sample.ledger == [307] * 4 + [153] * 2 + [0] * 2
        assert sample.avg_visual_tokens == 191.75
        assert [(d.layer, d.n_before, len(d.kept)) for d in sample.drops] == [(4, 307, 153), (6, 153, 0)]


def test_ledger_matches_profile_arithmetic_for_odd_ratios(tiny_llava: LlavaForConditionalGeneration) -> None:
    # floor(102 * 0.29) = 29 exactly (float arithmetic gives 29.58 -> 29; 0.29 * 100 would give 28.999...)
    prof = profile(
        "odd",
        vision={"dominant": 72, "contextual": 30},
        llm={"layers": [3, 5, 7], "keep_ratios": [0.29, 0.1563, 0.01]},
    )
    _, trace = run_traced(tiny_llava, prof, batch_inputs(102, [0]))
    # hand-worked: floor(102*0.29)=29, floor(102*0.1563)=15 (15.94), floor(102*0.01)=1 (1.02)
    assert trace.samples[0].ledger == [102] * 3 + [29] * 2 + [15] * 2 + [1]
    assert trace.samples[0].avg_visual_tokens == (3 * 102 + 2 * 29 + 2 * 15 + 1) / 8


# -- batch vs single ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queries", "positions"), [("after_image", "renumber"), ("last", "keep"), ("all", "keep")]
)
def test_batched_equals_one_by_one(
    tiny_llava: LlavaForConditionalGeneration, queries: str, positions: str
) -> None:
    prof = duet_like(queries, positions, ratios=(0.5, 0.25))
    batch_text, batch_trace = run_traced(tiny_llava, prof, batch_inputs(307))
    assert len({len(r) for r in batch_inputs(307)["attention_mask"].sum(1, keepdim=True).tolist()}) == 1
    for i in range(3):
        text, trace = run_traced(tiny_llava, prof, batch_inputs(307, [i]))
        assert text[0] == batch_text[i]
        single, batched = trace.samples[0], batch_trace.samples[i]
        assert single.images[0].dominant == batched.images[0].dominant
        assert single.images[0].contextual == batched.images[0].contextual
        assert [d.kept for d in single.drops] == [d.kept for d in batched.drops]


def test_batched_beam_search_equals_one_by_one(tiny_llava: LlavaForConditionalGeneration) -> None:
    prof = duet_like(ratios=(0.5, 0.25))
    batch_text, _ = run_traced(tiny_llava, prof, batch_inputs(307), num_beams=3)
    for i in range(3):
        text, _ = run_traced(tiny_llava, prof, batch_inputs(307, [i]), num_beams=3)
        assert text[0] == batch_text[i]


# -- cache vs recompute ---------------------------------------------------------------------------


@torch.no_grad()
def reference_logits(model, seq, features, kept, starts, positions):  # type: ignore[no-untyped-def]
    """Last-position logits of ONE unpadded sequence, recomputed from scratch over fixed kept tokens."""
    hidden, _ = reference_hidden(model, seq, features, kept, starts, positions, IMAGE_ID)
    logits = model.lm_head(hidden)[0, -1]
    logits[[IMAGE_ID, PAD_ID]] = float("-inf")  # the tiny model's generation_config suppresses them
    return logits


def reference_greedy(model, input_ids, features, kept, starts, positions, steps):  # type: ignore[no-untyped-def]
    """Cache-free greedy decoding: every step recomputes the whole sequence."""
    seq = input_ids.tolist()
    out: list[int] = []
    for _ in range(steps):
        token = int(reference_logits(model, seq, features, kept, starts, positions).argmax())
        out.append(token)
        seq.append(token)
    return out


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("which", [[0, 1, 2], [1]], ids=["padded-batch", "single-no-padding"])
def test_cached_greedy_equals_cache_free_reference(
    tiny_llava: LlavaForConditionalGeneration, positions: str, which: list[int]
) -> None:
    """Every decoding step's logits (not just the argmax) match the from-scratch recomputation."""
    prof = duet_like("after_image", positions, ratios=(0.5, 0.25))
    inputs = batch_inputs(307, which)
    with torch.no_grad(), apply_profile(tiny_llava, prof) as session:
        out = tiny_llava.generate(
            **inputs, max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
        kept_rows = [[d[2] for d in row.drops] for row in session.recorder.rows]
        features = tiny_llava.model.get_image_features(inputs["pixel_values"]).pooler_output
    text = generated(out.sequences, inputs)
    for row in range(len(which)):
        seq = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
        assert [len(k) for k in kept_rows[row]] == [153, 76]
        for step in range(STEPS):
            ref = reference_logits(tiny_llava, seq, features[row], kept_rows[row], [0, 4, 6], positions)
            got = out.logits[step][row].clone()
            got[[IMAGE_ID, PAD_ID]] = float("-inf")
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"row {row} step {step}")
            seq.append(text[row][step])


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("which", [[0, 1, 2], [2]], ids=["padded-batch", "single-no-padding"])
def test_cached_beam_search_equals_cache_free_replay(
    tiny_llava: LlavaForConditionalGeneration, positions: str, which: list[int]
) -> None:
    """Beam search with the ragged cache equals beam search recomputing everything (use_cache=False)
    with the same kept tokens forced at every step; the single case has no padding and no cache, where
    transformers would read gapped positions as packed sequences if the mask were not explicit."""
    prof = duet_like("last", positions, ratios=(0.5, 0.25))
    inputs = batch_inputs(307, which)
    with torch.no_grad(), apply_profile(tiny_llava, prof) as session:
        beam = {"max_new_tokens": STEPS, "num_beams": 3, "do_sample": False, "return_dict_in_generate": True}
        cached = tiny_llava.generate(**inputs, output_scores=True, **beam)
        rows = session.recorder.rows
        assert session.llm is not None
        session.llm.forced = [[rows[p * 3].drops[s][2] for p in range(len(which))] for s in range(2)]
        replay = tiny_llava.generate(**inputs, output_scores=True, use_cache=False, **beam)
        session.llm.forced = None
    assert generated(cached.sequences, inputs) == generated(replay.sequences, inputs)
    torch.testing.assert_close(cached.sequences_scores, replay.sequences_scores, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_forward_without_cache_and_padding_matches_reference_logits(
    tiny_llava: LlavaForConditionalGeneration,
) -> None:
    """One prompt, no padding, no cache, gapped positions (keep mode): last-token logits vs the reference."""
    prof = duet_like("after_image", "keep", ratios=(0.5, 0.25))
    inputs = batch_inputs(307, [0])
    del inputs["attention_mask"]
    with apply_profile(tiny_llava, prof) as session:
        logits = tiny_llava(**inputs, use_cache=False).logits[0, -1]
        kept = [d[2] for d in session.recorder.rows[0].drops]
        features = tiny_llava.model.get_image_features(inputs["pixel_values"]).pooler_output[0]
    ref = reference_logits(tiny_llava, inputs["input_ids"][0].tolist(), features, kept, [0, 4, 6], "keep")
    logits[[IMAGE_ID, PAD_ID]] = float("-inf")
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
