"""How many tokens stage 1 keeps of one image of a dynamic-resolution model (pure arithmetic, no torch:
`duet profile --config-only` and `duet profiles show` use it without loading a model)."""

from __future__ import annotations

from typing import Any


def clamped_counts(dominant: int, contextual: int, n: int) -> tuple[int, int]:
    """(d, c) for an image of n merged tokens: d = min(dominant, n - 1), c = min(contextual, n - d)."""
    d = max(0, min(dominant, n - 1))
    return d, max(0, min(contextual, n - d))


def reduced_count(config: Any, n: int) -> int:
    """Placeholders an image of n merged tokens gets under a stage-1 config: VisionZip (absolute or
    relative counts, clamped) or random (min(count, n) merge units)."""
    if config.method == "random":
        return min(int(config.count), n)
    dominant, contextual = config.counts_for(n)
    return sum(clamped_counts(dominant, contextual, n))
