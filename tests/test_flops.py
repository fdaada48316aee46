"""FLOP and KV-cache arithmetic against hand computations written out term by term.

Nothing here calls back into duet_cli.cost.flops to get an expected value: every number is expanded by hand
(tiny configs small enough to check on paper, the LLaVA-1.5-7B and Qwen2.5-VL-7B cards), and the Qwen
tower is also checked against torch's own FLOP counter running the stock transformers code.
"""

from __future__ import annotations

import pytest

from duet_cli.catalog import dims_for, get_card
from duet_cli.cost.flops import (
    Architecture,
    TextArch,
    decode_step_flops,
    kv_cache_bytes,
    prefill_flops,
    stage2_ranking_flops,
    vision_flops,
)
from duet_cli.cost.flops_vision import QwenVisionArch, VisionArch

# Tiny: CLIP 28/14 (4 patches + CLS = 5 tokens), hidden 8, MLP 16, 2 layers, 2 heads;
# Llama hidden 8, MLP 12, 3 layers, 2 heads of 4, 1 kv head, vocab 10.
TINY = Architecture(
    vision=VisionArch(image_size=28, patch_size=14, hidden=8, intermediate=16, layers=2, heads=2),
    text=TextArch(hidden=8, intermediate=12, layers=3, heads=2, kv_heads=1, head_dim=4, vocab=10),
)


def test_tiny_prefill_by_hand() -> None:
    # visual ledger [4, 4, 2] + 3 text tokens -> n = 7, 7, 5 tokens per layer
    # actual per layer: q 2*n*8*8 = 128n, k 2*n*8*4 = 64n, v 64n, o 2*n*8*8 = 128n  -> 384n
    #                   SwiGLU 3 * 2*n*8*12 = 576n
    #                   attention (scores + weighted sum), causal: 2*2*heads*head_dim * n(n+1)/2 = 16 n(n+1)
    # n=7: 2688 + 4032 + 896 = 7616;  n=5: 1920 + 2880 + 480 = 5280
    # lm_head on the last token: 2*8*10 = 160
    p = prefill_flops(TINY.text, [4, 4, 2], 3)
    assert p.actual_per_layer == [7616, 7616, 5280]
    assert p.lm_head == 160
    assert p.actual == 7616 + 7616 + 5280 + 160 == 20672
    # paper: 4*n*64 + 2*n^2*8 + 2*n*8*12 = 448n + 16n^2; n=7: 3136 + 784 = 3920; n=5: 2240 + 400 = 2640
    assert p.paper_per_layer == [3920, 3920, 2640]
    assert p.paper == 10480
    # full (non-causal) attention: 16 n(n+1) becomes 32 n^2 -> n=7: 1568, n=5: 800
    full = prefill_flops(TINY.text, [4, 4, 2], 3, causal=False)
    assert full.actual == (2688 + 4032 + 1568) * 2 + (1920 + 2880 + 800) + 160


def test_tiny_decode_and_kv_by_hand() -> None:
    # cache lengths after prefill = tokens per layer: 7, 7, 5
    # actual per layer: projections + MLP of one token 384 + 576 = 960, attention to itself 16*1*2 = 32,
    # attention to c cached tokens 2*2*2*4*c = 32c -> c=7: 1216, c=5: 1152; plus lm_head 160
    d = decode_step_flops(TINY.text, [7, 7, 5])
    assert d.actual == 1216 + 1216 + 1152 + 160 == 3744
    # paper: 4*64 + 2*(c+1)*8 + 2*8*12 = 448 + 16(c+1) -> 576, 576, 544
    assert d.paper == 576 + 576 + 544 == 1696
    # KV: 2 (k and v) * 1 kv head * 4 head_dim * tokens * 2 bytes = 16 bytes per token per layer
    kv = kv_cache_bytes(TINY.text, [7, 7, 5], 2)
    assert kv.bytes == 16 * (7 + 7 + 5) == 304


