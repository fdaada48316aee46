"""DESIGN.md section 8 on a tiny Qwen2.5-VL built in code (stage 2; M-RoPE, GQA, dynamic resolution):
stock equivalence, reversibility, batch (images of different sizes, a two-image prompt) vs one by one,
cached decoding vs an independent cache-free reference over 3-D positions, ranking vs a hand-written
M-RoPE reference, and per-sample counts."""

from __future__ import annotations

import pytest
import torch
from reference import model_snapshot
from tiny_qwen import (
    GRIDS,
    IMAGE_ID,
    SUPPRESSED,
    batch_inputs,
    build_tiny_qwen,
    merged_tokens,
    profile,
)
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

from duet_cli.engine.session import apply_profile
from duet_cli.errors import UnsupportedSetupError
from duet_cli.families import get_adapter
from duet_cli.profiles import load_profile, parse_profile, resolve_profile

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

GEN = {"max_new_tokens": 4, "do_sample": False}
STARTS = [0, 4, 6]  # at_depth [0.5, 0.75] on depth 8


@pytest.fixture(scope="module")
def model() -> Qwen2_5_VLForConditionalGeneration:
    return build_tiny_qwen(seed=0, depth=8)


def pdrop(queries: str = "last", ratios=(0.5, 0.25)):  # type: ignore[no-untyped-def]
    return profile(
        "qwen-pdrop-like",
        llm={"at_depth": [0.5, 0.75], "keep_ratios": list(ratios), "queries": queries, "positions": "keep"},
    )


def n0(which: int) -> int:
    return sum(merged_tokens(g) for g in GRIDS[which])


# -- stock equivalence -----------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("prof", ["baseline", "keep-all"], ids=["baseline", "llm-stage-keeping-everything"])
def test_profile_keeping_everything_is_the_stock_model(
    model: Qwen2_5_VLForConditionalGeneration, prof: str
) -> None:
    inputs = batch_inputs()
    ref_logits = model(**inputs).logits
    ref_text = model.generate(**inputs, **GEN)
    chosen = load_profile("baseline") if prof == "baseline" else pdrop("after_image", ratios=(1.0, 1.0))
    with apply_profile(model, chosen) as session:
        logits = model(**inputs).logits
        text = model.generate(**inputs, **GEN)
        if prof == "keep-all":
            assert [[len(d[2]) for d in row.drops] for row in session.recorder.rows] == [
                [n0(i), n0(i)] for i in range(3)
            ]
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[mask], ref_logits[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(text, ref_text)


@torch.no_grad()
def test_apply_and_remove_leaves_the_model_exactly_as_it_was(
    model: Qwen2_5_VLForConditionalGeneration,
) -> None:
    inputs = batch_inputs([2])
    stock = modeling_qwen2_5_vl.Qwen2_5_VLModel.__dict__["get_image_features"]
    before_tensors, before_modules = model_snapshot(model)
    ref = model(**inputs).logits
    with apply_profile(model, pdrop()):
        assert "get_image_features" in vars(model.model)  # timed on the instance ...
        assert (
            modeling_qwen2_5_vl.Qwen2_5_VLModel.__dict__["get_image_features"] is stock
        )  # ... not the class
        model.generate(**batch_inputs(), **GEN)
    after_tensors, after_modules = model_snapshot(model)
    assert after_modules == before_modules
    assert all(torch.equal(before_tensors[k], after_tensors[k]) for k in before_tensors)
    assert torch.equal(model(**inputs).logits, ref)


def test_unsupported_settings_fail_with_one_clear_sentence(model: Qwen2_5_VLForConditionalGeneration) -> None:
    renumber = profile(
        "r", llm={"at_depth": [0.5], "keep_ratios": [0.5], "queries": "last", "positions": "renumber"}
    )
    with (
        pytest.raises(UnsupportedSetupError, match="renumber is not defined for M-RoPE"),
        apply_profile(model, renumber),
    ):
        pass
    pool_stage = parse_profile({"vision": {"method": "pool", "grid": 4}}, where="r", default_name="r")
    with (
        pytest.raises(
            UnsupportedSetupError, match=r"'pool' is not available for Qwen2\.5-VL .*no single 3-D"
        ),
        apply_profile(model, pool_stage),
    ):
        pass
    assert "_duet_session" not in vars(model)


# -- batch vs single -------------------------------------------------------------------------------


@pytest.mark.parametrize("queries", ["last", "after_image", "all"])
def test_batched_equals_one_by_one(model: Qwen2_5_VLForConditionalGeneration, queries: str) -> None:
    """Three prompts (images of different sizes, one prompt with two images), left-padded together."""
    prof = pdrop(queries)
    with torch.no_grad(), apply_profile(model, prof) as session:
        batch = model.generate(**batch_inputs(), **GEN)[:, -GEN["max_new_tokens"] :]
        batch_kept = [[d[2] for d in row.drops] for row in session.recorder.rows]
        for i in range(3):
            single = model.generate(**batch_inputs([i]), **GEN)[:, -GEN["max_new_tokens"] :]
            kept = [d[2] for d in session.recorder.rows[0].drops]
            assert torch.equal(single[0], batch[i]), f"prompt {i}"
            assert kept == batch_kept[i], f"prompt {i}"
            assert [len(k) for k in kept] == [n0(i) // 2, n0(i) // 4]  # actual per-sample counts


# -- cache vs recompute ----------------------------------------------------------------------------


@torch.no_grad()
def reference_logits(model, seq, grids, features, kept, starts):  # type: ignore[no-untyped-def]
    """Last-position logits of ONE unpadded sequence, from scratch over fixed kept tokens: 3-D positions
    from the stock get_rope_index on the whole sequence, gathered with the kept columns."""
    lm = model.model.language_model
    ids = torch.tensor([seq])
    pos3, _ = model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == IMAGE_ID).int(), image_grid_thw=torch.tensor(grids)
    )
    h = lm.embed_tokens(ids)
    visual = ids[0] == IMAGE_ID
    h[0, visual] = features.to(h.dtype)
    vis_index = torch.cumsum(visual.long(), 0) - 1
    cols = list(range(len(seq)))
    for i, layer in enumerate(lm.layers):
        if i in starts[1:]:
            keep_vis = set(kept[starts.index(i) - 1])
            keep = [j for j, c in enumerate(cols) if not visual[c] or int(vis_index[c]) in keep_vis]
            h, cols = h[:, keep], [cols[j] for j in keep]
        n = len(cols)
        pos = pos3[:, :, cols]
        mask = torch.full((n, n), float("-inf")).triu(1).view(1, 1, n, n)
        h = layer(h, attention_mask=mask, position_embeddings=lm.rotary_emb(h, pos))
    logits = model.lm_head(lm.norm(h))[0, -1]
    logits[SUPPRESSED] = float("-inf")
    return logits


