"""FLOP and KV-cache arithmetic for a VLM from its architecture numbers (no torch, no weights).

Two conventions, side by side:
- **paper**: the per-layer formula of FastV / VisionZip / PyramidDrop, `4nd^2 + 2n^2d + 2ndm` with n the
  tokens in that layer, d the hidden size and m the FFN size (it counts multiply-adds of a standard
  MHA block with a two-matrix FFN and full, non-causal attention; no lm_head, no projector). In a vision
  tower n is the tokens that attend together, summed over those groups: CLIP, the 577 tokens of an
  image in every layer; Qwen2.5-VL, one window's patches in the windowed blocks and the whole image's
  patches in the full-attention blocks (linear terms add up to all patches; no merger);
- **actual**: 2 FLOPs per multiply-add of every matrix product that runs: q/k/v/o with grouped-query
  sizes, the three SwiGLU matrices, attention scores and the weighted sum counted *causally* in the LLM
  prefill (query i attends to i keys) and fully in the bidirectional vision encoder (per window where
  Qwen2.5-VL attends in windows), the lm_head on the last token only (`generate` keeps one logit row at
  prefill), the patch embedding, all encoder layers (the stock tower runs every layer, including the one
  after LLaVA's feature layer) and the projector (Qwen2.5-VL: the patch merger); see
  `duet_cli.cost.flops_vision` for each tower. Norms, rotary, softmax, activations and residual adds are
  elementwise and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from duet_cli.cost.flops_vision import Grid, QwenVisionArch, VisionArch, VisionTower
from duet_cli.errors import ModelNotFoundError


@dataclass(frozen=True)
class TextArch:
    """A Llama-style decoder: grouped-query attention, SwiGLU MLP (Qwen2's decoder too)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


# the vision tower of each family (card `family` / config `model_type`)
CARD_TOWERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], VisionTower]] = {
    "llava": VisionArch.from_card,
    "video_llava": VisionArch.from_card,
    "qwen2_5_vl": QwenVisionArch.from_card,
}
CONFIG_TOWERS: dict[str, Callable[[Any], VisionTower]] = {
    "llava": VisionArch.from_config,
    "video_llava": VisionArch.from_config,
    "qwen2_5_vl": QwenVisionArch.from_config,
}


_Builder = TypeVar("_Builder")


def _tower(table: Mapping[str, _Builder], family: str) -> _Builder:
    if family not in table:
        raise ModelNotFoundError(
            f"no FLOP arithmetic for model family {family!r} (known: {', '.join(sorted(table))})"
        )
    return table[family]


@dataclass(frozen=True)
class Architecture:
    """Vision tower (with its projector or merger) + decoder."""

    vision: VisionTower
    text: TextArch

    @classmethod
    def from_card(cls, arch: Mapping[str, Any], family: str) -> Architecture:
        """From a catalog card's `architecture` mapping and `family` (see models/*.yaml)."""
        v, t = arch["vision"], arch["text"]
        return cls(
            vision=_tower(CARD_TOWERS, family)(v, t),
            text=TextArch(
                hidden=int(t["hidden_size"]),
                intermediate=int(t["intermediate_size"]),
                layers=int(t["num_layers"]),
                heads=int(t["num_heads"]),
                kv_heads=int(t["num_kv_heads"]),
                head_dim=int(t["head_dim"]),
                vocab=int(t["vocab_size"]),
            ),
        )

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        """From a transformers config object (attributes only; nothing is imported or built)."""
        vc, tc = config.vision_config, config.text_config
        heads = int(tc.num_attention_heads)
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // heads  # Qwen2's text config has none
        return cls(
            vision=_tower(CONFIG_TOWERS, str(config.model_type))(vc),
            text=TextArch(
                hidden=int(tc.hidden_size),
                intermediate=int(tc.intermediate_size),
                layers=int(tc.num_hidden_layers),
                heads=heads,
                kv_heads=int(getattr(tc, "num_key_value_heads", None) or heads),
                head_dim=int(head_dim),
                vocab=int(tc.vocab_size),
            ),
        )


# ---------------------------------------------------------------------------------------------------------
# Per-layer building blocks


def paper_layer_flops(n: int, d: int, m: int) -> int:
    """The papers' per-layer formula: 4nd^2 + 2n^2d + 2ndm."""
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def causal_pairs(n: int) -> int:
    """(query, key) pairs of causal attention over n tokens: n(n+1)/2."""
    return n * (n + 1) // 2


def text_layer_flops(t: TextArch, n: int, *, causal: bool = True) -> int:
    """Actual FLOPs of one decoder layer's prefill over n tokens."""
    q_width, kv_width = t.heads * t.head_dim, t.kv_heads * t.head_dim
    projections = 2 * n * t.hidden * (q_width + 2 * kv_width) + 2 * n * q_width * t.hidden
    mlp = 3 * 2 * n * t.hidden * t.intermediate
    pairs = causal_pairs(n) if causal else n * n
    attention = 2 * 2 * t.heads * t.head_dim * pairs  # scores q.k and the weighted sum of v
    return projections + mlp + attention


def text_decode_layer_flops(t: TextArch, cache_len: int) -> int:
    """Actual FLOPs of one decoder layer for one new token attending to `cache_len` cached tokens + itself."""
    return text_layer_flops(t, 1) + 2 * 2 * t.heads * t.head_dim * cache_len


