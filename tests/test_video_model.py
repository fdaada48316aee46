"""DESIGN.md section 8 on a tiny Video-LLaVA built in code: stock equivalence, reversibility, batch vs
single, cached decoding vs an independent cache-free reference, stage-2 ranking over every frame, and
the per-frame / all-frame token arithmetic of the video profiles."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from reference import model_snapshot, reference_hidden
from tiny_video import (
    FRAME_TOKENS,
    IMAGE_ID,
    IMAGE_TOKENS,
    PAD_ID,
    VIDEO_ID,
    build_tiny_video_llava,
    image_inputs,
    profile,
    video_inputs,
    video_pixels,
)
from transformers import VideoLlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llava import modeling_video_llava

from duet_cli.engine.session import apply_profile
from duet_cli.errors import HookError
from duet_cli.inputs.video import Video
from duet_cli.runtime import Prompt, assemble_trace

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

GEN = {"max_new_tokens": 4, "do_sample": False}
FRAMES = 4  # reduced-token tests: 4 frames; the arithmetic test uses 8
STOCK_FRAMES = 2  # tests on the unreduced 257 tokens per frame: 2 frames (514 tokens) keep them short
TWO = [0, 1]  # two prompts of different lengths: padded, mixed lengths
SUPPRESSED = [IMAGE_ID, VIDEO_ID, PAD_ID]


@pytest.fixture(scope="module")
def model() -> VideoLlavaForConditionalGeneration:
    return build_tiny_video_llava(seed=0, depth=8)


def duet_like(queries: str = "after_image", positions: str = "renumber", ratios=(0.5, 0.25)):  # type: ignore[no-untyped-def]
    return profile(
        "video-duet-like",
        vision={"dominant": 40, "contextual": 8, "contextual_mode": "pooled", "cluster_width": 4},
        llm={
            "at_depth": [0.5, 0.75],
            "keep_ratios": list(ratios),
            "queries": queries,
            "positions": positions,
        },
    )


def clip_prompts(n: int, frames: int) -> list[Prompt]:
    """Prompts with one clip of `frames` frames each, as assemble_trace needs them (no pixels)."""
    clip = Video("clip", [None] * frames, list(range(frames)), frames)  # type: ignore[list-item]
    return [Prompt("q", [], [clip]) for _ in range(n)]


def run_traced(model, prof, inputs, frames: int = FRAMES, **gen):  # type: ignore[no-untyped-def]
    with torch.no_grad(), apply_profile(model, prof) as session:
        out = model.generate(**inputs, **GEN, **gen)
        n = inputs["input_ids"].shape[0]
        trace = assemble_trace(session, clip_prompts(n, frames), len(session.recorder.rows) // n or 1)
    return out[:, inputs["input_ids"].shape[1] :].tolist(), trace


def valid(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits[mask.bool()]


# -- stock equivalence ------------------------------------------------------------------------------


@torch.no_grad()
def test_baseline_is_the_stock_model_on_video_and_images(model: VideoLlavaForConditionalGeneration) -> None:
    for inputs in (video_inputs(FRAME_TOKENS, STOCK_FRAMES, TWO), image_inputs(IMAGE_TOKENS, TWO)):
        ref_logits = model(**inputs).logits
        ref_text = model.generate(**inputs, **GEN)
        with apply_profile(model, profile("baseline")) as session:
            logits = model(**inputs).logits
            text = model.generate(**inputs, **GEN)
            assert session.tokens_per_frame == FRAME_TOKENS and session.tokens_per_image == IMAGE_TOKENS
        assert torch.equal(logits, ref_logits)
        assert torch.equal(text, ref_text)


@pytest.mark.parametrize(
    ("queries", "positions", "beams"), [("after_image", "renumber", True), ("last", "keep", False)]
)
@torch.no_grad()
def test_llm_stage_keeping_everything_is_the_stock_model(
    model: VideoLlavaForConditionalGeneration, queries: str, positions: str, beams: bool
) -> None:
    inputs = video_inputs(FRAME_TOKENS, STOCK_FRAMES, TWO)
    ref_logits = model(**inputs).logits
    ref_greedy = model.generate(**inputs, **GEN)
    ref_beam = model.generate(**inputs, num_beams=2, **GEN) if beams else None
    llm = {"layers": [2, 5], "keep_ratios": [1.0, 1.0], "queries": queries, "positions": positions}
    with apply_profile(model, profile(llm=llm)) as session:
        logits = model(**inputs).logits
        greedy = model.generate(**inputs, **GEN)
        beam = model.generate(**inputs, num_beams=2, **GEN) if beams else None
        kept = [len(d[2]) for row in session.recorder.rows for d in row.drops]
    assert kept and all(n == STOCK_FRAMES * FRAME_TOKENS for n in kept)
    mask = inputs["attention_mask"]
    torch.testing.assert_close(valid(logits, mask), valid(ref_logits, mask), rtol=1e-5, atol=1e-5)
    assert torch.equal(greedy, ref_greedy)
    if beams:
        assert ref_beam is not None and beam is not None and torch.equal(beam, ref_beam)


@torch.no_grad()
def test_vision_stage_keeping_every_token_is_the_stock_model(
    model: VideoLlavaForConditionalGeneration,
) -> None:
    """Frames keep CLS in the stock model, so 257 of 257 per frame is the stock video path itself;
    images drop CLS, so 257 of 257 per image equals the stock model with the "full" strategy."""
    keep_all = profile(vision={"dominant": FRAME_TOKENS, "contextual": 0})
    video = video_inputs(FRAME_TOKENS, STOCK_FRAMES, TWO)
    ref_logits, ref_text = model(**video).logits, model.generate(**video, **GEN)
    config = copy.deepcopy(model.config)
    config.vision_feature_select_strategy = "full"
    full = VideoLlavaForConditionalGeneration(config).eval()
    full.load_state_dict(model.state_dict())
    full.generation_config = copy.deepcopy(model.generation_config)
    images = image_inputs(FRAME_TOKENS, TWO)
    ref_image_logits, ref_image_text = full(**images).logits, full.generate(**images, **GEN)
    with apply_profile(model, keep_all) as session:
        logits, text = model(**video).logits, model.generate(**video, **GEN)
        frames = session.recorder.frames
        assert len(frames) == 2 * 2 * STOCK_FRAMES  # one selection per frame: forward, generate's encode
        assert all(sel.dominant == list(range(FRAME_TOKENS)) for sel in frames)
        image_logits, image_text = model(**images).logits, model.generate(**images, **GEN)
        assert len(session.recorder.images) == 2 * 2 and len(frames) == 2 * 2 * STOCK_FRAMES
    mask = video["attention_mask"]
    torch.testing.assert_close(valid(logits, mask), valid(ref_logits, mask), rtol=1e-5, atol=1e-5)
    assert torch.equal(text, ref_text)
    mask = images["attention_mask"]
    torch.testing.assert_close(valid(image_logits, mask), valid(ref_image_logits, mask), rtol=1e-5, atol=1e-5)
    assert torch.equal(image_text, ref_image_text)


@torch.no_grad()
def test_apply_and_remove_leaves_the_model_exactly_as_it_was(
    model: VideoLlavaForConditionalGeneration,
) -> None:
    inputs = video_inputs(FRAME_TOKENS, STOCK_FRAMES, which=[1])
    stock = modeling_video_llava.VideoLlavaModel.__dict__
    methods = {name: stock[name] for name in ("get_image_features", "get_video_features")}
    before_tensors, before_modules = model_snapshot(model)
    ref = model(**inputs).logits
    with apply_profile(model, duet_like()):
        for name, method in methods.items():
            assert name in vars(model.model)  # swapped on the instance ...
            assert modeling_video_llava.VideoLlavaModel.__dict__[name] is method  # ... never the class
        model.generate(**video_inputs(48, FRAMES, which=[1]), **GEN)
        with pytest.raises(HookError, match="already applied"), apply_profile(model, duet_like()):
            pass
    after_tensors, after_modules = model_snapshot(model)
    assert after_modules == before_modules
    assert all(torch.equal(before_tensors[k], after_tensors[k]) for k in before_tensors)
    assert torch.equal(model(**inputs).logits, ref)


# -- batch vs single --------------------------------------------------------------------------------


@pytest.mark.parametrize(("queries", "positions"), [("after_image", "renumber"), ("last", "keep")])
def test_batched_equals_one_by_one(
    model: VideoLlavaForConditionalGeneration, queries: str, positions: str
) -> None:
    prof = duet_like(queries, positions)
    batch_text, batch_trace = run_traced(model, prof, video_inputs(48, FRAMES))
    for i in range(3):
        text, trace = run_traced(model, prof, video_inputs(48, FRAMES, which=[i]))
        assert text[0] == batch_text[i]
        single, batched = trace.samples[0], batch_trace.samples[i]
        assert [f.dominant for f in single.frames] == [f.dominant for f in batched.frames]
        assert [f.contextual for f in single.frames] == [f.contextual for f in batched.frames]
        assert [d.kept for d in single.drops] == [d.kept for d in batched.drops]


# -- cache vs recompute -----------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def reference_logits(model, seq, features, kept, starts, positions):  # type: ignore[no-untyped-def]
    """Last-position logits of ONE unpadded sequence, recomputed from scratch over fixed kept tokens."""
    hidden, _ = reference_hidden(model, seq, features, kept, starts, positions, VIDEO_ID)
    logits = model.lm_head(hidden)[0, -1]
    logits[SUPPRESSED] = float("-inf")
    return logits


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("which", [[0, 1, 2], [1]], ids=["padded-batch", "single-no-padding"])
def test_cached_greedy_equals_cache_free_reference(
    model: VideoLlavaForConditionalGeneration, positions: str, which: list[int]
) -> None:
    """Every step's logits match a from-scratch recomputation over the same kept tokens of all frames."""
    inputs = video_inputs(48, FRAMES, which)
    with torch.no_grad(), apply_profile(model, duet_like("after_image", positions)) as session:
        out = model.generate(**inputs, **GEN, return_dict_in_generate=True, output_logits=True)
        kept_rows = [[d[2] for d in row.drops] for row in session.recorder.rows]
        features = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    n0 = FRAMES * 48
    text = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    for row in range(len(which)):
        seq = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
        row_features = features[row * FRAMES : (row + 1) * FRAMES].reshape(n0, -1)
        assert [len(k) for k in kept_rows[row]] == [n0 // 2, n0 // 4]
        for step in range(GEN["max_new_tokens"]):
            ref = reference_logits(model, seq, row_features, kept_rows[row], [0, 4, 6], positions)
            got = out.logits[step][row].clone()
            got[SUPPRESSED] = float("-inf")
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"row {row} step {step}")
            seq.append(text[row][step])


