"""Stage 1 on a tiny Qwen2.5-VL: the received-attention score against a naive per-image eager
computation, per-image clamped counts and 3-D positions, batch vs one by one, cached decoding vs a
cache-free reference, and the issue's acceptance check (qwen-duet-640: 640, 320, 160)."""

from __future__ import annotations

import pytest
import torch
from qwen_reference import reference_logits as shared_reference
from tiny_qwen import (
    AFTER,
    BEFORE,
    IMAGE_ID,
    SUPPRESSED,
    build_tiny_qwen,
    image_pixels,
    left_pad,
    make_prompt,
    merged_tokens,
    profile,
)
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_window_index

from duet_cli.engine.session import apply_profile
from duet_cli.engine.stage1_counts import clamped_counts, reduced_count
from duet_cli.families.qwen2_5_vl.vision_scores import per_unit_raster, received_attention
from duet_cli.profiles import load_profile

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)

GEN = {"max_new_tokens": 4, "do_sample": False}
GRIDS: list[list[tuple[int, int, int]]] = [[(1, 8, 12)], [(1, 12, 8)], [(1, 8, 8), (1, 4, 8)]]


@pytest.fixture(scope="module")
def model() -> Qwen2_5_VLForConditionalGeneration:
    return build_tiny_qwen(seed=0, depth=8)


STAGE2 = {"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.25], "queries": "after_image", "positions": "keep"}


def duet_like(dominant: int = 10, contextual: int = 4, mode: str = "pooled", llm: bool = True):  # type: ignore[no-untyped-def]
    vision = {"dominant": dominant, "contextual": contextual, "contextual_mode": mode}
    return profile("qwen-duet-like", vision=vision, llm=STAGE2 if llm else None)


def reduced_inputs(prof, which: list[int], grids=GRIDS) -> dict:  # type: ignore[no-untyped-def]
    """Left-padded inputs whose images carry the reduced placeholder counts."""
    vision = prof.vision
    rows = []
    for i in which:
        counts = [reduced_count(vision, merged_tokens(g)) for g in grids[i]]
        row = make_prompt(BEFORE[i], [], [])
        for n in counts:
            row += [150, *([IMAGE_ID] * n), 153]
        rows.append(row + AFTER[i])
    ids, mask = left_pad(rows)
    px = [image_pixels(g, seed=10 * i + j) for i in which for j, g in enumerate(grids[i])]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": (ids == IMAGE_ID).int(),
        "pixel_values": torch.cat(px),
        "image_grid_thw": torch.tensor([g for i in which for g in grids[i]], dtype=torch.long),
    }


# -- the score ------------------------------------------------------------------------------------


def capture_block_input(model, pixels: torch.Tensor, grid_thw: torch.Tensor) -> dict:  # type: ignore[no-untyped-def]
    visual = model.model.visual
    attn = visual.blocks[max(model.config.vision_config.fullatt_block_indexes)].attn
    seen: dict = {}

    def hook(module, args, kwargs):  # type: ignore[no-untyped-def]
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen.update(kwargs)

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            visual(pixels, grid_thw=grid_thw)
    finally:
        handle.remove()
    return seen