def test_tiny_vision_by_hand() -> None:
    # per encoder layer at 5 tokens: q,k,v,o 2*5*8*8*4 = 2560; MLP 2*2*5*8*16 = 2560; attention 4*5*5*8 = 800
    # two layers: 2 * 5920 = 11840; patch embedding 2 * 4 patches * (3*14*14) * 8 = 37632
    # projector (8 -> 8 -> 8) on 4 tokens: 2*4*(64 + 64) = 1024
    v = vision_flops(TINY, images=1, tokens_to_llm_per_image=4)
    assert (v.encoder, v.patch_embed, v.projector, v.scoring) == (11840, 37632, 1024, 0)
    assert v.actual == 50496
    # paper: 4*5*64 + 2*25*8 + 2*5*8*16 = 1280 + 400 + 1280 = 2960 per layer
    assert v.paper == 2 * 2960
    # stage 1, dominant 2 (CLS included) + 1 contextual, uniform: CLS query 2*64 = 128, keys 2*5*64 = 640,
    # scores 2*5*8 = 80; 3 remaining tokens, 1 target, 2 candidates x 1 target x 2*head_dim 4 = 16
    grid = (1, 2, 2)
    assert TINY.vision.stage1_scoring_flops(grid, dominant=2, contextual=1, mode="uniform") == 864
    # pooled with width 1: pool = min(max(1, 1*1), 3) = 1 token, which is the target: no candidates
    pooled = TINY.vision.stage1_scoring_flops(grid, dominant=2, contextual=1, mode="pooled", cluster_width=1)
    assert pooled == 848
    with pytest.raises(ValueError):  # a CLIP tower has one grid
        TINY.vision.stage1_scoring_flops((1, 4, 4), dominant=2, contextual=1, mode="uniform")
    # stage 2 ranking on 7 tokens with 2 query rows: q 2*2*8*8 = 256, k 2*7*8*4 = 448, scores 2*2*4*2*7 = 224
    assert stage2_ranking_flops(TINY.text, tokens=7, query_rows=2) == 928


LLAVA_7B = Architecture.from_card(get_card("llava-1.5-7b").architecture, "llava")


def test_card_numbers() -> None:
    assert LLAVA_7B.vision == VisionArch(336, 14, 1024, 4096, 24, 16)
    assert LLAVA_7B.text == TextArch(4096, 11008, 32, 32, 32, 128, 32064)
    assert LLAVA_7B.vision.tokens == 577


def test_llava_7b_baseline_by_hand() -> None:
    # 576 visual + 24 text = 600 tokens in each of 32 layers
    # q,k,v,o (no GQA on 7B): 4 * 2*600*4096*4096 = 80,530,636,800
    # SwiGLU: 3 * 2*600*4096*11008 = 162,319,564,800
    # causal attention: 2*2*32*128 * 600*601/2 = 16384 * 180,300 = 2,954,035,200
    per_layer = 80_530_636_800 + 162_319_564_800 + 2_954_035_200
    assert per_layer == 245_804_236_800
    lm_head = 2 * 4096 * 32064  # 262,668,288
    p = prefill_flops(LLAVA_7B.text, [576] * 32, 24)
    assert p.actual == 32 * per_layer + lm_head == 7_865_998_245_888
    # paper: 4*600*4096^2 + 2*600^2*4096 + 2*600*4096*11008 = 40,265,318,400 + 2,949,120,000 + 54,106,521,600
    assert p.paper == 32 * (40_265_318_400 + 2_949_120_000 + 54_106_521_600) == 3_114_270_720_000
    # KV: 2 * 32 heads * 128 * 600 tokens * 2 bytes = 9,830,400 per layer, 32 layers = 314,572,800 (300 MiB)
    assert kv_cache_bytes(LLAVA_7B.text, [600] * 32, 2).bytes == 314_572_800
    # one decode step against 600 cached tokens: per layer 2*4096*(4*4096) + 6*4096*11008 + 16384*601
    decode_layer = 134_217_728 + 270_532_608 + 9_846_784
    assert decode_step_flops(LLAVA_7B.text, [600] * 32).actual == 32 * decode_layer + lm_head


def test_llava_7b_vision_by_hand() -> None:
    # CLIP-L/336 at 577 tokens, 24 layers: q,k,v,o 8*577*1024^2 = 4,840,226,816; MLP 4*577*1024*4096 =
    # 9,680,453,632; attention 4*577^2*1024 = 1,363,677,184 -> 15,884,357,632 per layer
    encoder = 24 * 15_884_357_632
    patch = 2 * 576 * 588 * 1024  # 693,633,024
    projector = 2 * 576 * (1024 * 4096 + 4096 * 4096)  # 24,159,191,040
    v = vision_flops(LLAVA_7B, images=1, tokens_to_llm_per_image=576)
    assert v.actual == encoder + patch + projector == 406_077_407_232
    assert v.paper == 24 * (4 * 577 * 1024**2 + 2 * 577**2 * 1024 + 2 * 577 * 1024 * 4096)


