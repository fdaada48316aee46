"""Decode-step overhead: no host synchronisation from duet's code, and few extra Python calls per token.

On a GPU, Hugging Face's decode loop at batch 1 is bound by the host, so what duet adds to each step is
what a user pays per answer token. Both numbers are deterministic counts (never timings): the syncs are
the tensor-to-host reads reached from duet_cli's own frames, the calls are cProfile's call count.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import batch_inputs, build_tiny_llava
from torch.overrides import TorchFunctionMode
from transformers import LlavaForConditionalGeneration

from duet_cli.engine import stage2
from duet_cli.engine.session import apply_profile

PACKAGE = str(Path(stage2.__file__).resolve().parents[1])  # .../duet_cli
# tensor methods that make the host wait for the device (or read a value on the host)
SYNCING = {"item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"}
# tokens entering the LLM per image, by profile
TOKENS = {"duet-192": 307, "duet-128": 202, "duet-64": 102, "pdrop-192": 576, "pdrop-64": 576}
TOKENS |= {"fastv-64": 576}
OTHERS = {"baseline": 576, "visionzip-64": 64, "random-64": 64, "pool-64": 64}  # no llm stage


class HostReads(TorchFunctionMode):
    """Counts syncing tensor calls whose caller is a frame of duet_cli."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.where: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in SYNCING:
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(PACKAGE):
                self.count += 1
                self.where.append(f"{name} in {caller.co_name}")
        return func(*args, **(kwargs or {}))


def generate(model: LlavaForConditionalGeneration, n_image: int, steps: int, which: list[int]) -> None:
    inputs = batch_inputs(n_image, which)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)


def host_reads(model: LlavaForConditionalGeneration, profile: str, steps: int, which: list[int]) -> HostReads:
    with apply_profile(model, profile), HostReads() as reads:
        generate(model, TOKENS[profile], steps, which)
    return reads


@pytest.mark.parametrize("which", [[0], [0, 1, 2]], ids=["single", "padded-batch"])
@pytest.mark.parametrize("profile", ["duet-192", "pdrop-192"])
def test_no_host_sync_in_a_decode_step(
    tiny_llava: LlavaForConditionalGeneration, profile: str, which: list[int], one_thread: None
) -> None:
    # the prefill may read a few values on the host (counts for the trace); a decode step must not:
    # more steps add no reads
    short, long = host_reads(tiny_llava, profile, 2, which), host_reads(tiny_llava, profile, 6, which)
    assert short.count > 0  # the counter sees duet's prefill reads, so it would see decode ones too
    assert long.count == short.count, long.where[len(short.where) :]


def test_the_sync_counter_catches_a_read_put_back(
    tiny_llava: LlavaForConditionalGeneration, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """The guard itself: a padding test put back into the decode path is counted once per step and
    segment. The wrapper is compiled as code of stage2.py, where such a line would live."""
    source = (
        "def with_a_read(self, s, index, hidden, kwargs):\n"
        "    bool((self.state.segments[s].mask2d == 0).any())\n"
        "    real(self, s, index, hidden, kwargs)\n"
    )
    scope: dict[str, Any] = {"real": stage2.PyramidDropStage._decode_segment}
    exec(compile(source, stage2.__file__, "exec"), scope)
    monkeypatch.setattr(stage2.PyramidDropStage, "_decode_segment", scope["with_a_read"])
    short, long = host_reads(tiny_llava, "duet-192", 2, [0]), host_reads(tiny_llava, "duet-192", 6, [0])
    assert long.count - short.count == 4 * 2  # 4 more steps x 2 dropping segments


@contextmanager
def profiled() -> Iterator[cProfile.Profile]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield profiler
    finally:
        profiler.disable()


def calls_per_token(model: LlavaForConditionalGeneration, profile: str | None, n_image: int) -> float:
    """cProfile's call count per generated token: (12-step run - 4-step run) / 8, prefill cancelled out."""
    counts = []
    for steps in (4, 12):
        with apply_profile(model, profile) if profile else _nothing():
            generate(model, n_image, steps, [0])  # warm: lazy imports and first-call caches
            with profiled() as profiler:
                generate(model, n_image, steps, [0])
        counts.append(pstats.Stats(profiler).total_calls)  # type: ignore[attr-defined]
    return (counts[1] - counts[0]) / 8


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def deep_llava() -> LlavaForConditionalGeneration:
    return build_tiny_llava(seed=0, depth=32)  # LLaVA-1.5-7B's depth, tiny widths: compute ~0, calls real


def test_decode_calls_per_token_within_2_percent_of_stock(
    deep_llava: LlavaForConditionalGeneration, one_thread: None
) -> None:
    stock = calls_per_token(deep_llava, None, 576)
    extra = {p: calls_per_token(deep_llava, p, n) / stock - 1 for p, n in (TOKENS | OTHERS).items()}
    assert all(v <= 0.02 for v in extra.values()), {p: f"{v:+.2%}" for p, v in extra.items()}
