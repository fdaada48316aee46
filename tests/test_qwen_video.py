"""Video on a tiny Qwen2.5-VL: inputs equal the stock processor's, temporal slices get their own spans,
M-RoPE time spacing comes from the sampled frames, and stage 2 ranks video tokens in padded batches
exactly as one by one."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image
from qwen_reference import reference_logits
from tiny_qwen import IMAGE_ID, VIDEO_ID, save_tiny_qwen
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_window_index

from duet_cli.engine.session import apply_profile
from duet_cli.families.qwen2_5_vl.inputs import seconds_per_slice
from duet_cli.inputs.video import Video
from duet_cli.runtime import LoadedModel, Prompt, build_inputs, load_model, run

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.invariant,
]  # invariant: see make check-oldest


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen")))
    return load_model(folder, dtype="float32", device="cpu")


def frame(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def clip(n: int, w: int, h: int, seed: int, fps: float = 8.0, every: int = 3) -> Video:
    frames = [frame(w, h, seed * 100 + i) for i in range(n)]
    return Video(f"clip{seed}.mp4", frames, [i * every for i in range(n)], n * every, fps, size=(w, h))


# 4 frames of 112 x 56 px: 2 temporal slices of 8 x 4 patches -> 2 x 8 merged tokens;
# 6 frames of 84 x 84 px: 3 slices of 6 x 6 patches -> 3 x 9 merged tokens. The two clips are sampled
# at different spacings (3 and 5 file frames at 8 fps: 0.75 s and 1.25 s per slice), so mixing up their
# time spacing changes positions
PROMPTS = [
    Prompt("what color is the circle ?", [], [clip(4, 112, 56, seed=1)]),
    Prompt("how many shapes are there ?", [frame(56, 56, 7)], [clip(6, 84, 84, seed=2, every=5)]),
]


def test_seconds_per_slice_from_the_sampled_frames() -> None:
    # frames 0, 3, 6, 9 of an 8 fps file: 3/8 s apart; a slice is 2 frames -> 0.75 s
    assert seconds_per_slice(clip(4, 56, 56, seed=0), 2) == pytest.approx(0.75)
    unknown = Video("x.mp4", [frame(56, 56, 0)] * 2, [0, 1], 2, None)
    assert seconds_per_slice(unknown, 2) == pytest.approx(1.0)  # the processors' default 2 frames/s


def test_video_inputs_equal_the_stock_processor(loaded: LoadedModel) -> None:
    video = PROMPTS[0].videos[0]
    with apply_profile(loaded.model, "baseline") as session:
        ours = build_inputs(loaded, session, PROMPTS[:1])
        assert session.video_slices == [(2, 8)]
    text, _ = loaded.adapter.build_prompt_counts(loaded.template, PROMPTS[0].question, [], [1])  # type: ignore[attr-defined]
    stock = loaded.processor(text=[text], videos=[video.frames], return_tensors="pt")
    assert torch.equal(ours["input_ids"], stock["input_ids"])  # one pad expanded to 16 by the processor
    assert torch.equal(ours["video_grid_thw"], stock["video_grid_thw"])
    torch.testing.assert_close(ours["pixel_values_videos"], stock["pixel_values_videos"])
    assert torch.equal(ours["mm_token_type_ids"], 2 * (ours["input_ids"] == VIDEO_ID).int())
    assert ours["second_per_grid_ts"].tolist() == pytest.approx([0.75])


def test_image_and_video_prompt_spans_and_token_types(loaded: LoadedModel) -> None:
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS)
        result = run(loaded, session, PROMPTS, max_new_tokens=2)
    ids, types = inputs["input_ids"], inputs["mm_token_type_ids"]
    assert (ids == VIDEO_ID).sum(dim=1).tolist() == [16, 27]
    assert (ids == IMAGE_ID).sum(dim=1).tolist() == [0, 4]
    assert torch.equal(types, (ids == IMAGE_ID).int() + 2 * (ids == VIDEO_ID).int())
    second = result.trace.samples[1]
    assert second.unreduced_visual_tokens == second.visual_tokens_in == 4 + 27
    spans = [(s.kind, s.index, s.start, s.stop, s.frame, s.source_frame) for s in second.spans]
    # the image, then three slices of 9 tokens; slice k starts at sampled frame 2k (file frame 10k)
    assert spans == [
        ("image", 0, 0, 4, None, None),
        ("frame", 0, 4, 13, 0, 0),
        ("frame", 0, 13, 22, 1, 10),
        ("frame", 0, 22, 31, 2, 20),
    ]
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([0.75, 1.25])


def test_stock_positions_space_slices_by_their_seconds(loaded: LoadedModel) -> None:
    """The model's own M-RoPE for video: slice k's temporal position is start + k * 0.75 s * tokens/s."""
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS[:1])
    pos, _ = loaded.model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
    )
    video = inputs["input_ids"][0] == VIDEO_ID
    temporal = pos[0, 0, video].tolist()
    start = temporal[0]
    per_second = loaded.model.config.vision_config.tokens_per_second
    assert temporal == [start] * 8 + [start + int(0.75 * per_second)] * 8


@pytest.mark.parametrize("queries", ["last", "after_image"])
def test_stage2_on_video_batched_equals_one_by_one(loaded: LoadedModel, queries: str) -> None:
    from tiny_qwen import profile

    prof = profile("v", llm={"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.25], "queries": queries})
    with apply_profile(loaded.model, prof) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=4)
        singles = [run(loaded, session, [p], max_new_tokens=4) for p in PROMPTS]
    assert batch.answers == [s.answers[0] for s in singles] and all(batch.answers)
    for got, single in zip(batch.trace.samples, singles):
        want = single.trace.samples[0]
        assert [d.kept for d in got.drops] == [d.kept for d in want.drops]
    # N0 = 16 and 31: keep floor(N0/2), floor(N0/4)
    assert [[len(d.kept) for d in s.drops] for s in batch.trace.samples] == [[8, 4], [15, 7]]


def test_keep_everything_llm_stage_on_video_is_the_stock_model(loaded: LoadedModel) -> None:
    from tiny_qwen import profile

    keep_all = profile("k", llm={"at_depth": [0.5], "keep_ratios": [1.0], "queries": "all"})
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS)
    with torch.no_grad():
        stock = loaded.model(**inputs).logits[:, -1]
        with apply_profile(loaded.model, keep_all):
            ours = loaded.model(**inputs).logits[:, -1]
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def duet_like(llm: bool = True):  # type: ignore[no-untyped-def]
    from tiny_qwen import profile

    stage2 = {"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.25], "queries": "after_image"}
    vision = {"dominant": 5, "contextual": 2, "contextual_mode": "pooled"}
    return profile("qwen-video-duet", vision=vision, llm=stage2 if llm else None)


@torch.no_grad()
def test_stage1_on_video_keeps_each_slices_top_units_by_a_naive_score(loaded: LoadedModel) -> None:
    """Every temporal slice is reduced as an image: its dominant units are the top-scored ones of an
    eager attention map over that slice alone (the groups the stock full-attention block attends in)."""
    model = loaded.model
    with apply_profile(model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS[:1])  # one video: 2 slices of 4 x 8 patches
    attn = model.model.visual.blocks[max(model.config.vision_config.fullatt_block_indexes)].attn
    seen: dict = {}
    handle = attn.register_forward_pre_hook(
        lambda m, a, k: seen.update(k, hidden=a[0] if a else k["hidden_states"]), with_kwargs=True
    )
    try:
        model.model.visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
    finally:
        handle.remove()
    seq = seen["hidden"].shape[0]
    q, k, _ = attn.qkv(seen["hidden"]).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *seen["position_embeddings"])
    window_index, _ = get_vision_window_index(
        inputs["video_grid_thw"], spatial_merge_size=2, window_size=56, patch_size=14
    )
    units = torch.zeros(seq // 4)
    bounds = seen["cu_seqlens"].tolist()
    assert bounds == [0, 32, 64]  # the stock block attends within each slice
    for lo, hi in itertools.pairwise(bounds):
        qi, ki = q[lo:hi].transpose(0, 1), k[lo:hi].transpose(0, 1)
        received = (
            torch.softmax((qi.float() @ ki.float().transpose(-1, -2)) * attn.scaling, -1).sum(1).mean(0)
        )
        for j in range(hi - lo):
            units[int(window_index[(lo + j) // 4])] += received[j] / 4
    with apply_profile(model, duet_like(llm=False)) as session:
        model(**build_inputs(loaded, session, PROMPTS[:1]))
        frames = list(session.recorder.frames)
    assert [(len(f.dominant), len(f.contextual), f.grid) for f in frames] == [(5, 2, (2, 4))] * 2
    for f, slice_units in zip(frames, units.split(8)):
        top = torch.sort(slice_units, descending=True, stable=True).indices[:5]
        assert f.dominant == sorted(top.tolist())


def units_of(selections) -> list[int]:  # type: ignore[no-untyped-def]
    return [*selections.dominant, *(g.target for g in selections.contextual)]


@torch.no_grad()
def test_cached_greedy_with_video_stage1_equals_cache_free_reference(loaded: LoadedModel) -> None:
    """generate() with stage 1 on an image and on video slices, then stage 2, in a padded batch: every
    step's logits equal a from-scratch recomputation whose 3-D positions (video time spacing included)
    come from the stock get_rope_index over the full grids, gathered at the kept units."""
    model, prof = loaded.model, duet_like()
    with apply_profile(model, prof) as session:
        inputs = build_inputs(loaded, session, PROMPTS)
        out = model.generate(
            **inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
        kept_rows = [[d[2] for d in row.drops] for row in session.recorder.rows]
        images, frames = list(session.recorder.images), list(session.recorder.frames)
        image_feats = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"]
        ).pooler_output
        video_feats = model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"]
        ).pooler_output
    assert [len(f.dominant) + len(f.contextual) for f in frames] == [7] * 5  # 2 + 3 slices, 5 + 2 each
    grids = inputs["video_grid_thw"].tolist()
    seconds = inputs["second_per_grid_ts"].tolist()
    # row 0: the 2-slice video; row 1: the image (4 units: 3 + 1), then the 3-slice video
    slice_units = [units_of(f) for f in frames]
    video_units = [
        [s * 8 + u for s in range(2) for u in slice_units[s]],
        [s * 9 + u for s in range(3) for u in slice_units[2 + s]],
    ]
    rows = [
        ([(2, tuple(grids[0]), video_units[0], seconds[0])], video_feats[0]),
        (
            [
                (1, tuple(inputs["image_grid_thw"][0].tolist()), units_of(images[0]), 1.0),
                (2, tuple(grids[1]), video_units[1], seconds[1]),
            ],
            torch.cat([image_feats[0], video_feats[1]]),
        ),
    ]
    text = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    for row, (items, feats) in enumerate(rows):
        real = inputs["attention_mask"][row].bool()
        seq = inputs["input_ids"][row][real].tolist()
        types = inputs["mm_token_type_ids"][row][real].tolist()
        for step in range(3):
            ref = reference_logits(model, seq, types, items, feats, kept_rows[row], [0, 4, 6])
            torch.testing.assert_close(
                out.logits[step][row], ref, rtol=1e-4, atol=1e-4, msg=f"row {row} step {step}"
            )
            seq.append(text[row][step])
            types.append(0)


def test_stage1_on_video_batched_equals_one_by_one(loaded: LoadedModel) -> None:
    prof = duet_like()
    with apply_profile(loaded.model, prof) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=4)
        singles = [run(loaded, session, [p], max_new_tokens=4) for p in PROMPTS]
    assert batch.answers == [s.answers[0] for s in singles] and all(batch.answers)
    for got, single in zip(batch.trace.samples, singles):
        want = single.trace.samples[0]
        assert [units_of(f) for f in got.frames] == [units_of(f) for f in want.frames]
        assert [d.kept for d in got.drops] == [d.kept for d in want.drops]
    first, second = batch.trace.samples
    assert (first.visual_tokens_in, second.visual_tokens_in) == (2 * 7, 4 + 3 * 7)
    assert [s.stop - s.start for s in second.spans] == [4, 7, 7, 7]


@pytest.mark.parametrize("beams", [1, 3])
def test_stage1_with_beams_batched_equals_one_by_one(loaded: LoadedModel, beams: int) -> None:
    """Beam search expands second_per_grid_ts per beam while the tower runs once per prompt: each video
    must keep its own time spacing, so a batch equals its prompts one by one (text and kept tokens)."""
    prof = duet_like()
    with apply_profile(loaded.model, prof) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=3, num_beams=beams)
        singles = [run(loaded, session, [p], max_new_tokens=3, num_beams=beams) for p in PROMPTS]
    assert batch.answers == [s.answers[0] for s in singles] and all(batch.answers)
    for got, single in zip(batch.trace.samples, singles):
        want = single.trace.samples[0]
        assert [d.kept for d in got.drops] == [d.kept for d in want.drops]


@torch.no_grad()
def test_rope_deltas_after_generate_are_the_real_ones(loaded: LoadedModel) -> None:
    """After generate() under stage 1 the model keeps the rope deltas of the kept tokens' positions (what
    a plain forward computes), not those of the provisional positions asked for before the tower ran."""
    model = loaded.model
    # a long clip (10 s per slice): its temporal positions outgrow the text's, which moves the deltas
    # and few tokens per slice (2 + 1 of 9): provisional positions (the first units of the grid) would
    # stop in the second slice
    long = [Prompt("how many shapes are there ?", [], [clip(8, 84, 84, seed=2, every=40)]), PROMPTS[1]]
    from tiny_qwen import profile

    few = profile("few", vision={"dominant": 2, "contextual": 1, "contextual_mode": "pooled"})
    with apply_profile(model, few) as session:
        inputs = build_inputs(loaded, session, long)
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
        after_generate = model.model.rope_deltas.clone()
        model(**inputs)
        after_forward = model.model.rope_deltas.clone()
    torch.testing.assert_close(after_generate, after_forward)


@torch.no_grad()
def test_a_stale_selection_does_not_leak_into_the_next_prompt(loaded: LoadedModel) -> None:
    """A tower call whose prefill never ran (here: called directly) leaves a selection behind; the next
    run must place its own tokens (same output as a clean run)."""
    prof = duet_like()
    with apply_profile(loaded.model, prof) as session:
        clean = run(loaded, session, PROMPTS[1:], max_new_tokens=3)
        other = build_inputs(loaded, session, PROMPTS[:1])
        loaded.model.model.get_video_features(other["pixel_values_videos"], other["video_grid_thw"])
        after = run(loaded, session, PROMPTS[1:], max_new_tokens=3)
    assert after.answers == clean.answers
    assert [d.kept for d in after.trace.samples[0].drops] == [d.kept for d in clean.trace.samples[0].drops]
