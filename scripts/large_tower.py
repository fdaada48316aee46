"""The bundled model's vision tower for `synth-large`: dense per-patch targets and the CLS objective.

A stock `CLIPVisionModel` (336 px, patch 14: 576 patches + CLS, LLaVA-1.5's geometry) trained from
nothing on `synth-large` train scenes. LLaVA reads `hidden_states[-2]`, the output of the second-last
layer, so the heads sit there and the last layer is never run while training (it stays at its random
initialisation and its output is never read; a stock LLaVA computes and drops it).

Targets, at the feature layer (`patch_targets`, one row per patch, 0 = background or "none"):
  colour (every patch, background included); on object patches only: shape, size class, the object's
  rank from the left and from the top (what relation questions compare), how many objects share its
  shape, how many objects the image holds (what counting questions ask), whether its object carries a
  glyph and, on a carrier's patches, which glyph (every patch of the carrier, so any kept patch of the
  object can answer a reading question); the colour of each patch within two rows and columns (the
  neighbour objective: attention must look at neighbours, which shape and glyphs need); on the CLS
  token, the multi-label presence of each colour, shape and glyph. CLS attention on content: at the
  layer VisionZip scores (the self-attention whose output is `hidden_states[-2]`), -log(the CLS
  query's attention mass on object patches), mean over heads, so stage 1's dominant tokens are the
  objects. Initialisation: 2-D sin-cos positions, or `local_attention_init` (below).

`probe` reports per-patch shape and glyph accuracy on object patches and the CLS attention mass on
object patches on `synth-large` val: the gate the decoder waits for (shape >= 95%, glyph >= 90%, CLS
mass >= 0.9).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from build_tiny_model import CLIP_MEAN, CLIP_STD
from torch import nn

from duet_cli.benchmarks.synth import LARGE, scene_for
from duet_cli.benchmarks.synth_scene import (
    COLORS,
    DIGITS,
    LETTERS,
    PATCH,
    SHAPES,
    SIZE,
    Scene,
    _mask,
    render,
)

GRID = SIZE // PATCH
COLOR_NAMES = list(COLORS)
GLYPHS = list(LETTERS) + list(DIGITS)
SIZE_NAMES = [name for name, _, _ in LARGE.geometry.size_classes]
MAX_OBJECTS = LARGE.geometry.objects[1]

# head name -> number of classes (class 0: background / none)
HEADS = {
    "color": 1 + len(COLOR_NAMES),
    "shape": 1 + len(SHAPES),
    "glyph": 1 + len(GLYPHS),
    "size": 1 + len(SIZE_NAMES),
    "xrank": 1 + MAX_OBJECTS,
    "yrank": 1 + MAX_OBJECTS,
    "same_shape": 1 + MAX_OBJECTS,
    "objects": 1 + MAX_OBJECTS,
}
WEIGHTS = {"glyph": 1.0, "shape": 1.0}
PRESENCE = len(COLOR_NAMES) + len(SHAPES) + len(GLYPHS)
# neighbourhood objective: each patch names the colour of the patches around it (0 = background or
# outside the image), so attention learns to look at its neighbours, which shape and glyphs need
OFFSETS = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3) if (dr, dc) != (0, 0)]


def neighbour_colors(color: torch.Tensor) -> torch.Tensor:
    """(B, 576) colour classes -> (B, 576, len(OFFSETS)): the class of the patch at each offset."""
    grid = F.pad(color.view(-1, GRID, GRID), (2, 2, 2, 2), value=0)
    views = [grid[:, 2 + dr : 2 + dr + GRID, 2 + dc : 2 + dc + GRID] for dr, dc in OFFSETS]
    return torch.stack([v.reshape(-1, GRID * GRID) for v in views], dim=-1)


def owners(scene: Scene) -> np.ndarray:
    """Per patch (576): the index of the object covering it, or -1. A patch belongs to the object
    covering most of it, or to one covering at least a quarter of it when background covers the rest."""
    owner = np.full((SIZE, SIZE), -1, dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        region = owner[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
        region[_mask(obj)] = k
    blocks = owner.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    out = np.full(GRID * GRID, -1, dtype=np.int64)
    for p, block in enumerate(blocks):
        ids, counts = np.unique(block, return_counts=True)
        k = int(ids[counts.argmax()])
        if k < 0 and (ids >= 0).any() and counts[ids >= 0].max() >= PATCH * PATCH // 4:
            k = int(ids[ids >= 0][counts[ids >= 0].argmax()])
        out[p] = k
    return out


def patch_targets(scene: Scene) -> dict[str, np.ndarray]:
    objs = scene.objects
    xrank = {k: r for r, k in enumerate(sorted(range(len(objs)), key=lambda k: objs[k].cx))}
    yrank = {k: r for r, k in enumerate(sorted(range(len(objs)), key=lambda k: objs[k].cy))}
    shapes = [o.shape for o in objs]
    per_object = {
        "color": [1 + COLOR_NAMES.index(o.color) for o in objs],
        "shape": [1 + SHAPES.index(o.shape) for o in objs],
        "glyph": [0 if o.glyph is None else 1 + GLYPHS.index(o.glyph) for o in objs],
        "size": [1 + SIZE_NAMES.index(o.size_class) for o in objs],
        "xrank": [1 + xrank[k] for k in range(len(objs))],
        "yrank": [1 + yrank[k] for k in range(len(objs))],
        "same_shape": [shapes.count(o.shape) for o in objs],
        "objects": [len(objs)] * len(objs),
    }
    own = owners(scene)
    out = {}
    for name, values in per_object.items():
        table = np.array([0, *values], dtype=np.int64)  # owner -1 -> row 0
        out[name] = table[own + 1]
    out["objects"][:] = len(objs)  # every patch, background included, knows the count
    out["content"] = own >= 0
    return out


def presence(scene: Scene) -> np.ndarray:
    labels = np.zeros(PRESENCE, dtype=np.float32)
    for obj in scene.objects:
        labels[COLOR_NAMES.index(obj.color)] = 1
        labels[len(COLOR_NAMES) + SHAPES.index(obj.shape)] = 1
        if obj.glyph is not None:
            labels[len(COLOR_NAMES) + len(SHAPES) + GLYPHS.index(obj.glyph)] = 1
    return labels


def pixels(scene: Scene) -> torch.Tensor:
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (torch.from_numpy(np.array(render(scene))).permute(2, 0, 1) / 255.0 - mean) / std


def scene_batch(split: str, indices: list[int]) -> dict[str, torch.Tensor]:
    scenes = [scene_for(split, i, variant=LARGE) for i in indices]
    targets = [patch_targets(s) for s in scenes]
    batch = {name: torch.from_numpy(np.stack([t[name] for t in targets])) for name in targets[0]}
    batch["pixels"] = torch.stack([pixels(s) for s in scenes])
    batch["presence"] = torch.from_numpy(np.stack([presence(s) for s in scenes]))
    return batch


def sincos_positions(dim: int, scale: float = 0.5) -> torch.Tensor:
    """(1 + 576, dim): row 0 (CLS) zero; patch (r, c) gets sin/cos of r in the first half, of c in the
    second, at geometrically spaced frequencies (the 2-D form of the Transformer's encoding)."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))
    grid = torch.arange(GRID, dtype=torch.float32)
    rows, cols = grid.repeat_interleave(GRID), grid.repeat(GRID)
    parts = [f(v[:, None] * freqs) for v in (rows, cols) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)
    return scale * torch.cat([torch.zeros(1, dim), table], dim=0)


class TowerTrainer(nn.Module):
    """The tower with its training heads. Only layers 0..n-2 run: their output is LLaVA's feature."""

    def __init__(self, vision: dict[str, Any], init: str = "sincos") -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig(**vision)
        config._attn_implementation = "sdpa"
        self.tower = CLIPVisionModel(config)
        h = config.hidden_size
        self.heads = nn.Linear(h, sum(HEADS.values()))
        self.presence = nn.Linear(h, PRESENCE)
        self.neighbours = nn.Linear(h, len(OFFSETS) * HEADS["color"])
        if init in ("local", "local-values"):
            local_attention_init(self.tower_module(), value_gain=0.5 if init == "local-values" else 0.0)
        else:
            with torch.no_grad():  # 2-D sin-cos positions at the patch embeddings' scale
                self.tower_module().embeddings.position_embedding.weight.copy_(sincos_positions(h))
        self.scored = self.tower_module().encoder.layers[-2].self_attn  # VisionZip's layer
        self._scored_input: torch.Tensor | None = None
        self.scored.register_forward_pre_hook(self._keep_input, with_kwargs=True)

    def _keep_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._scored_input = args[0] if args else kwargs["hidden_states"]

    def cls_attention(self) -> torch.Tensor:
        """(B, 576): the scored layer's CLS-query attention over the patches, mean over heads."""
        x = self._scored_input
        assert x is not None
        attn = self.scored
        b, n, _ = x.shape
        heads, dim = attn.num_heads, attn.head_dim
        q = attn.q_proj(x[:, :1]).view(b, 1, heads, dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, heads, dim).transpose(1, 2)
        weights = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)  # (B, H, 1, N)
        return weights[:, :, 0, 1:].mean(1)

    def tower_module(self) -> nn.Module:
        """The module holding embeddings / pre_layrnorm / encoder (transformers 5.25 flattened
        CLIPVisionModel; earlier releases nest it under `vision_model`)."""
        return getattr(self.tower, "vision_model", self.tower)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """hidden_states[-2] of the stock tower: embeddings, pre-norm, every layer but the last."""
        vm = self.tower_module()
        h = vm.pre_layrnorm(vm.embeddings(pixel_values))
        for layer in vm.encoder.layers[:-1]:
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
        return h

    def logits(self, pixel_values: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        feats = self.features(pixel_values)
        split = self.heads(feats[:, 1:]).split(list(HEADS.values()), dim=-1)
        self._patch_features = feats[:, 1:]
        return dict(zip(HEADS, split)), self.presence(feats[:, 0])

    def forward(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        per_patch, cls = self.logits(b["pixels"])
        near = self.neighbours(self._patch_features).unflatten(-1, (len(OFFSETS), HEADS["color"]))
        on = b["content"]
        carrier = b["glyph"] > 0
        losses = {"color": F.cross_entropy(per_patch["color"].flatten(0, 1), b["color"].flatten())}
        for name in HEADS:  # object attributes: scored on object patches only (background is colour's job)
            if name not in ("color", "glyph"):
                losses[name] = F.cross_entropy(per_patch[name][on], b[name][on])
        glyph = per_patch["glyph"]  # class 0 = no glyph: whether the object carries one, on object patches
        has = glyph[..., 0] - glyph[..., 1:].logsumexp(-1)
        losses["carrier"] = F.binary_cross_entropy_with_logits(-has[on], carrier[on].float())
        if carrier.any():  # which glyph, on the carrier's patches
            losses["glyph"] = F.cross_entropy(glyph[..., 1:][carrier], b["glyph"][carrier] - 1)
        losses["presence"] = F.binary_cross_entropy_with_logits(cls, b["presence"])
        losses["neighbours"] = F.cross_entropy(near.flatten(0, 2), neighbour_colors(b["color"]).flatten())
        mass = (self.cls_attention() * on).sum(-1).clamp_min(1e-6)
        losses["cls_attn"] = -mass.log().mean()
        total = sum(WEIGHTS.get(k, 1.0) * v for k, v in losses.items())
        stats = {k: round(v.item(), 4) for k, v in losses.items()}
        stats["cls_mass"] = round(mass.mean().item(), 4)
        return total, stats  # type: ignore[return-value]


@torch.no_grad()
def probe(model: TowerTrainer, split: str = "val", images: int = 250, batch: int = 25) -> dict[str, float]:
    """Per-patch accuracy on object patches (every head), glyph accuracy on glyph carriers' patches,
    presence accuracy (every label right), and the CLS attention mass on object patches."""
    model.eval()
    device = next(model.parameters()).device
    right: dict[str, int] = {name: 0 for name in HEADS}
    right |= {"glyph_on_carriers": 0, "presence": 0}
    seen = {"object": 0, "carrier": 0}
    mass_sum = 0.0
    for start in range(0, images, batch):
        b = scene_batch(split, list(range(start, min(images, start + batch))))
        b = {k: v.to(device) for k, v in b.items()}
        per_patch, cls = model.logits(b["pixels"])
        on = b["content"]
        carrier = b["glyph"] > 0
        for name in HEADS:
            hit = per_patch[name].argmax(-1) == b[name]
            right[name] += int(hit[on].sum())
            if name == "glyph":
                right["glyph_on_carriers"] += int(hit[carrier].sum())
        right["presence"] += int(((cls > 0).float() == b["presence"]).all(-1).sum())
        seen["object"] += int(on.sum())
        seen["carrier"] += int(carrier.sum())
        mass_sum += float((model.cls_attention() * on).sum(-1).sum())
    model.train()
    out = {name: 100.0 * right[name] / seen["object"] for name in HEADS}
    out["glyph_on_carriers"] = 100.0 * right["glyph_on_carriers"] / max(1, seen["carrier"])
    out["presence"] = 100.0 * right["presence"] / images
    out["cls_mass"] = mass_sum / images
    return {k: round(v, 4 if k == "cls_mass" else 2) for k, v in out.items()}


GATE = {"shape": 95.0, "glyph": 90.0, "cls_mass": 0.9}


def gate_met(numbers: dict[str, float]) -> bool:
    return all(numbers[k] >= v for k, v in GATE.items())


# --- local attention at initialisation --------------------------------------------------------------
# A stock ViT from scratch learns to look at its neighbours only after many thousand steps; shape and
# glyphs need exactly that (a 3-layer CNN over the same patch embeddings learns per-patch shape to 95%
# in 150 steps, the ViT reaches 62% in 900). So the tower starts conv-like: the
# position embeddings carry a periodic code of (row, column) in CODE_DIMS dimensions, and in every layer
# five heads' query/key projections are set so that each attends to one fixed neighbour (itself, up,
# down, left, right) through that code; the sixth head and every other weight are initialised as stock.
# All of it stays trainable; the architecture and the saved weights are a stock CLIPVisionModel.
PERIODS = (3.3, 5.7, 9.1, 15.4, 26.0, 47.0)  # no aliasing across 24 patches (peak 6 vs <= 3.8 elsewhere)
CODE_DIMS = 4 * len(PERIODS)  # (cos, sin) x (row, column) x period
HEAD_OFFSETS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def position_code(amplitude: float = 2.0) -> torch.Tensor:
    """(1 + 576, CODE_DIMS): row 0 (CLS) zero; patch (r, c): amplitude * [cos, sin](2 pi r / L), the
    same of c, for each period L."""
    w = 2 * math.pi / torch.tensor(PERIODS)
    grid = torch.arange(GRID, dtype=torch.float32)
    rows, cols = grid.repeat_interleave(GRID), grid.repeat(GRID)
    parts = [f(v[:, None] * w) for v in (rows, cols) for f in (torch.cos, torch.sin)]
    return amplitude * torch.cat([torch.zeros(1, CODE_DIMS), torch.cat(parts, dim=1)], dim=0)


def shifted_code_map(dr: int, dc: int) -> torch.Tensor:
    """(CODE_DIMS, CODE_DIMS) linear map taking the code of (r, c) to the code of (r + dr, c + dc)."""
    w = 2 * math.pi / torch.tensor(PERIODS)
    n = len(PERIODS)
    m = torch.zeros(CODE_DIMS, CODE_DIMS)
    for axis, delta in ((0, dr), (1, dc)):
        cos_at, sin_at = axis * 2 * n, axis * 2 * n + n
        for k in range(n):
            a = (
                float(w[k]) * delta
            )  # cos(x+a) = cos x cos a - sin x sin a; sin(x+a) = sin x cos a + cos x sin a
            ci, si = cos_at + k, sin_at + k
            m[ci, ci], m[ci, si] = math.cos(a), -math.sin(a)
            m[si, si], m[si, ci] = math.cos(a), math.sin(a)
    return m


@torch.no_grad()
def local_attention_init(tower_module: nn.Module, sharpness: float = 1.0, value_gain: float = 0.0) -> None:
    emb = tower_module.embeddings
    emb.position_embedding.weight[:, :CODE_DIMS] = position_code()
    emb.position_embedding.weight[:, CODE_DIMS:] *= 0.0
    emb.patch_embedding.weight[:CODE_DIMS] = 0.0  # the code dimensions start clean of pixel content
    for layer in tower_module.encoder.layers:
        attn = layer.self_attn
        dim = attn.head_dim
        for h, (dr, dc) in enumerate(HEAD_OFFSETS):
            rows = slice(h * dim, h * dim + CODE_DIMS)
            attn.q_proj.weight[h * dim : (h + 1) * dim] = 0.0
            attn.k_proj.weight[h * dim : (h + 1) * dim] = 0.0
            attn.q_proj.weight[rows, :CODE_DIMS] = sharpness * shifted_code_map(dr, dc)
            attn.k_proj.weight[rows, :CODE_DIMS] = torch.eye(CODE_DIMS)
            attn.q_proj.bias[h * dim : (h + 1) * dim] = 0.0
            attn.k_proj.bias[h * dim : (h + 1) * dim] = 0.0
            if value_gain:  # the head passes its neighbour on: orthonormal value, its transpose out
                u = torch.linalg.qr(torch.randn(attn.v_proj.in_features, dim))[0]  # (hidden, dim)
                attn.v_proj.weight[h * dim : (h + 1) * dim] = u.T
                attn.out_proj.weight[:, h * dim : (h + 1) * dim] = value_gain * u
