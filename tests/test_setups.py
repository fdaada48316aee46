"""Model set-ups users try: each works with a profile or is refused up front with a clear message."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import batch_inputs, profile
from transformers import LlavaForConditionalGeneration

from duet_cli.engine.session import apply_profile
from duet_cli.errors import UnsupportedSetupError

DUET = profile(
    "duet",
    vision={"dominant": 300, "contextual": 7, "contextual_mode": "pooled"},
    llm={"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.0], "queries": "after_image"},
)
VISION_ONLY = profile("vz", vision={"dominant": 300, "contextual": 7})


def test_static_cache_is_refused_for_llm_stage_only(tiny_llava: LlavaForConditionalGeneration) -> None:
    model = copy.deepcopy(tiny_llava)
    model.generation_config.cache_implementation = "static"
    with (
        pytest.raises(UnsupportedSetupError, match="cache_implementation='static'"),
        apply_profile(model, DUET),
    ):
        pass
    with apply_profile(model, VISION_ONLY), torch.no_grad():
        out = model.generate(**batch_inputs(307, [0]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch_inputs(307, [0])["input_ids"].shape[1] + 3


def test_static_cache_passed_to_generate_is_refused(tiny_llava: LlavaForConditionalGeneration) -> None:
    with (
        apply_profile(tiny_llava, DUET),
        torch.no_grad(),
        pytest.raises(UnsupportedSetupError, match="DynamicCache"),
    ):
        tiny_llava.generate(**batch_inputs(307, [0]), max_new_tokens=3, cache_implementation="static")


def test_compiled_model_is_refused(tiny_llava: LlavaForConditionalGeneration) -> None:
    compiled = torch.compile(tiny_llava)
    with pytest.raises(UnsupportedSetupError, match=r"torch\.compile"), apply_profile(compiled, VISION_ONLY):
        pass


def test_decoder_split_over_devices_is_refused(tiny_llava: LlavaForConditionalGeneration) -> None:
    model = copy.deepcopy(tiny_llava)
    model.hf_device_map = {
        "model.vision_tower": 0,
        "model.language_model.layers.0": 0,
        "model.language_model.layers.1": 1,
    }
    with pytest.raises(UnsupportedSetupError, match="one device"), apply_profile(model, DUET):
        pass
    model.hf_device_map = {"model.vision_tower": 0, "model.language_model": 0, "lm_head": 0}
    with apply_profile(model, DUET):  # everything on one device: accepted
        pass


def test_assisted_decoding_is_refused_at_decode(tiny_llava: LlavaForConditionalGeneration) -> None:
    with (
        apply_profile(tiny_llava, DUET),
        torch.no_grad(),
        pytest.raises(UnsupportedSetupError, match="one token at a time"),
    ):
        tiny_llava.generate(
            **batch_inputs(307, [0]), max_new_tokens=6, prompt_lookup_num_tokens=2, do_sample=False
        )


def test_bfloat16_and_sampling_run_with_a_profile(tiny_llava: LlavaForConditionalGeneration) -> None:
    model = copy.deepcopy(tiny_llava).to(torch.bfloat16)
    inputs = batch_inputs(307)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with apply_profile(model, DUET) as session, torch.no_grad():
        torch.manual_seed(0)
        a = model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5)
        torch.manual_seed(0)
        b = model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5)
        counts = [[len(d[2]) for d in row.drops] for row in session.recorder.rows]
    assert torch.equal(a, b)
    assert counts == [[153, 0]] * 3


def test_labels_under_an_llm_stage_are_refused(tiny_llava: LlavaForConditionalGeneration) -> None:
    inputs = batch_inputs(307, [0])
    with apply_profile(tiny_llava, DUET), pytest.raises(UnsupportedSetupError, match="labels"):
        tiny_llava(**inputs, labels=inputs["input_ids"])
