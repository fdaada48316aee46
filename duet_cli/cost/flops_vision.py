"""FLOP arithmetic of the vision towers (no torch, no weights): CLIP with LLaVA's projector, and
Qwen2.5-VL's windowed ViT with its patch merger. `duet_cli.cost.flops` puts them together with the decoder.

Both towers answer the `VisionTower` protocol for a patch grid `(t, h, w)` (CLIP: always its own fixed
grid; Qwen2.5-VL: every image has its own, from the image processor). Counts follow the *actual*
convention of `duet_cli.cost.flops`: 2 FLOPs per multiply-add of every matrix product that runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from duet_cli.dims import QWEN_REFERENCE_SIDE

Grid = tuple[int, int, int]  # (t, h, w) in patches, as the Qwen image processor's image_grid_thw


@dataclass(frozen=True)
class TowerFlops:
    """One image through a tower, actual FLOPs."""

    patch_embed: int
    encoder: int  # every encoder layer / vision block
    projector: int  # CLIP: LLaVA's MLP projector on the tokens fed to the LLM; Qwen: the patch merger


class VisionTower(Protocol):
    """What `duet_cli.cost.flops` needs from a vision tower's arithmetic."""

    @property
    def hidden(self) -> int: ...
    @property
    def intermediate(self) -> int: ...

    def reference_grid(self) -> Grid:
        """The grid of the image that config-only arithmetic assumes."""
        ...

    def attention_spans(self, grid: Grid) -> list[list[int]]:
        """Per encoder layer, the sizes of the token groups that attend among themselves."""
        ...

    def tower_flops(self, grid: Grid, *, tokens_to_llm: int, llm_hidden: int) -> TowerFlops: ...

    def stage1_tokens(self, grid: Grid) -> int:
        """The tokens of one image that stage 1 selects from (budget-relative counts are shares of them)."""
        ...

    def stage1_scoring_flops(
        self, grid: Grid, *, dominant: int, contextual: int, mode: str, cluster_width: int
    ) -> int:
        """What VisionZip adds per image: the scores, and the key similarity and merge products."""
        ...


def merge_candidates(remaining: int, contextual: int, mode: str, cluster_width: int) -> int:
    """Tokens that join a contextual target (`select_and_merge`): every remaining token (uniform) or the
    pool of the `w * c` best-scored ones (pooled), less the `c` targets themselves."""
    if contextual <= 0:
        return 0
    pool = remaining if mode == "uniform" else min(max(1, cluster_width * contextual), remaining)
    return max(0, pool - contextual)


# ---------------------------------------------------------------------------------------------------------
# CLIP (LLaVA-1.5, Video-LLaVA)


@dataclass(frozen=True)
class VisionArch:
    """A CLIP-style vision encoder: standard MHA, two-matrix MLP, one CLS token, one fixed grid."""

    image_size: int
    patch_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    channels: int = 3

    @classmethod
    def from_card(cls, v: Mapping[str, Any], text: Mapping[str, Any]) -> VisionArch:
        """From a catalog card's `architecture.vision` (and `.text`, unused here)."""
        return cls(
            image_size=int(v["image_size"]),
            patch_size=int(v["patch_size"]),
            hidden=int(v["hidden_size"]),
            intermediate=int(v["intermediate_size"]),
            layers=int(v["num_layers"]),
            heads=int(v["num_heads"]),
        )

    @classmethod
    def from_config(cls, vc: Any) -> VisionArch:
        """From a transformers CLIPVisionConfig."""
        return cls(
            image_size=int(vc.image_size),
            patch_size=int(vc.patch_size),
            hidden=int(vc.hidden_size),
            intermediate=int(vc.intermediate_size),
            layers=int(vc.num_hidden_layers),
            heads=int(vc.num_attention_heads),
            channels=int(vc.num_channels),
        )

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """Tokens per image inside the encoder (patches + CLS; 577 for CLIP-L/336)."""
        return self.patches + 1

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def reference_grid(self) -> Grid:
        side = self.image_size // self.patch_size
        return (1, side, side)

    def _check(self, grid: Grid) -> None:
        if grid != self.reference_grid():
            raise ValueError(f"a CLIP tower has one grid, {self.reference_grid()}; got {grid}")

    def attention_spans(self, grid: Grid) -> list[list[int]]:
        self._check(grid)
        return [[self.tokens] for _ in range(self.layers)]

    def tower_flops(self, grid: Grid, *, tokens_to_llm: int, llm_hidden: int) -> TowerFlops:
        """The encoder runs on every token (stage 1 does not shorten it); the projector sees the reduced
        count. The stock tower runs every layer, including the one after LLaVA's feature layer."""
        self._check(grid)
        return TowerFlops(
            patch_embed=patch_embed_flops(self),
            encoder=self.layers * vision_layer_flops(self, self.tokens),
            projector=llava_projector_flops(self, llm_hidden, tokens_to_llm),
        )

    def stage1_tokens(self, grid: Grid) -> int:
        """The encoder's tokens, CLS included."""
        self._check(grid)
        return self.tokens

    def stage1_scoring_flops(
        self, grid: Grid, *, dominant: int, contextual: int, mode: str, cluster_width: int = 1
    ) -> int:
        """The CLS query row and all keys from q_proj/k_proj, the CLS-to-token scores, and the key
        similarity of each merge candidate to the contextual targets (keys averaged over heads)."""
        self._check(grid)
        n, h = self.tokens, self.hidden
        scoring = 2 * h * h + 2 * n * h * h + 2 * n * h
        candidates = merge_candidates(n - dominant, contextual, mode, cluster_width)
        return scoring + 2 * candidates * contextual * self.head_dim