@torch.no_grad()
def test_stage1_score_equals_a_naive_per_image_eager_computation(
    model: Qwen2_5_VLForConditionalGeneration,
) -> None:
    """Two images of different sizes in one tower call: the chunked, per-image received attention,
    averaged per merge unit in raster order, equals a full eager attention map per image (no leakage)."""
    grids = torch.tensor([[1, 8, 12], [1, 4, 8]])
    pixels = torch.cat([image_pixels((1, 8, 12), 0), image_pixels((1, 4, 8), 1)])
    seen = capture_block_input(model, pixels, grids)
    attn = model.model.visual.blocks[2].attn
    seq = seen["hidden"].shape[0]
    q, k, _ = attn.qkv(seen["hidden"]).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = seen["position_embeddings"]
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    window_index, _ = get_vision_window_index(grids, spatial_merge_size=2, window_size=56, patch_size=14)
    # naive: one full eager map per image, column sums, then each patch's unit looked up one by one
    naive_units = torch.zeros(seq // 4)
    start = 0
    for t, h, w in grids.tolist():
        n = t * h * w
        qi, ki = q[start : start + n].transpose(0, 1), k[start : start + n].transpose(0, 1)
        probs = torch.softmax((qi.float() @ ki.float().transpose(-1, -2)) * attn.scaling, dim=-1)  # (H, n, n)
        received = probs.sum(dim=1).mean(dim=0)
        for j in range(n):
            naive_units[int(window_index[(start + j) // 4])] += received[j] / 4
        start += n
    cu = torch.tensor([0, 96, 128])
    for chunk in (7, 1024):
        got = received_attention(q.transpose(0, 1), k.transpose(0, 1), cu, float(attn.scaling), chunk=chunk)
        torch.testing.assert_close(per_unit_raster(got, window_index, 4), naive_units, rtol=1e-5, atol=1e-5)
    # each image's queries attend only to its own patches: the units of an image sum to its patch count / 4
    assert (
        abs(float(naive_units[:24].sum()) - 96 / 4) < 1e-3
        and abs(float(naive_units[24:].sum()) - 32 / 4) < 1e-3
    )


@torch.no_grad()
def test_stage1_keeps_the_top_scored_units_of_each_image(model: Qwen2_5_VLForConditionalGeneration) -> None:
    prof = duet_like(10, 4, llm=False)
    inputs = reduced_inputs(prof, [2])
    with apply_profile(model, prof) as session:
        model(**inputs)
        images = session.recorder.images
    grids = inputs["image_grid_thw"]
    seen = capture_block_input(model, inputs["pixel_values"], grids)
    attn = model.model.visual.blocks[2].attn
    seq = seen["hidden"].shape[0]
    q, k, _ = attn.qkv(seen["hidden"]).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *seen["position_embeddings"])
    window_index, _ = get_vision_window_index(grids, spatial_merge_size=2, window_size=56, patch_size=14)
    scores = per_unit_raster(
        received_attention(q.transpose(0, 1), k.transpose(0, 1), seen["cu_seqlens"], float(attn.scaling)),
        window_index,
        4,
    )
    assert [len(s.dominant) + len(s.contextual) for s in images] == [14, 8]  # 16 units: 10+4; 8 units: 7+1
    assert clamped_counts(10, 4, 8) == (7, 1)
    for sel, units in zip(images, scores.split([16, 8])):
        d = len(sel.dominant)
        assert sel.dominant == sorted(torch.sort(units, descending=True, stable=True).indices[:d].tolist())
        assert not sel.has_cls


# -- invariants -----------------------------------------------------------------------------------


def test_batched_equals_one_by_one(model: Qwen2_5_VLForConditionalGeneration) -> None:
    """Images of different sizes and a two-image prompt: same stage-1 and stage-2 choices, same text."""
    prof = duet_like()
    with torch.no_grad(), apply_profile(model, prof) as session:
        batch = model.generate(**reduced_inputs(prof, [0, 1, 2]), **GEN)[:, -4:]
        b_images = list(session.recorder.images)
        b_kept = [[d[2] for d in row.drops] for row in session.recorder.rows]
        cursor = 0
        for i in range(3):
            session.recorder.reset()
            single = model.generate(**reduced_inputs(prof, [i]), **GEN)[:, -4:]
            n = len(GRIDS[i])
            assert session.recorder.images == b_images[cursor : cursor + n]
            cursor += n
            assert [d[2] for d in session.recorder.rows[0].drops] == b_kept[i]
            assert torch.equal(single[0], batch[i])


def reference_logits(model, seq, grids, features, units, kept, starts):  # type: ignore[no-untyped-def]
    """The shared cache-free reference (tests/qwen_reference.py) on an image-only sequence, with the
    suppressed ids masked as generate() masks them."""
    types = [1 if t == IMAGE_ID else 0 for t in seq]
    items = [(1, tuple(g), u, 1.0) for g, u in zip(grids, units)]
    logits = shared_reference(model, seq, types, items, features, kept, starts)
    logits[SUPPRESSED] = float("-inf")
    return logits


def unit_lists(images) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """Merge unit of each output token of each image: dominant units, then contextual targets."""
    return [list(s.dominant) + [g.target for g in s.contextual] for s in images]


def random_like(count: int = 10):  # type: ignore[no-untyped-def]
    """The stage-1 `random` baseline (count merge units per image) + the duet-like stage 2."""
    return profile("qwen-random-like", vision={"method": "random", "count": count}, llm=STAGE2)


@pytest.mark.parametrize("which", [[0, 1, 2], [2]], ids=["padded-batch", "two-images-no-padding"])
@pytest.mark.parametrize("make", [duet_like, random_like], ids=["visionzip", "random"])
def test_cached_greedy_equals_cache_free_reference(
    model: Qwen2_5_VLForConditionalGeneration, which: list[int], make
) -> None:
    """generate() under stage 1 + stage 2: every step's logits equal the recomputation, so the gathered
    3-D positions, the placeholders per image and the decode positions (rope deltas) are right."""
    prof = make()
    inputs = reduced_inputs(prof, which)
    with torch.no_grad(), apply_profile(model, prof) as session:
        out = model.generate(**inputs, **GEN, return_dict_in_generate=True, output_logits=True)
        kept_rows = [[d[2] for d in row.drops] for row in session.recorder.rows]
        images = list(session.recorder.images)
        features = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"]
        ).pooler_output
    text = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    cursor = 0
    for row, prompt in enumerate(which):
        grids = GRIDS[prompt]
        n = len(grids)
        row_features = torch.cat(list(features[cursor : cursor + n]))
        units = unit_lists(images[cursor : cursor + n])
        cursor += n
        seq = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
        for step in range(GEN["max_new_tokens"]):
            ref = reference_logits(model, seq, grids, row_features, units, kept_rows[row], [0, 4, 6])
            got = out.logits[step][row].clone()
            got[SUPPRESSED] = float("-inf")
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"row {row} step {step}")
            seq.append(text[row][step])


@torch.no_grad()
def test_forward_positions_equal_generate_positions(model: Qwen2_5_VLForConditionalGeneration) -> None:
    """A plain forward (positions after the tower) and generate() (provisional, then corrected) agree."""
    prof = duet_like(llm=False)
    inputs = reduced_inputs(prof, [0, 2])
    with apply_profile(model, prof):
        logits = model(**inputs).logits[:, -1]
        out = model.generate(
            **inputs, max_new_tokens=1, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
    torch.testing.assert_close(out.logits[0], logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_qwen_duet_640_enters_with_640_and_drops_to_320_and_160(
    model: Qwen2_5_VLForConditionalGeneration,
) -> None:
    """The issue's acceptance check on an image of 28 x 24 = 672 merged tokens (depth 8: drops after
    layers 4 and 6)."""
    from duet_cli.runtime import Prompt, assemble_trace

    grid = (1, 56, 48)
    prof = load_profile("qwen-duet-640")
    n = reduced_count(prof.vision, merged_tokens(grid))
    assert n == 640
    ids = torch.tensor([[*make_prompt([5, 6], [], []), 150, *([IMAGE_ID] * n), 153, 20, 21]])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == IMAGE_ID).int(),
        "pixel_values": image_pixels(grid, 0),
        "image_grid_thw": torch.tensor([grid]),
    }
    with apply_profile(model, prof) as session:
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        trace = assemble_trace(session, [Prompt("q", images=[None])], 1)  # type: ignore[list-item]
    sample = trace.samples[0]
    assert sample.visual_tokens_in == 640
    assert [s[2] for s in sample.segments()] == [640, 320, 160]
    assert sample.ledger == [640] * 4 + [320] * 2 + [160] * 2
    assert sample.images[0].n_tokens == 672 and sample.images[0].grid == (28, 24)
    assert len(sample.images[0].dominant) == 540 and len(sample.images[0].contextual) == 100


@torch.no_grad()
def test_random_keeps_stock_merged_tokens_drawn_per_image(model: Qwen2_5_VLForConditionalGeneration) -> None:
    """`random` on Qwen: min(count, N) distinct merge units per image in raster order, the stock merged
    features at exactly those units, and the same draw for an image alone or in a batch."""
    prof = random_like(count=10)
    inputs = reduced_inputs(prof, [0, 1, 2])
    stock = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    with apply_profile(model, prof) as session:
        got = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
        images = list(session.recorder.images)
        session.recorder.reset()
        alone = reduced_inputs(prof, [2])
        model.model.get_image_features(alone["pixel_values"], alone["image_grid_thw"])
        alone_units = unit_lists(session.recorder.images)
    sizes = [merged_tokens(g) for i in [0, 1, 2] for g in GRIDS[i]]
    units = unit_lists(images)
    assert [len(u) for u in units] == [min(10, n) for n in sizes]
    for u, n, full, reduced in zip(units, sizes, stock, got):
        assert u == sorted(set(u)) and all(0 <= x < n for x in u)
        torch.testing.assert_close(reduced, full[u])
    assert alone_units == units[-2:]
    assert units[0] != list(range(10))  # a draw, not the first units