def test_llava_7b_duet_192_by_hand() -> None:
    # duet-192: N0 = 307 for layers 1-16, 153 for 17-24, 0 for 25-32; 24 text tokens -> n = 331, 177, 24
    ledger = [307] * 16 + [153] * 8 + [0] * 8

    def paper(n: int) -> int:
        return 4 * n * 4096**2 + 2 * n * n * 4096 + 2 * n * 4096 * 11008

    def actual(n: int) -> int:
        return 2 * n * 4096 * 4096 * 4 + 6 * n * 4096 * 11008 + 16384 * n * (n + 1) // 2

    p = prefill_flops(LLAVA_7B.text, ledger, 24)
    assert p.paper == 16 * paper(331) + 8 * paper(177) + 8 * paper(24)
    assert p.actual == 16 * actual(331) + 8 * actual(177) + 8 * actual(24) + 262_668_288
    # ragged KV cache: 16384 bytes per token per layer (2 * 32 * 128 * 2 bytes)
    kv = kv_cache_bytes(LLAVA_7B.text, [24 + n for n in ledger], 2)
    assert kv.bytes == 16384 * (16 * 331 + 8 * 177 + 8 * 24) == 113_115_136


def test_ledger_length_is_checked() -> None:
    with pytest.raises(ValueError):
        prefill_flops(TINY.text, [1, 2], 3)
    with pytest.raises(ValueError):
        decode_step_flops(TINY.text, [1])


# ---------------------------------------------------------------------------------------------------------
# Qwen2.5-VL: windowed ViT + patch merger

# Tiny: 14 px patches, temporal 2, merge 2, windows of 56 px = 2 merge units = 4 patches a side; hidden 8
# (2 heads of 4), SwiGLU 12, 3 blocks with block 1 on full attention, merger to 16, reference 112 px
QWEN_TINY = QwenVisionArch(
    patch_size=14,
    temporal_patch_size=2,
    merge_size=2,
    window_size=56,
    hidden=8,
    intermediate=12,
    layers=3,
    heads=2,
    full_attention=(1,),
    out_hidden=16,
    reference_side=112,
)
QWEN_TINY_ARCH = Architecture(vision=QWEN_TINY, text=TINY.text)


@pytest.mark.parametrize(
    ("grid", "windows"),
    [
        # 8x8 patches = 4x4 units: 2x2 full windows of 2x2 units (16 patches each)
        ((1, 8, 8), [16, 16, 16, 16]),
        # 6x10 patches = 3x5 units: window rows of 2 and 1 units, columns of 2, 2 and 1 (row by row)
        ((1, 6, 10), [16, 16, 8, 8, 8, 4]),
        # 2x2 patches = one unit: one partial window of 4 patches
        ((1, 2, 2), [4]),
        # two frames of 4x6 patches = 2x3 units: windows per frame, 2x2 and 2x1 units
        ((2, 4, 6), [16, 8, 16, 8]),
    ],
)
def test_qwen_windows_with_partial_edges(grid: tuple[int, int, int], windows: list[int]) -> None:
    assert QWEN_TINY.windows(grid) == windows
    assert sum(windows) == grid[0] * grid[1] * grid[2]


def test_qwen_grid_must_hold_whole_merge_units() -> None:
    with pytest.raises(ValueError):
        QWEN_TINY.windows((1, 5, 8))


@pytest.mark.parametrize("grid", [(1, 6, 10), (1, 8, 8), (1, 16, 14), (2, 4, 6), (1, 2, 30)])
def test_qwen_windows_equal_transformers(grid: tuple[int, int, int]) -> None:
    # the stock window layout: cu_window_seqlens from transformers' own get_vision_window_index
    import torch
    from transformers.vision_utils import get_vision_window_index

    _, cu = get_vision_window_index(torch.tensor([grid]), spatial_merge_size=2, window_size=56, patch_size=14)
    assert QWEN_TINY.windows(grid) == torch.diff(cu).tolist()