@pytest.mark.parametrize("which", [[0, 1, 2], [2]], ids=["padded-batch", "two-images-no-padding"])
def test_cached_greedy_equals_cache_free_reference(
    model: Qwen2_5_VLForConditionalGeneration, which: list[int]
) -> None:
    """Every step's logits match the recomputation: decode positions (rope deltas) stay right."""
    inputs = batch_inputs(which)
    with torch.no_grad(), apply_profile(model, pdrop("after_image")) as session:
        out = model.generate(**inputs, **GEN, return_dict_in_generate=True, output_logits=True)
        kept_rows = [[d[2] for d in row.drops] for row in session.recorder.rows]
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    per_image = list(features.pooler_output)
    text = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    cursor = 0
    for row, prompt in enumerate(which):
        grids = GRIDS[prompt]
        row_features = torch.cat(per_image[cursor : cursor + len(grids)])
        cursor += len(grids)
        seq = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
        for step in range(GEN["max_new_tokens"]):
            ref = reference_logits(model, seq, grids, row_features, kept_rows[row], STARTS)
            got = out.logits[step][row].clone()
            got[SUPPRESSED] = float("-inf")
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"row {row} step {step}")
            seq.append(text[row][step])


@torch.no_grad()
def test_forward_without_cache_and_padding_matches_reference(
    model: Qwen2_5_VLForConditionalGeneration,
) -> None:
    """No padding, no cache, gapped 3-D positions: the last-token logits equal the reference."""
    inputs = batch_inputs([0])
    del inputs["attention_mask"]
    with apply_profile(model, pdrop("after_image")) as session:
        logits = model(**inputs, use_cache=False).logits[0, -1]
        kept = [d[2] for d in session.recorder.rows[0].drops]
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    ref = reference_logits(
        model, inputs["input_ids"][0].tolist(), GRIDS[0], features.pooler_output[0], kept, STARTS
    )
    logits[SUPPRESSED] = float("-inf")
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