def test_cached_beam_search_equals_cache_free_replay(model: VideoLlavaForConditionalGeneration) -> None:
    """Beam search on the ragged cache equals beam search recomputing everything with the kept tokens
    forced (padded batch, keep positions)."""
    inputs = video_inputs(48, FRAMES)
    beam = {"num_beams": 2, "return_dict_in_generate": True, "output_scores": True}
    with torch.no_grad(), apply_profile(model, duet_like("last", "keep")) as session:
        cached = model.generate(**inputs, **GEN, **beam)
        rows = session.recorder.rows
        assert session.llm is not None
        session.llm.forced = [[rows[p * 2].drops[s][2] for p in range(3)] for s in range(2)]
        replay = model.generate(**inputs, **GEN, **beam, use_cache=False)
        session.llm.forced = None
    assert torch.equal(cached.sequences, replay.sequences)
    torch.testing.assert_close(cached.sequences_scores, replay.sequences_scores, rtol=1e-4, atol=1e-4)


# -- stage 2 ranks all frames together --------------------------------------------------------------


def naive_scores(model, hidden: torch.Tensor, layer_index: int, rows: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Text-to-token attention of one unpadded sequence (DESIGN.md section 5), written out by hand:
    the layer's input norm and q/k projections, rotary at positions 0..L-1, GQA, causal fp32 softmax,
    mean over heads, mean over the query rows. Returns (L,)."""
    lm = model.model.language_model
    layer = lm.layers[layer_index]
    attn = layer.self_attn
    length = hidden.shape[1]
    x = layer.input_layernorm(hidden)
    hd = attn.head_dim
    q = attn.q_proj(x).view(1, length, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(1, length, -1, hd).transpose(1, 2)
    pos = torch.arange(length).unsqueeze(0)
    cos, sin = lm.rotary_emb(hidden, pos)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q @ k.transpose(-1, -2)).float() * hd**-0.5
    logits = logits.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    probs = logits.softmax(dim=-1)[0]  # (H, L, L)
    return probs[:, rows, :].mean(dim=0).mean(dim=0)


@torch.no_grad()
def test_stage2_keeps_the_best_tokens_of_the_last_frame() -> None:
    """Frames 1-3 carry zero features, so their keys vanish at the drop layer; every token of frame 4 gets
    a key aligned, for its position, with the query's heads (solved through the rotary tables and the
    key projection). The best quarter of the clip is then the whole LAST frame, and stage 2 (keeping
    exactly a quarter, ranking all frames together) must keep exactly that frame."""
    model = build_tiny_video_llava(seed=1, depth=8)
    lm = model.model.language_model
    layer = lm.layers[1]
    attn = layer.self_attn
    lm.layers[0].self_attn.o_proj.weight.zero_()  # layer 0 becomes the identity: the drop layer (1)
    lm.layers[0].mlp.down_proj.weight.zero_()  # sees the embeddings themselves
    attn.q_proj.weight.mul_(20.0)  # sharper attention, clear margins
    inputs = video_inputs(FRAME_TOKENS, FRAMES, which=[0])
    ids = inputs["input_ids"]
    length = ids.shape[1]
    visual = (ids[0] == VIDEO_ID).nonzero().squeeze(1)
    hd, width = attn.head_dim, lm.config.hidden_size
    h_last = lm.embed_tokens(ids[:, -1:])
    q = attn.q_proj(layer.input_layernorm(h_last)).view(-1, hd)  # (heads, hd), before rotary
    groups = q.view(attn.k_proj.out_features // hd, -1, hd).sum(dim=1)  # per kv head: its q heads
    offsets = (length - 1 - visual[3 * FRAME_TOKENS :]).view(1, -1)  # query position - key position
    cos, sin = lm.rotary_emb(h_last, offsets)  # rotation by (p_q - p): undoes the key's own rotation
    targets = groups[:, None, :] * cos + rotate_half(groups[:, None, :]) * sin  # (kv, N, hd)
    wanted = targets.permute(1, 0, 2).reshape(FRAME_TOKENS, -1)  # (N, kv * hd)
    features = torch.zeros(FRAMES, FRAME_TOKENS, width)
    features[3] = wanted @ torch.linalg.pinv(attn.k_proj.weight).T  # k_proj(features) = wanted
    assert bool(((q @ groups.repeat_interleave(q.shape[0] // groups.shape[0], 0).T).diagonal() > 0).all())

    h = lm.embed_tokens(ids)
    h[0, visual] = features.reshape(-1, width)
    reference = naive_scores(model, h, 1, [length - 1])
    assert float(reference[visual[3 * FRAME_TOKENS :]].min()) > float(
        reference[visual[: 3 * FRAME_TOKENS]].max()
    )

    prof = profile(llm={"layers": [1], "keep_ratios": [0.25], "queries": "last", "positions": "keep"})
    mm = {"video": BaseModelOutputWithPooling(pooler_output=features.clone())}
    with apply_profile(model, prof) as session:
        model(input_ids=ids, attention_mask=inputs["attention_mask"], mm_encoder_outputs=mm)
        ((layer_count, before, kept),) = session.recorder.rows[0].drops
        trace = assemble_trace(session, clip_prompts(1, FRAMES), 1)
    assert (layer_count, before) == (1, FRAMES * FRAME_TOKENS)
    assert kept == list(range(3 * FRAME_TOKENS, 4 * FRAME_TOKENS))
    sample = trace.samples[0]
    assert [s.frame for s in sample.spans] == [0, 1, 2, 3]
    assert sample.kept_per_span(sample.drops[0]) == [0, 0, 0, FRAME_TOKENS]
    assert trace.to_dict()["samples"][0]["drops"][0]["kept_per_span"] == [0, 0, 0, FRAME_TOKENS]


@torch.no_grad()
def test_stage2_ranking_over_all_frames_matches_a_naive_reference(
    model: VideoLlavaForConditionalGeneration,
) -> None:
    """Real pixels, stage 1 per frame, one drop: the kept tokens are the naive top-k over all frames."""
    prof = profile(
        vision={"dominant": 40, "contextual": 8, "contextual_mode": "pooled"},
        llm={"layers": [3], "keep_ratios": [0.3], "queries": "after_image", "positions": "keep"},
    )
    inputs = video_inputs(48, FRAMES, which=[2])
    ids = inputs["input_ids"]
    with apply_profile(model, prof) as session:
        model(**inputs)
        kept = session.recorder.rows[0].drops[0][2]
        features = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    lm = model.model.language_model
    h = lm.embed_tokens(ids)
    visual = ids[0] == VIDEO_ID
    h[0, visual] = features.reshape(-1, h.shape[-1])
    hidden = lm(inputs_embeds=h, output_hidden_states=True).hidden_states[3]
    last_visual = int(visual.nonzero().max())
    rows = list(range(last_visual + 1, ids.shape[1]))
    s = naive_scores(model, hidden, 3, rows)[visual]
    n_keep = int(FRAMES * 48 * 0.3)
    expected = sorted(s.topk(n_keep).indices.tolist())
    assert kept == expected
    per_frame = [sum(1 for k in kept if f * 48 <= k < (f + 1) * 48) for f in range(FRAMES)]
    assert sum(per_frame) == n_keep and sum(1 for c in per_frame if c) > 1  # not one frame's tokens only


# -- stage 1 per frame ------------------------------------------------------------------------------


@torch.no_grad()
def test_stage1_scores_each_frame_on_the_video_tower(model: VideoLlavaForConditionalGeneration) -> None:
    """The SDPA pre-hook's CLS scores pick, frame by frame, what the eager attention maps of the VIDEO
    tower's penultimate layer pick (the image tower, with its own weights, would pick otherwise)."""
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    twin = VideoLlavaForConditionalGeneration(config).eval()
    twin.load_state_dict(model.state_dict())
    px = video_pixels(1, 3, seed=5)
    d = 40
    with apply_profile(
        model, profile(vision={"dominant": d, "contextual": 8, "contextual_mode": "pooled"})
    ) as s:
        features = model.model.get_video_features(px).pooler_output
        selections = list(s.recorder.frames)
    assert model.config.vision_config._attn_implementation == "sdpa"  # the towers stayed on SDPA
    assert tuple(features.shape[:2]) == (3, d + 8) and len(selections) == 3

    def picks(tower: torch.nn.Module) -> list[list[int] | None]:
        attn = tower(px.flatten(0, 1), output_attentions=True).attentions[-2]  # layer of hidden_states[-2]
        out: list[list[int] | None] = []
        for f in range(3):
            score = attn[f, :, 0, :].sum(dim=0)
            order = sorted(range(1, FRAME_TOKENS), key=lambda i: (-float(score[i]), i))
            tie = float(score[order[d - 2]] - score[order[d - 1]]) < 1e-5  # SDPA and eager may disagree
            out.append(None if tie else sorted([0, *order[: d - 1]]))
        return out

    video, image = picks(twin.model.video_tower), picks(twin.model.image_tower)
    checked = [f for f in range(3) if video[f] is not None]
    assert checked and all(selections[f].dominant == video[f] for f in checked)
    assert any(selections[f].dominant != image[f] for f in range(3))