def vision_layer_flops(v: VisionArch, n: int) -> int:
    """Actual FLOPs of one CLIP encoder layer over n tokens (bidirectional attention)."""
    projections = 2 * n * v.hidden * v.hidden * 4  # q, k, v, o
    mlp = 2 * 2 * n * v.hidden * v.intermediate
    attention = 2 * 2 * n * n * v.hidden
    return projections + mlp + attention


def patch_embed_flops(v: VisionArch) -> int:
    """The patch-embedding convolution: one (channels * p * p) x hidden product per patch."""
    return 2 * v.patches * v.channels * v.patch_size * v.patch_size * v.hidden


def llava_projector_flops(v: VisionArch, llm_hidden: int, tokens: int) -> int:
    """LLaVA's two-layer MLP projector (vision hidden -> LLM hidden -> LLM hidden) on `tokens` tokens."""
    return 2 * tokens * (v.hidden * llm_hidden + llm_hidden * llm_hidden)


# ---------------------------------------------------------------------------------------------------------
# Qwen2.5-VL (transformers' Qwen2_5_VisionTransformerPretrainedModel)

# vision numbers a catalog card may leave out: those of every published checkpoint (3B, 7B, 72B)
QWEN_CARD_DEFAULTS: dict[str, Any] = {
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": (7, 15, 23, 31),
}


