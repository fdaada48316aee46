"""Shared fixtures: tiny models built in code once per session; nothing touches the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Commands without -m use the default model; the suite runs them on the small untrained tiny-llava
# (fast) rather than the bundled trained synth-llava, which has its own tests (test_bundled_model.py).
os.environ["DUET_MODEL"] = "tiny-llava"  # not setdefault: a user's own DUET_MODEL must not leak in
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_llava():  # type: ignore[no-untyped-def]
    from tiny import build_tiny_llava

    return build_tiny_llava(seed=0, depth=8)


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny tensors: one thread is several times faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
