"""The transformers compat module on whichever release is installed: the cache reaches every hook.

transformers 5.24 renamed the decoder's cache argument (`past_key_values` -> `cache`); a hook that reads
the wrong name sees no cache, takes every decode step for a new prefill, and wipes the trace. These tests
check the installed release against its own signatures and the real cache a generation leaves behind.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import transformers
from tiny import IMAGE_ID, batch_inputs
from transformers import LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaDecoderLayer, LlamaModel

from duet_cli import compat
from duet_cli.engine.session import apply_profile
from duet_cli.runtime import Prompt, assemble_trace

pytestmark = pytest.mark.invariant

STEPS = 5


def test_cache_kwarg_is_the_name_the_installed_decoder_takes() -> None:
    # independent of how compat finds it: the stock forwards' own parameter lists (unwrapped)
    name = compat.cache_kwarg()
    for forward in (LlamaModel.forward, LlamaDecoderLayer.forward, LlamaAttention.forward):
        params = inspect.signature(inspect.unwrap(forward)).parameters
        assert name in params, (forward.__qualname__, list(params))


def test_causal_mask_raises_no_deprecation_warning(recwarn: pytest.WarningsRecorder) -> None:
    config = LlamaModel.config_class(hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    config._attn_implementation = "sdpa"
    embeds = torch.zeros(2, 5, 16)
    mask2d = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    cache = transformers.DynamicCache(config=config)
    mask = compat.causal_mask(
        config=config,
        inputs_embeds=embeds,
        attention_mask=mask2d,
        cache=cache,
        position_ids=torch.arange(5).expand(2, 5),
        layer_idx=0,
    )
    assert mask is not None and mask.shape[-2:] == (5, 5)
    assert not mask[0, 0, 4, 0] and bool(mask[0, 0, 4, 1])  # padding column masked, causal otherwise
    assert [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


@pytest.mark.parametrize("which", [[0], [0, 1, 2]], ids=["single", "padded-batch"])
def test_duet_192_cache_lengths_follow_the_ledger(
    tiny_llava: LlavaForConditionalGeneration, which: list[int], one_thread: None
) -> None:
    """Every layer's cache holds exactly the tokens its segment kept, plus the decoded ones; the trace
    survives decoding. Fails when a hook reads the cache under the wrong name (decode looks like prefill)."""
    inputs = batch_inputs(307, which)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad(), apply_profile(tiny_llava, "duet-192") as session:
        out = tiny_llava.generate(
            **inputs,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            do_sample=False,
            return_dict_in_generate=True,
        )
        n = len(which)
        trace = assemble_trace(session, [Prompt("q", [None])] * n, len(session.recorder.rows) // n)  # type: ignore[list-item]
        decode_steps = session.recorder.decode_steps
    assert decode_steps == STEPS - 1
    for sample in trace.samples:
        assert sample.ledger == [307] * 4 + [153] * 2 + [0] * 2
    cache = compat.output_cache(out)
    assert cache is not None
    lengths = [int(layer.keys.shape[-2]) for layer in cache.layers]
    # hand-worked: each row's text tokens plus its segment's visual tokens, re-padded on the left to the
    # batch's widest row; the last generated token is not in the cache yet
    ids = inputs["input_ids"]
    text = ((ids != IMAGE_ID) & inputs["attention_mask"].bool()).sum(dim=1)
    want = [int((text + kept).max()) + STEPS - 1 for kept in trace.samples[0].ledger]
    assert prompt_len + STEPS - 1 == lengths[0]
    assert lengths == want


@pytest.mark.parametrize(
    ("version", "tested"),
    [
        ("5.23.0", True),
        ("5.24.0", True),
        ("5.25.0", True),
        ("5.25.1", True),
        ("5.22.2", False),
        ("5.26.0", False),
        ("5.40.0.dev0", False),
        ("6.0.0", False),
        ("4.57.6", False),
    ],
)
def test_untested_version_message(version: str, tested: bool) -> None:
    message = compat.untested_version_message(version)
    assert (message is None) == tested
    if message is not None:
        assert version in message and compat.TESTED_RANGE in message and "\n" not in message


def test_the_installed_release_is_tested() -> None:
    # the lock and the declared range agree: a fresh install never runs outside what the suite passed on
    assert compat.installed_version() == transformers.__version__
    assert compat.untested_version_message() is None, compat.installed_version()


@pytest.mark.parametrize("padded", [False, True])
def test_decode_mask_equals_create_causal_mask_on_sdpa(padded: bool) -> None:
    """The decode fast path (no create_causal_mask per segment and step) builds what transformers does."""
    config = LlamaModel.config_class(hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    config._attn_implementation = "sdpa"
    b, cached = 3, 6
    cache = transformers.DynamicCache(config=config)
    cache.update(torch.zeros(b, 2, cached, 8), torch.zeros(b, 2, cached, 8), 0)
    mask2d = torch.ones(b, cached + 1, dtype=torch.long)
    if padded:
        mask2d[1, :2] = 0  # left padding of row 1
    args = {
        "config": config,
        "inputs_embeds": torch.zeros(b, 1, 16),
        "attention_mask": mask2d,
        "cache": cache,
        "position_ids": torch.full((b, 1), cached),
        "layer_idx": 0,
    }
    ours = compat.decode_mask(**args, padded=padded, attn_implementation="sdpa")
    stock = compat.causal_mask(**args)
    if stock is None:
        assert ours is None
    else:
        assert ours is not None and ours.dtype == stock.dtype == torch.bool
        assert torch.equal(ours.expand_as(stock), stock)
    assert (ours is None) == (not padded)
