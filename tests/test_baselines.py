"""Stage-1 baselines (random, pool) and the FastV schedule, against naive recomputations."""

from __future__ import annotations

import pytest
import torch
from test_invariants import run_traced
from tiny import batch_inputs, pixels, profile
from transformers import LlavaForConditionalGeneration

from duet_cli.engine.session import apply_profile
from duet_cli.methods.pool.apply import pool_regions

pytestmark = pytest.mark.invariant  # also run on the oldest supported transformers (make check-oldest)


@torch.no_grad()
def stock_patches(model: LlavaForConditionalGeneration, px: torch.Tensor) -> torch.Tensor:
    """Feature-layer hidden states of the stock tower, CLS dropped: (B, 576, D)."""
    out = model.model.vision_tower(px, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


@pytest.mark.parametrize("grid", [14, 11, 8])
@torch.no_grad()
def test_pool_equals_naive_block_means(tiny_llava: LlavaForConditionalGeneration, grid: int) -> None:
    px = pixels(2, seed=5)
    with apply_profile(tiny_llava, profile(vision={"method": "pool", "grid": grid})) as session:
        features = tiny_llava.model.get_image_features(px).pooler_output
        images = list(session.recorder.images)
    patches = stock_patches(tiny_llava, px).view(2, 24, 24, -1)
    for b in range(2):
        expected = []
        for i in range(grid):  # adaptive pooling: rows floor(i*24/g) .. ceil((i+1)*24/g) - 1
            r0, r1 = (i * 24) // grid, -((-(i + 1) * 24) // grid)
            for j in range(grid):
                c0, c1 = (j * 24) // grid, -((-(j + 1) * 24) // grid)
                expected.append(patches[b, r0:r1, c0:c1].mean(dim=(0, 1)))
        reference = tiny_llava.model.multi_modal_projector(torch.stack(expected))
        torch.testing.assert_close(features[b], reference, rtol=1e-4, atol=1e-4)
        groups = images[b].contextual
        assert len(groups) == grid * grid and images[b].method == "pool"
        regions = [sorted([g.target, *g.members]) for g in groups]
        assert regions == [[p + 1 for p in r] for r in pool_regions(24, 24, grid)]


def test_pool_regions_cover_the_grid() -> None:
    regions = pool_regions(24, 24, 14)
    assert len(regions) == 196
    assert set().union(*map(set, regions)) == set(range(576))  # every patch lands somewhere
    assert regions[0] == [0, 1, 24, 25]  # rows 0-1, cols 0-1 (24/14 = 1.71: blocks of 2, overlapping)


@torch.no_grad()
def test_random_is_seeded_per_image_and_batch_invariant(tiny_llava: LlavaForConditionalGeneration) -> None:
    px = pixels(3, seed=7)
    rand = profile(vision={"method": "random", "count": 64, "seed": 1})

    def draw(images: torch.Tensor, prof=rand):  # type: ignore[no-untyped-def]
        with apply_profile(tiny_llava, prof) as session:
            features = tiny_llava.model.get_image_features(images).pooler_output
            return features, [img.dominant for img in session.recorder.images]

    features, picks = draw(px)
    for b in range(3):
        f_one, p_one = draw(px[b : b + 1])
        assert p_one[0] == picks[b]
        torch.testing.assert_close(f_one[0], features[b])
        assert len(picks[b]) == 64 and picks[b] == sorted(set(picks[b])) and min(picks[b]) >= 1
    assert picks[0] != picks[1]  # different images, different draws
    _, reseeded = draw(px, profile(vision={"method": "random", "count": 64, "seed": 2}))
    assert reseeded[0] != picks[0]
    patches = stock_patches(tiny_llava, px)
    reference = tiny_llava.model.multi_modal_projector(patches[0, [p - 1 for p in picks[0]]])
    torch.testing.assert_close(features[0], reference, rtol=1e-4, atol=1e-4)


def test_fastv_64_on_depth_8(tiny_llava: LlavaForConditionalGeneration) -> None:
    _, trace = run_traced(tiny_llava, "fastv-64", batch_inputs(576))
    for sample in trace.samples:
        assert sample.ledger == [576] * 2 + [30] * 6  # floor(576 * 0.0521) = 30
        assert sample.avg_visual_tokens == (2 * 576 + 6 * 30) / 8
