"""VisionZip stage-1 selection and merging: a hand-worked case, a naive reference, and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duet_cli.methods.visionzip.select import cls_attention_scores, select_and_merge

# --- hand-worked example --------------------------------------------------------------------------
# N = 9 tokens with CLS at 0, dominant = 3 (CLS included), contextual = 2.
# Patch ranking by score: 2 (.9), 4 (.8), 6 (.5), 8 (.4), 3 (.3), 5 (.2), 1 (.1), 7 (.05).
# CLS's own score (9.0) is ignored.  Dominant = [0, 2, 4].  Remaining (position order) = [1, 3, 5, 6, 7, 8].
HAND_SCORES = [9.0, 0.1, 0.9, 0.3, 0.8, 0.2, 0.5, 0.05, 0.4]
HAND_KEYS = [
    (1.0, 1.0),  # 0  CLS (dominant)
    (1.0, 0.0),  # 1
    (1.0, 1.0),  # 2  dominant
    (2.0, 1.0),  # 3
    (1.0, 1.0),  # 4  dominant
    (1.0, 3.0),  # 5
    (0.0, 1.0),  # 6
    (-1.0, 0.5),  # 7
    (3.0, -1.0),  # 8
]


def _hand_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = torch.tensor([[[float(i), float(i * i)] for i in range(9)]])  # token i -> (i, i^2)
    return hidden, torch.tensor([HAND_SCORES]), torch.tensor([HAND_KEYS])


def test_hand_worked_uniform() -> None:
    hidden, scores, keys = _hand_inputs()
    out, sel = select_and_merge(hidden, scores, keys, dominant=3, contextual=2, mode="uniform")
    # M = 6, stride 6 // 2 = 3: targets are remaining[0] = 1 and remaining[3] = 6.
    # Members 3, 5, 7, 8, cosine with target keys (1,0) | (0,1):
    #   3 (2,1): .894 | .447 -> slot 0      5 (1,3): .316 | .949 -> slot 1
    #   7 (-1,.5): -.894 | .447 -> slot 1   8 (3,-1): .949 | -.316 -> slot 0
    assert sel.dominant.tolist() == [[0, 2, 4]]
    assert sel.targets.tolist() == [[1, 6]]
    assert sel.assign.tolist() == [[-1, 0, -1, 0, -1, 1, 1, 1, 0]]
    # slot 0 = h1 + mean(h3, h8) = (1 + 5.5, 1 + (9 + 64) / 2) = (6.5, 37.5)
    # slot 1 = h6 + mean(h5, h7) = (6 + 6, 36 + (25 + 49) / 2) = (12, 73)
    expected = [[0.0, 0.0], [2.0, 4.0], [4.0, 16.0], [6.5, 37.5], [12.0, 73.0]]
    torch.testing.assert_close(out, torch.tensor([expected]))


def test_hand_worked_pooled() -> None:
    hidden, scores, keys = _hand_inputs()
    out, sel = select_and_merge(
        hidden, scores, keys, dominant=3, contextual=2, mode="pooled", cluster_width=2
    )
    # P = min(2 * 2, 6) = 4: pool by descending score = [6, 8, 3, 5]; 1 and 7 are discarded.
    # stride 4 // 2 = 2: targets are ranks 0 and 2 = tokens 6 and 3, in that (rank) order.
    # Members 8, 5, cosine with target keys (0,1) | (2,1):
    #   8 (3,-1): -.316 | .707 -> slot 1    5 (1,3): .949 | .707 -> slot 0
    assert sel.dominant.tolist() == [[0, 2, 4]]
    assert sel.targets.tolist() == [[6, 3]]
    assert sel.assign.tolist() == [[-1, -1, -1, 1, -1, 0, 0, -1, 1]]
    # slot 0 = h6 + h5 = (11, 61); slot 1 = h3 + h8 = (11, 73)
    expected = [[0.0, 0.0], [2.0, 4.0], [4.0, 16.0], [11.0, 61.0], [11.0, 73.0]]
    torch.testing.assert_close(out, torch.tensor([expected]))


def test_hand_worked_pooled_wide_pool_is_all_remaining() -> None:
    hidden, scores, keys = _hand_inputs()
    _, sel = select_and_merge(hidden, scores, keys, dominant=3, contextual=2, mode="pooled", cluster_width=4)
    # P = min(8, 6) = 6: pool = [6, 8, 3, 5, 1, 7], stride 3: targets ranks 0, 3 = tokens 6, 5.
    assert sel.targets.tolist() == [[6, 5]]
    assert sorted(i for i, a in enumerate(sel.assign[0].tolist()) if a >= 0) == [1, 3, 5, 6, 7, 8]


def test_hand_worked_without_cls() -> None:
    hidden, scores, keys = _hand_inputs()
    # Token 0 now competes on its score (9.0, the highest): top 3 = 0, 2, 4 again, but by score.
    out, sel = select_and_merge(hidden, scores, keys, dominant=3, contextual=0, has_cls=False)
    assert sel.dominant.tolist() == [[0, 2, 4]]
    scores[0, 0] = 0.0  # now the top 3 are 2, 4, 6
    out, sel = select_and_merge(hidden, scores, keys, dominant=3, contextual=0, has_cls=False)
    assert sel.dominant.tolist() == [[2, 4, 6]]
    assert sel.targets.shape == (1, 0)
    assert sel.assign.tolist() == [[-1] * 9]
    torch.testing.assert_close(out, hidden[:, [2, 4, 6]])


# --- naive reference, plain Python loops over tokens ---------------------------------------------


def naive_select(
    hidden: torch.Tensor,
    scores: torch.Tensor,
    keys: torch.Tensor,
    d: int,
    c: int,
    mode: str,
    w: int,
    has_cls: bool,
) -> tuple[list[list[float]], list[int], list[int], list[int]]:
    """One sample: hidden (N, D), scores (N,), keys (N, Dk). Returns (out rows, dominant, targets, assign)."""
    n = hidden.shape[0]
    h = hidden.double().tolist()
    sc = scores.double().tolist()
    ks = keys.double().tolist()
    candidates = list(range(1, n)) if has_cls else list(range(n))
    ranked = sorted(candidates, key=lambda i: (-sc[i], i))
    dom = sorted(([0] if has_cls else []) + ranked[: d - (1 if has_cls else 0)])
    rest = [i for i in ranked if i not in dom]  # score order
    assign = [-1] * n
    out = [h[i] for i in dom]
    if c == 0:
        return out, dom, [], assign
    cand = sorted(rest) if mode == "uniform" else rest[: min(max(1, w * c), len(rest))]
    stride = max(1, len(cand) // c)
    targets = [cand[j * stride] for j in range(c)]
    members = [i for i in cand if i not in targets]

    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(x * x for x in v))
        return [x / max(norm, 1e-12) for x in v]

    for slot, t in enumerate(targets):
        assign[t] = slot
    for i in members:
        best, best_sim = 0, -math.inf
        for slot, t in enumerate(targets):
            sim = sum(a * b for a, b in zip(unit(ks[i]), unit(ks[t]), strict=True))
            if sim > best_sim:
                best, best_sim = slot, sim
        assign[i] = best
    for slot, t in enumerate(targets):
        group = [i for i in members if assign[i] == slot]
        row = list(h[t])
        if group:
            for col in range(len(row)):
                row[col] += sum(h[i][col] for i in group) / len(group)
        out.append(row)
    return out, dom, targets, assign


def _random_inputs(
    b: int, n: int, width: int, dk: int, seed: int, tie_levels: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, n, width, generator=g)
    if tie_levels:  # few distinct score values, so ties are everywhere
        scores = torch.randint(0, tie_levels, (b, n), generator=g).float()
    else:
        scores = torch.rand(b, n, generator=g)
    keys = torch.randn(b, n, dk, generator=g)
    return hidden, scores, keys


def _check_against_naive(hidden, scores, keys, d, c, mode, w, has_cls) -> None:  # type: ignore[no-untyped-def]
    out, sel = select_and_merge(
        hidden, scores, keys, dominant=d, contextual=c, mode=mode, cluster_width=w, has_cls=has_cls
    )
    assert out.shape == (hidden.shape[0], d + c, hidden.shape[2])
    for b in range(hidden.shape[0]):
        ref_out, ref_dom, ref_targets, ref_assign = naive_select(
            hidden[b], scores[b], keys[b], d, c, mode, w, has_cls
        )
        assert sel.dominant[b].tolist() == ref_dom
        assert sel.targets[b].tolist() == ref_targets
        assert sel.assign[b].tolist() == ref_assign
        torch.testing.assert_close(
            out[b].double(), torch.tensor(ref_out, dtype=torch.float64).reshape(d + c, -1)
        )


@pytest.mark.parametrize("mode", ["uniform", "pooled"])
@pytest.mark.parametrize("has_cls", [True, False])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_matches_naive_reference(mode: str, has_cls: bool, b: int) -> None:
    for seed, (n, d, c, w) in enumerate([(37, 10, 5, 4), (50, 20, 7, 2), (25, 3, 20, 4), (64, 16, 1, 4)]):
        hidden, scores, keys = _random_inputs(b, n, 6, 5, seed=seed * 10 + b)
        _check_against_naive(hidden, scores, keys, d, c, mode, w, has_cls)


@pytest.mark.parametrize("mode", ["uniform", "pooled"])
def test_matches_naive_reference_with_ties(mode: str) -> None:
    hidden, scores, keys = _random_inputs(3, 40, 4, 3, seed=7, tie_levels=3)
    _check_against_naive(hidden, scores, keys, 9, 6, mode, 2, True)
    _check_against_naive(hidden, scores, keys, 9, 6, mode, 2, False)


@pytest.mark.parametrize("mode", ["uniform", "pooled"])
def test_batched_equals_per_sample(mode: str) -> None:
    hidden, scores, keys = _random_inputs(3, 100, 16, 8, seed=3, tie_levels=5)
    out, sel = select_and_merge(hidden, scores, keys, dominant=30, contextual=10, mode=mode)
    for b in range(3):
        one, one_sel = select_and_merge(
            hidden[b : b + 1], scores[b : b + 1], keys[b : b + 1], dominant=30, contextual=10, mode=mode
        )
        assert torch.equal(sel.dominant[b], one_sel.dominant[0])
        assert torch.equal(sel.targets[b], one_sel.targets[0])
        assert torch.equal(sel.assign[b], one_sel.assign[0])
        torch.testing.assert_close(out[b], one[0], rtol=0, atol=1e-6)


def test_ties_resolved_deterministically() -> None:
    n = 12
    hidden = torch.arange(n, dtype=torch.float32).reshape(1, n, 1)
    scores = torch.ones(1, n)  # every patch ties: lower index wins
    keys = torch.ones(1, n, 2)  # every cosine ties: lowest slot wins
    out, sel = select_and_merge(
        hidden, scores, keys, dominant=4, contextual=2, mode="pooled", cluster_width=2
    )
    assert sel.dominant.tolist() == [[0, 1, 2, 3]]
    # pool = 4, 5, 6, 7 (tied scores keep position order); stride 2: targets 4, 6; members 5, 7 -> slot 0
    assert sel.targets.tolist() == [[4, 6]]
    assert sel.assign.tolist() == [[-1, -1, -1, -1, 0, 0, 1, 0, -1, -1, -1, -1]]
    torch.testing.assert_close(out[0, 4:, 0], torch.tensor([4.0 + 6.0, 6.0]))
    again, again_sel = select_and_merge(
        hidden, scores, keys, dominant=4, contextual=2, mode="pooled", cluster_width=2
    )
    assert torch.equal(out, again) and torch.equal(sel.assign, again_sel.assign)


def test_contextual_zero_and_all_tokens() -> None:
    hidden, scores, keys = _random_inputs(2, 20, 4, 3, seed=1)
    out, sel = select_and_merge(hidden, scores, keys, dominant=5, contextual=0, mode="pooled")
    assert out.shape == (2, 5, 4) and sel.targets.shape == (2, 0)
    assert (sel.assign == -1).all()
    # Keeping every token as dominant reproduces the input exactly (CLS included).
    out, sel = select_and_merge(hidden, scores, keys, dominant=20, contextual=0)
    assert torch.equal(out, hidden)
    # d + c = N in uniform: every remaining token is its own target, nothing merges.
    out, sel = select_and_merge(hidden, scores, keys, dominant=5, contextual=15)
    assert sorted(sel.targets[0].tolist()) == sorted(set(range(20)) - set(sel.dominant[0].tolist()))
    assert torch.equal(out[:, 5:], hidden.gather(1, sel.targets.unsqueeze(-1).expand(-1, -1, 4)))


def test_output_dtype_follows_hidden() -> None:
    hidden, scores, keys = _random_inputs(2, 30, 8, 4, seed=2)
    out, _ = select_and_merge(
        hidden.bfloat16(), scores, keys.bfloat16(), dominant=10, contextual=5, mode="pooled"
    )
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("d", "c", "has_cls", "mode"),
    [
        (15, 6, True, "uniform"),
        (0, 3, True, "uniform"),
        (-1, 3, False, "uniform"),
        (3, -1, True, "pooled"),
        (3, 2, True, "kmeans"),
    ],
)
def test_bad_arguments_raise(d: int, c: int, has_cls: bool, mode: str) -> None:
    hidden, scores, keys = _random_inputs(1, 20, 4, 3, seed=0)
    with pytest.raises(ValueError):
        select_and_merge(hidden, scores, keys, dominant=d, contextual=c, has_cls=has_cls, mode=mode)


def test_cls_attention_scores_matches_explicit_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    b, heads, n, hd = 2, 3, 11, 4
    q = torch.randn(b, heads, hd, generator=g)
    k = torch.randn(b, heads, n, hd, generator=g)
    scale = hd**-0.5
    got = cls_attention_scores(q, k, scale)
    assert got.dtype == torch.float32 and got.shape == (b, n)
    expected = torch.zeros(b, n, dtype=torch.float64)
    for bi in range(b):
        for h in range(heads):
            logits = [
                sum(float(q[bi, h, x]) * float(k[bi, h, j, x]) for x in range(hd)) * scale for j in range(n)
            ]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            for j in range(n):
                expected[bi, j] += exps[j] / sum(exps)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.full((b,), float(heads)))
    # Half-precision inputs still give fp32 scores.
    assert cls_attention_scores(q.bfloat16(), k.bfloat16(), scale).dtype == torch.float32


# --- properties ----------------------------------------------------------------------------------


@st.composite
def _cases(draw: st.DrawFn) -> dict:
    has_cls = draw(st.booleans())
    n = draw(st.integers(2, 60))
    d = draw(st.integers(1 if has_cls else 0, n))
    c = draw(st.integers(0, n - d))
    return {
        "b": draw(st.integers(1, 3)),
        "n": n,
        "d": d,
        "c": c,
        "has_cls": has_cls,
        "mode": draw(st.sampled_from(["uniform", "pooled"])),
        "w": draw(st.integers(1, 5)),
        "seed": draw(st.integers(0, 2**16)),
        "ties": draw(st.sampled_from([0, 2, 4])),
    }


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_selection_properties(case: dict) -> None:
    b, n, d, c, mode = case["b"], case["n"], case["d"], case["c"], case["mode"]
    hidden, scores, keys = _random_inputs(b, n, 3, 4, seed=case["seed"], tie_levels=case["ties"])
    out, sel = select_and_merge(
        hidden,
        scores,
        keys,
        dominant=d,
        contextual=c,
        mode=mode,
        cluster_width=case["w"],
        has_cls=case["has_cls"],
    )
    assert out.shape == (b, d + c, 3)
    assert sel.dominant.shape == (b, d) and sel.targets.shape == (b, c) and sel.assign.shape == (b, n)
    for i in range(b):
        dom = sel.dominant[i].tolist()
        targets = sel.targets[i].tolist()
        assign = sel.assign[i].tolist()
        assert dom == sorted(set(dom))  # unique, ascending
        if case["has_cls"]:
            assert dom[0] == 0
        assert len(set(targets)) == c and not set(targets) & set(dom)
        assert all(assign[t] == slot for slot, t in enumerate(targets))
        assert all(assign[j] == -1 for j in dom)
        assert all(-1 <= a < c for a in assign)
        assigned = {j for j, a in enumerate(assign) if a >= 0}
        rest = set(range(n)) - set(dom)
        if c == 0:
            assert not assigned
        elif mode == "uniform":
            assert assigned == rest  # every remaining token is a target or a member, exactly once
        else:
            p = min(max(1, case["w"] * c), n - d)
            assert len(assigned) == p
            # The pool is the top-P remaining by score: nothing discarded outranks a pooled token.
            sc = scores[i].tolist()
            discarded = rest - assigned
            if discarded:
                worst_in = max((-sc[j], j) for j in assigned)
                assert all((-sc[j], j) > worst_in for j in discarded)
        # Every dominant patch outranks every remaining token (descending score, ties -> lower index).
        sc = scores[i].tolist()
        ranked_dom = [j for j in dom if not (case["has_cls"] and j == 0)]
        if ranked_dom and rest:
            assert max((-sc[j], j) for j in ranked_dom) < min((-sc[j], j) for j in rest)
        torch.testing.assert_close(out[i, :d], hidden[i, dom])