# -- arithmetic -------------------------------------------------------------------------------------


def test_video_duet_960_on_eight_frames_and_depth_8(model: VideoLlavaForConditionalGeneration) -> None:
    """160+32 per frame = 1536 entering the LLM on 8 frames; drops after layers 4 and 6 of 8:
    (4*1536 + 2*768 + 2*0)/8 = 960."""
    _, trace = run_traced(model, "video-duet-960", video_inputs(192, 8, which=[1]), frames=8)
    (sample,) = trace.samples
    assert sample.visual_tokens_in == 1536 and sample.unreduced_visual_tokens == 8 * FRAME_TOKENS
    assert [(len(f.dominant), len(f.contextual)) for f in sample.frames] == [(160, 32)] * 8
    assert sample.ledger == [1536] * 4 + [768] * 2 + [0] * 2
    assert sample.avg_visual_tokens == 960
    assert [(d.layer, d.n_before, len(d.kept)) for d in sample.drops] == [(4, 1536, 768), (6, 768, 0)]
    assert [(s.start, s.stop) for s in sample.spans] == [(192 * f, 192 * (f + 1)) for f in range(8)]
    assert sum(sample.kept_per_span(sample.drops[0])) == 768
    document = trace.to_dict()["samples"][0]
    assert document["drops"][0]["kept_per_span"] == sample.kept_per_span(sample.drops[0])
    assert len(document["frames"]) == 8 and document["frames"][0]["grid"] == [16, 16]