def test_qwen_tiny_vision_by_hand() -> None:
    # grid 1 x 6 x 10: P = 60 patches, 15 merge units; windows [16, 16, 8, 8, 8, 4]: sum of squares 720
    # patch embedding (Conv3d, no bias): 2 * 60 * (3 * 2 * 14 * 14 = 1176) * 8 = 1,128,960
    # per block: qkv 2*60*8*24 = 23,040, proj 2*60*8*8 = 7,680, SwiGLU 3 * 2*60*8*12 = 34,560
    #   attention (scores + weighted sum over heads * head_dim = 8): windowed 4*8*720 = 23,040,
    #   full 4*8*60^2 = 115,200 -> windowed block 88,320, full block 180,480
    # encoder: blocks 0 and 2 windowed, block 1 full: 2*88,320 + 180,480 = 357,120
    # merger on 15 units: (8*4 = 32 -> 32 -> 16): 15 * (2*32*32 + 2*32*16) = 15 * 3072 = 46,080
    grid = (1, 6, 10)
    v = vision_flops(QWEN_TINY_ARCH, images=1, tokens_to_llm_per_image=11, grid=grid)
    assert (v.patch_embed, v.encoder, v.projector, v.scoring) == (1_128_960, 357_120, 46_080, 0)
    assert v.actual == 1_532_160
    # the merger runs on every unit, whatever stage 1 keeps afterwards
    assert vision_flops(QWEN_TINY_ARCH, images=1, tokens_to_llm_per_image=15, grid=grid).actual == v.actual
    # paper, per attention span n: 4n*64 + 2n^2*8 + 2n*8*12 = 448n + 16n^2
    #   windowed block: 448*60 + 16*720 = 38,400; full block: 448*60 + 16*3600 = 84,480
    assert v.paper == 2 * 38_400 + 84_480 == 161_280
    # two images: everything twice
    two = vision_flops(QWEN_TINY_ARCH, images=2, tokens_to_llm_per_image=11, grid=grid, scoring_per_image=5)
    assert (two.actual, two.paper, two.scoring) == (2 * 1_532_160 + 10, 2 * 161_280, 10)
    # the reference grid: 112 px / 14 = 8 x 8 patches, 4 windows of 16 -> sum of squares 4 * 256
    ref = vision_flops(QWEN_TINY_ARCH, images=1, tokens_to_llm_per_image=16)
    per_block = 2 * 64 * 8 * 32 + 6 * 64 * 8 * 12  # qkv + proj, SwiGLU
    assert ref.encoder == 3 * per_block + 2 * 4 * 8 * 4 * 256 + 4 * 8 * 64 * 64


def test_qwen_tiny_stage1_by_hand() -> None:
    # grid 1 x 6 x 10 (60 patches, N = 15 merged tokens). The scoring hook recomputes the fused qkv:
    # 2*60*8*24 = 23,040, and q.k of every query against every key of the image: 2*8*60^2 = 57,600
    base = 23_040 + 57_600
    grid = (1, 6, 10)
    # dominant 8, contextual 3, pooled w=2: 7 left, pool min(6, 7) = 6, 3 targets, 3 candidates:
    # key similarity 2*3*3*head_dim 4 = 72, one-hot merge 2*3*3*out_hidden 16 = 288
    pooled = QWEN_TINY.stage1_scoring_flops(grid, dominant=8, contextual=3, mode="pooled", cluster_width=2)
    assert pooled == base + 72 + 288
    # uniform: all 7 left are candidates, 4 of them members: 2*4*3*(4 + 16) = 480
    assert QWEN_TINY.stage1_scoring_flops(grid, dominant=8, contextual=3, mode="uniform") == base + 480
    # clamped to the image: d = min(20, 14) = 14, c = min(5, 1) = 1; one token left, the target: no merge
    clamped = QWEN_TINY.stage1_scoring_flops(grid, dominant=20, contextual=5, mode="uniform")
    assert clamped == base
    # no contextual tokens: nothing merges
    assert QWEN_TINY.stage1_scoring_flops(grid, dominant=8, contextual=0, mode="uniform") == base


def test_qwen_tower_equals_torch_flop_counter() -> None:
    """The stock tower on eager attention under torch's FlopCounterMode counts exactly our actual FLOPs
    (every matmul and the Conv3d), stage-1 scoring included, on grids with partial windows."""
    import torch
    from tiny_qwen import build_tiny_qwen, image_pixels
    from tiny_qwen import profile as qwen_profile
    from torch.utils.flop_counter import FlopCounterMode

    from duet_cli.engine.session import apply_profile

    model = build_tiny_qwen()
    model.set_attn_implementation("eager")  # SDPA's matmuls are invisible to the counter
    arch = Architecture.from_config(model.config)
    vz = {"dominant": 10, "contextual": 5, "contextual_mode": "pooled"}
    vz_profile = qwen_profile("vz", vision=vz)
    for grid in [(1, 12, 10), (1, 6, 14)]:
        pixels, thw = image_pixels(grid, seed=0), torch.tensor([grid])
        with torch.no_grad(), FlopCounterMode(display=False) as stock:
            model.model.visual(pixels, grid_thw=thw)
        v = vision_flops(arch, images=1, tokens_to_llm_per_image=15, grid=grid)
        assert stock.get_total_flops() == v.actual
        with apply_profile(model, vz_profile), torch.no_grad(), FlopCounterMode(display=False) as reduced:
            model.model.get_image_features(pixels, thw)
        scoring = arch.vision.stage1_scoring_flops(
            grid, dominant=10, contextual=5, mode="pooled", cluster_width=4
        )
        assert reduced.get_total_flops() == v.actual + scoring


