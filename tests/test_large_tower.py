"""The synth-large tower recipe's targets and initialisation (scripts/large_tower.py), against scenes and
arithmetic worked by hand: a wrong target here would train the bundled model on noise without a sign."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import large_tower as lt

from duet_cli.benchmarks.synth_scene import SYNTH_LARGE, Obj, Scene


def scene() -> Scene:
    """A square covering exactly patches rows 1-4 x cols 1-4 (pixels 14..69) carrying 'K', and a
    medium triangle to its lower right; two objects, different shapes."""
    square = Obj("square", "red", 56, 14, 14, "K", SYNTH_LARGE)
    triangle = Obj("triangle", "blue", 84, 196, 154, None, SYNTH_LARGE)
    return Scene((245, 243, 235), (square, triangle), SYNTH_LARGE)


def patch(r: int, c: int) -> int:
    return r * lt.GRID + c


def test_targets_of_a_scene_worked_by_hand() -> None:
    t = lt.patch_targets(scene())
    square = [patch(r, c) for r in range(1, 5) for c in range(1, 5)]
    assert (lt.owners(scene())[square] == 0).all()
    for p in square:
        assert t["color"][p] == 1 + lt.COLOR_NAMES.index("red")
        assert t["shape"][p] == 1 + lt.SHAPES.index("square")
        assert t["glyph"][p] == 1 + lt.GLYPHS.index("K")  # every patch of the carrier, not only ink
        assert t["size"][p] == 1 + lt.SIZE_NAMES.index("small")
        assert t["xrank"][p] == 1 and t["yrank"][p] == 1  # leftmost, topmost
        assert t["same_shape"][p] == 1
    # the triangle's apex row: pixel row 154 is patch row 11; its centre column 196 + 42 = 238 -> col 17
    assert t["shape"][patch(13, 17)] == 1 + lt.SHAPES.index("triangle")
    assert t["xrank"][patch(13, 17)] == 2 and t["glyph"][patch(13, 17)] == 0
    assert t["size"][patch(13, 17)] == 1 + lt.SIZE_NAMES.index("medium")
    background = patch(0, 0)
    assert not t["content"][background] and t["color"][background] == 0 and t["shape"][background] == 0
    assert (t["objects"] == 2).all()  # the count, on every patch
    assert int(t["content"].sum()) == len(np.flatnonzero(lt.owners(scene()) >= 0))


def test_neighbour_colours_are_the_shifted_map() -> None:
    color = torch.arange(lt.GRID * lt.GRID).view(1, -1) % 7 + 1
    near = lt.neighbour_colors(color)
    k = lt.OFFSETS.index((-1, 2))
    assert near[0, patch(5, 5), k] == color[0, patch(4, 7)]
    assert near[0, patch(0, 5), k] == 0  # above the image: background
    assert near[0, patch(5, 23), lt.OFFSETS.index((0, 1))] == 0  # right of the last column


def test_the_shifted_code_map_moves_a_position_code() -> None:
    code = lt.position_code()
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1), (2, -3)):
        m = lt.shifted_code_map(dr, dc)
        r, c = 10, 12
        moved = m @ code[1 + patch(r, c)]
        assert torch.allclose(moved, code[1 + patch(r + dr, c + dc)], atol=1e-5), (dr, dc)


def test_local_init_makes_heads_look_at_their_neighbour() -> None:
    torch.manual_seed(0)
    vision = dict(image_size=336, patch_size=14, hidden_size=192, intermediate_size=768,
                  num_hidden_layers=2, num_attention_heads=6, hidden_act="quick_gelu")  # fmt: skip
    model = lt.TowerTrainer(vision, init="local")
    tower = model.tower_module()
    pixels = lt.pixels(scene())[None]
    x = tower.encoder.layers[0].layer_norm1(tower.pre_layrnorm(tower.embeddings(pixels)))
    attn = tower.encoder.layers[0].self_attn
    q = attn.q_proj(x).view(1, -1, 6, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(1, -1, 6, attn.head_dim).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)[0]
    r, c = 12, 12  # a background patch in the middle: no content to tell patches apart
    for head, (dr, dc) in enumerate(lt.HEAD_OFFSETS):
        top = int(weights[head, 1 + patch(r, c)].argmax()) - 1
        assert divmod(top, lt.GRID) == (r + dr, c + dc), head


def test_local_values_init_passes_each_neighbour_on_through_a_projection() -> None:
    torch.manual_seed(0)
    vision = dict(image_size=336, patch_size=14, hidden_size=192, intermediate_size=768,
                  num_hidden_layers=2, num_attention_heads=6, hidden_act="quick_gelu")  # fmt: skip
    attn = lt.TowerTrainer(vision, init="local-values").tower_module().encoder.layers[1].self_attn
    d, out, value = attn.head_dim, attn.out_proj.weight.detach(), attn.v_proj.weight.detach()
    for head in range(len(lt.HEAD_OFFSETS)):
        w = out[:, head * d : (head + 1) * d] @ value[head * d : (head + 1) * d]
        assert torch.allclose(w @ w, 0.5 * w, atol=1e-5)  # 0.5 x an orthogonal projection...
        assert abs(float(torch.trace(w)) - 0.5 * d) < 1e-3  # ...onto `head_dim` dimensions