@dataclass(frozen=True)
class QwenVisionArch:
    """Qwen2.5-VL's ViT: a Conv3d patch embedding over (channels x temporal x p x p), `layers` blocks of
    RMSNorm + fused qkv + proj and a SwiGLU MLP, attending within windows of `window_size` px except in
    the `full_attention` blocks, which attend over the whole image (each frame); no CLS token. The patch
    merger (RMSNorm, then an MLP hidden*m^2 -> hidden*m^2 -> out_hidden on each m x m unit) produces the
    tokens the LLM reads, so stage 1 selects and merges after it, `out_hidden` wide."""

    patch_size: int
    temporal_patch_size: int
    merge_size: int
    window_size: int  # px
    hidden: int
    intermediate: int
    layers: int
    heads: int
    full_attention: tuple[int, ...]  # block indexes (0-based) with full attention
    out_hidden: int  # the LLM's embedding width
    reference_side: int  # px: the square image of config-only arithmetic (duet_cli.dims)
    channels: int = 3

    @classmethod
    def from_card(cls, v: Mapping[str, Any], text: Mapping[str, Any]) -> QwenVisionArch:
        """From a catalog card's `architecture.vision` and `.text`: the vision numbers a card leaves out
        are those of every published checkpoint (QWEN_CARD_DEFAULTS), the merger's width is the decoder's,
        and the card's `image_size` is the reference image of the profile arithmetic."""
        q = {**QWEN_CARD_DEFAULTS, "out_hidden_size": text["hidden_size"], **v}
        return cls(
            patch_size=int(q["patch_size"]),
            temporal_patch_size=int(q["temporal_patch_size"]),
            merge_size=int(q["spatial_merge_size"]),
            window_size=int(q["window_size"]),
            hidden=int(q["hidden_size"]),
            intermediate=int(q["intermediate_size"]),
            layers=int(q["num_layers"]),
            heads=int(q["num_heads"]),
            full_attention=tuple(int(i) for i in q["fullatt_block_indexes"]),
            out_hidden=int(q["out_hidden_size"]),
            reference_side=int(q["image_size"]),
        )

    @classmethod
    def from_config(cls, vc: Any) -> QwenVisionArch:
        """From a transformers Qwen2_5_VLVisionConfig; the reference image is duet_cli.dims's."""
        return cls(
            patch_size=int(vc.patch_size),
            temporal_patch_size=int(vc.temporal_patch_size),
            merge_size=int(vc.spatial_merge_size),
            window_size=int(vc.window_size),
            hidden=int(vc.hidden_size),
            intermediate=int(vc.intermediate_size),
            layers=int(vc.depth),
            heads=int(vc.num_heads),
            full_attention=tuple(int(i) for i in vc.fullatt_block_indexes),
            out_hidden=int(vc.out_hidden_size),
            reference_side=QWEN_REFERENCE_SIDE,
            channels=int(vc.in_channels),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def window_units(self) -> int:
        """Merge units per window side (stock: window_size // merge_size // patch_size)."""
        return self.window_size // self.merge_size // self.patch_size

    def reference_grid(self) -> Grid:
        side = self.reference_side // self.patch_size
        return (1, side, side)

    def merged_tokens(self, grid: Grid) -> int:
        t, h, w = self._checked(grid)
        return t * h * w // (self.merge_size * self.merge_size)

    def stage1_tokens(self, grid: Grid) -> int:
        """Stage 1 selects among the merger's output tokens."""
        return self.merged_tokens(grid)

    def _checked(self, grid: Grid) -> Grid:
        _, h, w = grid
        if min(grid) < 1 or h % self.merge_size or w % self.merge_size:
            raise ValueError(f"grid {grid}: h and w must be positive multiples of {self.merge_size}")
        return grid

    def windows(self, grid: Grid) -> list[int]:
        """Patches in each attention window of the windowed blocks, frame by frame, in the order of
        transformers' `get_vision_window_index`: windows of `window_units` merge units a side, the last
        row and column of windows partial when the grid does not divide."""
        t, h, w = self._checked(grid)
        side, unit = self.window_units, self.merge_size * self.merge_size
        if side < 1:
            raise ValueError(f"window_size {self.window_size} px is smaller than one merge unit")

        def cuts(n: int) -> list[int]:
            return [min(side, n - start) for start in range(0, n, side)]

        rows, cols = cuts(h // self.merge_size), cuts(w // self.merge_size)
        return [r * c * unit for _ in range(t) for r in rows for c in cols]

    def attention_spans(self, grid: Grid) -> list[list[int]]:
        t, h, w = self._checked(grid)
        full, windowed = [h * w] * t, self.windows(grid)
        return [full if i in self.full_attention else windowed for i in range(self.layers)]

    def block_flops(self, patches: int, spans: list[int]) -> int:
        """One vision block over `patches` patches attending in groups `spans`: fused qkv (hidden ->
        3 hidden) and proj, scores and weighted sum over every head (heads x head_dim = hidden), SwiGLU."""
        h = self.hidden
        projections = 2 * patches * h * 3 * h + 2 * patches * h * h
        attention = 2 * 2 * h * sum(s * s for s in spans)
        mlp = 3 * 2 * patches * h * self.intermediate
        return projections + attention + mlp

    def tower_flops(self, grid: Grid, *, tokens_to_llm: int, llm_hidden: int) -> TowerFlops:
        """Every block on every patch and the merger on every merge unit: stage 1 reduces after the
        merger, so neither depends on `tokens_to_llm`; `llm_hidden` is the merger's own out_hidden."""
        t, h, w = self._checked(grid)
        patches = t * h * w
        kernel = self.channels * self.temporal_patch_size * self.patch_size * self.patch_size
        merged = self.merge_size * self.merge_size * self.hidden
        return TowerFlops(
            patch_embed=2 * patches * kernel * self.hidden,
            encoder=sum(self.block_flops(patches, spans) for spans in self.attention_spans(grid)),
            projector=self.merged_tokens(grid) * (2 * merged * merged + 2 * merged * self.out_hidden),
        )

    def stage1_scoring_flops(
        self, grid: Grid, *, dominant: int, contextual: int, mode: str, cluster_width: int = 1
    ) -> int:
        """What `duet_cli.families.qwen2_5_vl.stage1` adds: the hook recomputes the last full-attention
        block's fused qkv on every patch and the q.k scores of every query against every key of its frame (the
        attention received; no weighted sum); per-unit and per-head means are elementwise. Then, on the
        N merged tokens with counts clamped to the image (d = min(dominant, N - 1), c = min(contextual,
        N - d)): each candidate's key similarity to the c targets (head_dim wide) and the one-hot matmul
        that sums the members into their targets (out_hidden wide)."""
        t, h, w = self._checked(grid)
        patches, hd = t * h * w, self.hidden
        scoring = 2 * patches * hd * 3 * hd + 2 * hd * t * (h * w) ** 2
        n = self.merged_tokens(grid)
        d = max(0, min(dominant, n - 1))
        c = max(0, min(contextual, n - d))
        candidates = merge_candidates(n - d, c, mode, cluster_width)
        return scoring + 2 * candidates * c * (self.head_dim + self.out_hidden)