def test_cached_beam_search_equals_cache_free_replay(model: Qwen2_5_VLForConditionalGeneration) -> None:
    inputs = batch_inputs()
    beam = {"num_beams": 2, "return_dict_in_generate": True, "output_scores": True}
    with torch.no_grad(), apply_profile(model, pdrop("last")) as session:
        cached = model.generate(**inputs, **GEN, **beam)
        rows = session.recorder.rows
        assert session.llm is not None
        session.llm.forced = [[rows[p * 2].drops[s][2] for p in range(3)] for s in range(2)]
        replay = model.generate(**inputs, **GEN, **beam, use_cache=False)
        session.llm.forced = None
    assert torch.equal(cached.sequences, replay.sequences)
    torch.testing.assert_close(cached.sequences_scores, replay.sequences_scores, rtol=1e-4, atol=1e-4)


# -- ranking with M-RoPE ---------------------------------------------------------------------------


def mrope_rotate(x: torch.Tensor, pos3: torch.Tensor, theta: float, sections: list[int]) -> torch.Tensor:
    """Rotate x (H, L, hd) by 3-D positions pos3 (3, L), written out by hand: frequency pair i uses the
    temporal, height or width position according to the section it falls in (sections sum to hd/2)."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    which = torch.repeat_interleave(torch.arange(3), torch.tensor(sections))  # (hd/2,) row per pair
    angle = pos3.float()[which].T * inv  # (L, hd/2)
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    half = hd // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


@torch.no_grad()
def test_stage2_ranking_matches_a_naive_mrope_reference(model: Qwen2_5_VLForConditionalGeneration) -> None:
    """The kept tokens at the first drop are the top of a hand-written score: the layer's input norm and
    q/k projections (with bias), M-RoPE by hand, GQA, causal fp32 softmax, mean over heads, last row."""
    inputs = batch_inputs([2])
    captured: dict = {}
    lm = model.model.language_model

    def grab(module, args, kwargs):  # type: ignore[no-untyped-def]
        captured.setdefault("hidden", (args[0] if args else kwargs["hidden_states"]).clone())

    handle = lm.layers[4].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)  # stock: the hidden states entering layer 5
    finally:
        handle.remove()
    with apply_profile(model, pdrop("last")) as session:
        model(**inputs)
        kept = session.recorder.rows[0].drops[0][2]
    ids = inputs["input_ids"]
    pos3, _ = model.model.get_rope_index(
        ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    layer = lm.layers[4]
    attn = layer.self_attn
    x = layer.input_layernorm(captured["hidden"])[0]
    length, hd = x.shape[0], attn.head_dim
    q = attn.q_proj(x).view(length, -1, hd).transpose(0, 1)
    k = attn.k_proj(x).view(length, -1, hd).transpose(0, 1)
    cfg = model.config.text_config.rope_parameters
    q = mrope_rotate(q, pos3[:, 0], cfg["rope_theta"], cfg["mrope_section"])
    k = mrope_rotate(k, pos3[:, 0], cfg["rope_theta"], cfg["mrope_section"])
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    scores = ((q[:, -1:] @ k.transpose(-1, -2)).float() * hd**-0.5).softmax(-1).mean(0)[0]  # (L,)
    visual = ids[0] == IMAGE_ID
    vis_scores = scores[visual]
    top = torch.sort(vis_scores, descending=True, stable=True).indices[: n0(2) // 2]
    assert kept == sorted(top.tolist())
    # the M-RoPE rows matter: 1-D positions would rank differently somewhere in this prompt
    assert not torch.equal(pos3[0], pos3[1])


# -- profiles and dims -----------------------------------------------------------------------------


def test_dims_and_shipped_profile_arithmetic(model: Qwen2_5_VLForConditionalGeneration) -> None:
    adapter = get_adapter(model)
    dims = adapter.dims(model)
    assert dims.family == "qwen2_5_vl" and dims.dynamic_resolution and not dims.has_cls
    assert adapter.rope_rows == 3
    resolved = resolve_profile(load_profile("qwen-pdrop-50"), dims)
    assert resolved.llm_layers == [2, 4, 6]
    from duet_cli.catalog import dims_for

    seven = dims_for("qwen2.5-vl-7b")
    assert (seven.num_layers, seven.unreduced_tokens) == (28, 1024)
    on_7b = resolve_profile(load_profile("qwen-pdrop-50"), seven)
    assert on_7b.llm_layers == [7, 14, 21]
    assert on_7b.avg_visual_tokens(1024) == 511.75
    assert dims_for("qwen2.5-vl-3b").num_layers == 36