def test_qwen_from_config() -> None:
    from tiny_qwen import tiny_qwen_config

    arch = Architecture.from_config(tiny_qwen_config())
    assert arch.vision == QwenVisionArch(14, 2, 2, 56, 32, 64, 4, 2, (2,), 64, 896)
    # Qwen2's text config has no head_dim: hidden / heads = 16; vocab 160
    assert arch.text == TextArch(64, 128, 8, 4, 2, 16, 160)


QWEN_7B = Architecture.from_card(get_card("qwen2.5-vl-7b").architecture, "qwen2_5_vl")


def test_qwen_cards() -> None:
    # the cards' numbers plus the published checkpoints' window layout; the merger projects to the decoder
    assert QWEN_7B.vision == QwenVisionArch(14, 2, 2, 112, 1280, 3420, 32, 16, (7, 15, 23, 31), 3584, 896)
    assert QWEN_7B.text == TextArch(3584, 18944, 28, 28, 4, 128, 152064)
    qwen_3b = Architecture.from_card(get_card("qwen2.5-vl-3b").architecture, "qwen2_5_vl")
    assert qwen_3b.vision.out_hidden == 2048
    # the reference image is the one the profile arithmetic uses: 896 px, 64 x 64 patches, 1024 tokens
    assert QWEN_7B.vision.reference_grid() == (1, 64, 64)
    assert QWEN_7B.vision.merged_tokens((1, 64, 64)) == dims_for("qwen2.5-vl-7b").unreduced_tokens == 1024


def test_qwen_7b_vision_by_hand() -> None:
    # reference image: 64 x 64 = 4096 patches, 1024 merged; windows of 112 px = 8 x 8 patches: 64 windows
    # patch embedding: 2 * 4096 * 1176 * 1280 = 12,331,253,760
    # per block: qkv + proj 8 * 4096 * 1280^2 = 53,687,091,200; SwiGLU 6 * 4096 * 1280 * 3420 =
    #   107,583,897,600; attention windowed 4 * 1280 * 64 * 64^2 = 1,342,177,280, full 4 * 1280 * 4096^2 =
    #   85,899,345,920 (blocks 7, 15, 23, 31)
    encoder = 32 * (53_687_091_200 + 107_583_897_600) + 28 * 1_342_177_280 + 4 * 85_899_345_920
    assert encoder == 5_541_849_989_120
    # merger: 1024 units * (2 * 5120^2 + 2 * 5120 * 3584) = 1024 * 89,128,960 = 91,268,055,040
    v = vision_flops(QWEN_7B, images=1, tokens_to_llm_per_image=1024)
    assert (v.patch_embed, v.encoder, v.projector) == (12_331_253_760, encoder, 91_268_055_040)
    assert v.actual == 5_645_449_297_920

    # paper: 28 windowed blocks of 64 spans of 64 patches, 4 full blocks of one 4096-patch span
    def paper(n: int) -> int:
        return 4 * n * 1280**2 + 2 * n * n * 1280 + 2 * n * 1280 * 3420

    assert v.paper == 28 * 64 * paper(64) + 4 * paper(4096) == 2_197_144_207_360
    # qwen-duet-640 stage 1: qkv 2 * 4096 * 1280 * 3840 = 40,265,318,400; scores 2 * 1280 * 4096^2 =
    # 42,949,672,960; d = 540, c = 100 of 1024, pooled w=4: pool 400, 300 members:
    # similarity 2 * 300 * 100 * 80 = 4,800,000, merge 2 * 300 * 100 * 3584 = 215,040,000
    s = QWEN_7B.vision.stage1_scoring_flops(
        (1, 64, 64), dominant=540, contextual=100, mode="pooled", cluster_width=4
    )
    assert s == 40_265_318_400 + 42_949_672_960 + 4_800_000 + 215_040_000 == 83_434_831_360
