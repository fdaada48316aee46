"""Stage 1 on the model: SDPA pre-hook scoring equals eager attention maps; features equal a naive merge."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import pixels, profile
from transformers import LlavaForConditionalGeneration

from duet_cli.engine.session import apply_profile

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)


@pytest.fixture(scope="module")
def eager_twin(tiny_llava: LlavaForConditionalGeneration) -> LlavaForConditionalGeneration:
    config = copy.deepcopy(tiny_llava.config)
    config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    twin = LlavaForConditionalGeneration(config).eval()
    twin.load_state_dict(tiny_llava.state_dict())
    return twin


@pytest.mark.parametrize("mode", ["uniform", "pooled"])
@torch.no_grad()
def test_stage1_matches_eager_attention_reference(
    tiny_llava: LlavaForConditionalGeneration, eager_twin: LlavaForConditionalGeneration, mode: str
) -> None:
    d, c = 54, 10
    px = pixels(2, seed=3)
    vision = {"dominant": d, "contextual": c, "contextual_mode": mode}
    with apply_profile(tiny_llava, profile(vision=vision)) as session:
        features = tiny_llava.model.get_image_features(px).pooler_output
        selections = list(session.recorder.images)
    assert tiny_llava.config.vision_config._attn_implementation == "sdpa"  # the tower stayed on SDPA

    # naive reference: eager attention maps of the penultimate layer, hidden_states[-2], plain loops
    out = eager_twin.model.vision_tower(px, output_attentions=True, output_hidden_states=True)
    attn = out.attentions[-2]  # (B, H, 577, 577): layer whose output is hidden_states[-2]
    hidden = out.hidden_states[-2]
    layer = eager_twin.model.vision_tower.encoder.layers[-2]
    normed = layer.layer_norm1(out.hidden_states[-3])
    keys = layer.self_attn.k_proj(normed).view(2, 577, 4, -1).mean(dim=2)
    checked = 0
    for b, sel in enumerate(selections):
        score = attn[b, :, 0, :].sum(dim=0)
        order = sorted(range(1, 577), key=lambda i: (-float(score[i]), i))
        dominant = sorted([0, *order[: d - 1]])
        gap = float(score[order[d - 2]] - score[order[d - 1]])
        if gap < 1e-5:  # a near-tie at the cut: SDPA and eager may legitimately disagree
            continue
        assert sel.dominant == dominant
        rest = order[d - 1 :]
        if mode == "uniform":
            remaining = sorted(rest)
            step = max(1, len(remaining) // c)
            targets = remaining[::step][:c]
            pool = remaining
        else:
            pool = rest[: min(max(1, 4 * c), len(rest))]
            step = max(1, len(pool) // c)
            targets = pool[::step][:c]
        assert [g.target for g in sel.contextual] == targets
        unit = torch.nn.functional.normalize(keys[b], dim=-1)
        members: dict[int, list[int]] = {t: [] for t in targets}
        for tok in pool:
            if tok not in members:
                sims = [float(unit[tok] @ unit[t]) for t in targets]
                members[targets[sims.index(max(sims))]].append(tok)
        assert [g.members for g in sel.contextual] == [sorted(members[t]) for t in targets]
        merged = [hidden[b, t] + (hidden[b, members[t]].mean(0) if members[t] else 0) for t in targets]
        tokens = torch.stack([*(hidden[b, i] for i in dominant), *merged])
        expected = eager_twin.model.multi_modal_projector(tokens)
        torch.testing.assert_close(features[b], expected, rtol=1e-4, atol=1e-4)
        checked += 1
    assert checked >= 1
