"""Stock-model equivalence and reversibility (DESIGN.md section 8), against the unmodified model."""

from __future__ import annotations

import copy

import pytest
import torch
from reference import model_snapshot
from tiny import IMAGE_ID, batch_inputs, profile
from transformers import LlavaForConditionalGeneration
from transformers.models.llava import modeling_llava

from duet_cli.engine.session import apply_profile
from duet_cli.errors import HookError

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

GEN = {"max_new_tokens": 8, "do_sample": False}


def valid_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits[mask.bool()]


@torch.no_grad()
def test_baseline_profile_is_the_stock_model(tiny_llava: LlavaForConditionalGeneration) -> None:
    inputs = batch_inputs(576)
    ref_logits = tiny_llava(**inputs).logits
    ref_text = tiny_llava.generate(**inputs, **GEN)
    with apply_profile(tiny_llava, profile("baseline")):
        logits = tiny_llava(**inputs).logits
        text = tiny_llava.generate(**inputs, **GEN)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(text, ref_text)


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("queries", ["last", "after_image", "all"])
@torch.no_grad()
def test_llm_stage_keeping_everything_is_the_stock_model(
    tiny_llava: LlavaForConditionalGeneration, queries: str, positions: str
) -> None:
    inputs = batch_inputs(576)
    ref_logits = tiny_llava(**inputs).logits
    ref_greedy = tiny_llava.generate(**inputs, **GEN)
    ref_beam = tiny_llava.generate(**inputs, num_beams=3, **GEN)
    llm = {"layers": [2, 5], "keep_ratios": [1.0, 1.0], "queries": queries, "positions": positions}
    with apply_profile(tiny_llava, profile(llm=llm)) as session:
        logits = tiny_llava(**inputs).logits
        greedy = tiny_llava.generate(**inputs, **GEN)
        beam = tiny_llava.generate(**inputs, num_beams=3, **GEN)
        kept = [len(d[2]) for row in session.recorder.rows for d in row.drops]
    assert kept and all(n == 576 for n in kept)  # the drop machinery ran and kept every token
    mask = inputs["attention_mask"]
    torch.testing.assert_close(
        valid_logits(logits, mask), valid_logits(ref_logits, mask), rtol=1e-5, atol=1e-5
    )
    assert torch.equal(greedy, ref_greedy)
    assert torch.equal(beam, ref_beam)


@torch.no_grad()
def test_vision_stage_keeping_every_token_is_stock_full_strategy(
    tiny_llava: LlavaForConditionalGeneration,
) -> None:
    config = copy.deepcopy(tiny_llava.config)
    config.vision_feature_select_strategy = "full"
    full = LlavaForConditionalGeneration(config).eval()
    full.load_state_dict(tiny_llava.state_dict())
    full.generation_config = copy.deepcopy(tiny_llava.generation_config)
    inputs = batch_inputs(577)
    ref_logits = full(**inputs).logits
    ref_text = full.generate(**inputs, **GEN)
    with apply_profile(tiny_llava, profile(vision={"dominant": 577, "contextual": 0})) as session:
        logits = tiny_llava(**inputs).logits
        text = tiny_llava.generate(**inputs, **GEN)
        assert session.recorder.images[0].dominant == list(range(577))
    mask = inputs["attention_mask"]
    torch.testing.assert_close(
        valid_logits(logits, mask), valid_logits(ref_logits, mask), rtol=1e-5, atol=1e-5
    )
    assert torch.equal(text, ref_text)


@torch.no_grad()
def test_apply_and_remove_leaves_the_model_exactly_as_it_was(
    tiny_llava: LlavaForConditionalGeneration,
) -> None:
    inputs = batch_inputs(576)
    class_method = modeling_llava.LlavaModel.__dict__["get_image_features"]
    before_tensors, before_modules = model_snapshot(tiny_llava)
    ref = tiny_llava(**inputs).logits
    duet = profile(
        vision={"dominant": 300, "contextual": 7, "contextual_mode": "pooled"},
        llm={"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.0], "queries": "after_image"},
    )
    with apply_profile(tiny_llava, duet):
        assert "get_image_features" in vars(tiny_llava.model)  # swapped on the instance ...
        assert modeling_llava.LlavaModel.__dict__["get_image_features"] is class_method  # ... never the class
        tiny_llava.generate(**batch_inputs(307), **GEN)
        with pytest.raises(HookError, match="already applied"), apply_profile(tiny_llava, duet):
            pass
    after_tensors, after_modules = model_snapshot(tiny_llava)
    assert after_modules == before_modules
    assert before_tensors.keys() == after_tensors.keys()
    assert all(torch.equal(before_tensors[k], after_tensors[k]) for k in before_tensors)
    assert torch.equal(tiny_llava(**inputs).logits, ref)


def test_missing_hook_point_fails_loudly(tiny_llava: LlavaForConditionalGeneration) -> None:
    broken = copy.deepcopy(tiny_llava)
    broken.model.vision_tower.encoder.layers = torch.nn.ModuleList()
    with (
        pytest.raises(HookError, match="hook point"),
        apply_profile(broken, profile(vision={"dominant": 64, "contextual": 0})),
    ):
        pass
    assert "get_image_features" not in vars(broken.model)


@torch.no_grad()
def test_image_token_count_mismatch_is_stock_error(tiny_llava: LlavaForConditionalGeneration) -> None:
    """Inputs must carry the reduced placeholder count; the stock check still guards it."""
    with (
        apply_profile(tiny_llava, profile(vision={"dominant": 64, "contextual": 0})),
        pytest.raises(ValueError, match="do not match"),
    ):
        tiny_llava(**batch_inputs(576))
    assert tiny_llava.config.image_token_id == IMAGE_ID