def paper_decode_layer_flops(cache_len: int, d: int, m: int) -> int:
    """The papers' formula for one query token against cache_len + 1 keys: 4d^2 + 2(c+1)d + 2dm."""
    return 4 * d * d + 2 * (cache_len + 1) * d + 2 * d * m


def lm_head_flops(t: TextArch, rows: int = 1) -> int:
    return 2 * rows * t.hidden * t.vocab


def stage2_ranking_flops(t: TextArch, *, tokens: int, query_rows: int) -> int:
    """What one PyramidDrop drop point adds: q_proj on the query rows, k_proj on every token, the scores."""
    q_width, kv_width = t.heads * t.head_dim, t.kv_heads * t.head_dim
    return (
        2 * query_rows * t.hidden * q_width
        + 2 * tokens * t.hidden * kv_width
        + 2 * t.heads * t.head_dim * query_rows * tokens
    )


# ---------------------------------------------------------------------------------------------------------
# Whole-model results


@dataclass(frozen=True)
class FlopPair:
    """One quantity in both conventions."""

    paper: int
    actual: int


@dataclass(frozen=True)
class VisionFlops:
    paper: int  # the formula with the tower's dims over every layer's attention spans
    actual: int  # patch embedding + every encoder layer + projector (Qwen: merger) + stage-1 scoring
    patch_embed: int
    encoder: int
    projector: int
    scoring: int  # stage-1 overhead (0 without stage 1)


@dataclass(frozen=True)
class PrefillFlops:
    paper: int
    actual: int  # layers + ranking overhead + lm_head on the last token
    paper_per_layer: list[int] = field(default_factory=list)
    actual_per_layer: list[int] = field(default_factory=list)
    ranking: int = 0  # stage-2 overhead included in `actual`
    lm_head: int = 0


@dataclass(frozen=True)
class KvCache:
    bytes: int
    per_layer_tokens: list[int]
    bytes_per_element: int


def vision_flops(
    a: Architecture,
    *,
    images: int,
    tokens_to_llm_per_image: int,
    scoring_per_image: int = 0,
    grid: Grid | None = None,
) -> VisionFlops:
    """`images` images of one patch `grid` (default: the tower's reference grid) through the tower. The
    encoder runs on every token (stage 1 does not shorten it); LLaVA's projector sees the reduced count,
    Qwen's merger every merge unit. `scoring_per_image` is the tower's `stage1_scoring_flops` when
    VisionZip is on. Paper: the formula summed over each layer's attention spans (see the module doc)."""
    v = a.vision
    g = grid if grid is not None else v.reference_grid()
    tower = v.tower_flops(g, tokens_to_llm=tokens_to_llm_per_image, llm_hidden=a.text.hidden)
    per_image_paper = sum(
        paper_layer_flops(n, v.hidden, v.intermediate) for spans in v.attention_spans(g) for n in spans
    )
    patch, encoder = images * tower.patch_embed, images * tower.encoder
    projector, scoring = images * tower.projector, images * scoring_per_image
    return VisionFlops(
        paper=images * per_image_paper,
        actual=patch + encoder + projector + scoring,
        patch_embed=patch,
        encoder=encoder,
        projector=projector,
        scoring=scoring,
    )


def tokens_per_layer(visual_ledger: Sequence[int], text_tokens: int) -> list[int]:
    """Prompt tokens each decoder layer processes: the text plus that layer's visual tokens."""
    return [text_tokens + n for n in visual_ledger]


def prefill_flops(
    t: TextArch,
    visual_ledger: Sequence[int],
    text_tokens: int,
    *,
    causal: bool = True,
    ranking: int = 0,
) -> PrefillFlops:
    """LLM prefill of one prompt whose layer l sees `visual_ledger[l]` visual tokens plus the text."""
    if len(visual_ledger) != t.layers:
        raise ValueError(f"ledger has {len(visual_ledger)} layers, the decoder {t.layers}")
    ns = tokens_per_layer(visual_ledger, text_tokens)
    paper = [paper_layer_flops(n, t.hidden, t.intermediate) for n in ns]
    actual = [text_layer_flops(t, n, causal=causal) for n in ns]
    head = lm_head_flops(t)
    return PrefillFlops(
        paper=sum(paper),
        actual=sum(actual) + ranking + head,
        paper_per_layer=paper,
        actual_per_layer=actual,
        ranking=ranking,
        lm_head=head,
    )


def decode_step_flops(t: TextArch, cache_lengths: Sequence[int]) -> FlopPair:
    """One generated token with per-layer cache lengths (ragged); actual includes the lm_head row."""
    if len(cache_lengths) != t.layers:
        raise ValueError(f"{len(cache_lengths)} cache lengths for {t.layers} decoder layers")
    paper = sum(paper_decode_layer_flops(c, t.hidden, t.intermediate) for c in cache_lengths)
    actual = sum(text_decode_layer_flops(t, c) for c in cache_lengths) + lm_head_flops(t)
    return FlopPair(paper=paper, actual=actual)


def kv_cache_bytes(t: TextArch, per_layer_tokens: Sequence[int], bytes_per_element: int) -> KvCache:
    """Keys and values of every layer, each holding the tokens that layer saw (the cache is ragged)."""
    total = sum(2 * t.kv_heads * t.head_dim * n * bytes_per_element for n in per_layer_tokens)
    return KvCache(bytes=total, per_layer_tokens=list(per_layer_tokens), bytes_per_element=bytes_per_element)