def test_video_profiles_on_video_llava_7b_arithmetic() -> None:
    from duet_cli.catalog import dims_for
    from duet_cli.profiles import load_profile, resolve_profile

    dims = dims_for("video-llava-7b")
    assert (dims.num_layers, dims.unreduced_frame_tokens, dims.unreduced_tokens) == (32, 257, 256)
    cases = {
        # name: (tokens per frame, drop layers, ledger average on 8 frames)
        "video-pdrop-960": (257, [8, 16, 24], 963.75),
        "video-duet-960": (192, [16, 24], 960.0),
        "video-duet-136": (32, [12, 22], 136.0),
        "video-visionzip-960": (120, [], 960.0),
        "video-visionzip-136": (17, [], 136.0),
    }
    for name, (per_frame, layers, avg) in cases.items():
        resolved = resolve_profile(load_profile(name), dims)
        tokens = resolved.vision.tokens if resolved.vision is not None else dims.unreduced_frame_tokens
        assert tokens == per_frame, name
        assert resolved.llm_layers == layers, name
        assert resolved.avg_visual_tokens(8 * per_frame) == avg, name
    on8 = resolve_profile(load_profile("video-duet-960"), dataclasses.replace(dims, num_layers=8))
    assert on8.llm_layers == [4, 6] and on8.ledger(1536) == [1536] * 4 + [768] * 2 + [0] * 2


