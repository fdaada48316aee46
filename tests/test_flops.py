"""FLOP and KV-cache arithmetic against hand computations written out term by term.

Nothing here calls back into duet_cli.flops to get an expected value: every number is expanded by hand
(a tiny config small enough to check on paper, and the LLaVA-1.5-7B card).
"""

from __future__ import annotations

import pytest

from duet_cli.catalog import get_card
from duet_cli.flops import (
    Architecture,
    TextArch,
    VisionArch,
    decode_step_flops,
    kv_cache_bytes,
    prefill_flops,
    stage1_scoring_flops,
    stage2_ranking_flops,
    vision_flops,
)

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
    assert stage1_scoring_flops(TINY.vision, dominant=2, contextual=1, mode="uniform") == 864
    # pooled with width 1: pool = min(max(1, 1*1), 3) = 1 token, which is the target: no candidates
    assert stage1_scoring_flops(TINY.vision, dominant=2, contextual=1, mode="pooled", cluster_width=1) == 848
    # stage 2 ranking on 7 tokens with 2 query rows: q 2*2*8*8 = 256, k 2*7*8*4 = 448, scores 2*2*4*2*7 = 224
    assert stage2_ranking_flops(TINY.text, tokens=7, query_rows=2) == 928


LLAVA_7B = Architecture.from_card(get_card("llava-1.5-7b").architecture)


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