def test_image_prompts_go_through_the_image_tower(model: VideoLlavaForConditionalGeneration) -> None:
    prof = duet_like()
    with torch.no_grad(), apply_profile(model, prof) as session:
        model.generate(**image_inputs(48), **GEN)
        assert len(session.recorder.images) == 3 and not session.recorder.frames
        assert all(len(sel.dominant) == 40 and len(sel.contextual) == 8 for sel in session.recorder.images)
        assert [r.n0 for r in session.recorder.rows] == [48, 48, 48]


def test_a_prompt_with_an_image_and_a_clip(model: VideoLlavaForConditionalGeneration) -> None:
    """Both towers in one prompt: the image's tokens come first, then the frames'; stage 2 ranks them
    all together and the spans say which is which."""
    from tiny_video import BOS_ID, left_pad

    ids, mask = left_pad([[BOS_ID, 5, *([IMAGE_ID] * 48), 6, *([VIDEO_ID] * (FRAMES * 48)), 7, 8]])
    px = image_inputs(48, [0])["pixel_values"]
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": px}
    inputs["pixel_values_videos"] = video_inputs(48, FRAMES, [0])["pixel_values_videos"]
    clip = Video("clip", [None] * FRAMES, [0, 2, 4, 6], 8)  # type: ignore[list-item]
    with torch.no_grad(), apply_profile(model, duet_like()) as session:
        model.generate(**inputs, **GEN)
        trace = assemble_trace(session, [Prompt("q", [None], [clip])], 1)  # type: ignore[list-item]
    (sample,) = trace.samples
    assert sample.visual_tokens_in == 48 + FRAMES * 48 and len(sample.images) == 1 and len(sample.frames) == 4
    assert sample.unreduced_visual_tokens == IMAGE_TOKENS + FRAMES * FRAME_TOKENS
    assert [(s.kind, s.start, s.stop, s.source_frame) for s in sample.spans] == [
        ("image", 0, 48, None),
        *[("frame", 48 * (f + 1), 48 * (f + 2), 2 * f) for f in range(FRAMES)],
    ]
    assert [len(d.kept) for d in sample.drops] == [120, 60]
    assert sum(sample.kept_per_span(sample.drops[0])) == 120


def test_training_parts_put_both_towers_under_vision() -> None:
    """`--train projector` on Video-LLaVA trains the projector only: the video tower is vision too."""
    from duet_cli.families.video_llava import VideoLlavaAdapter
    from duet_cli.training.trainer import set_trainable

    model = build_tiny_video_llava()
    adapter = VideoLlavaAdapter()
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert set_trainable(model, adapter, ("projector",)) == projector
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"multi_modal_projector"}
    both = (model.model.image_tower, model.model.video_tower)
    towers = sum(p.numel() for tower in both for p in tower.parameters())
    assert set_trainable(model, adapter, ("vision",)) == towers
