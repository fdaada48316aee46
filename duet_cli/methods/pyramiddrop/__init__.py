"""PyramidDrop, stage 2 (text-to-vision): drop the least-attended visual tokens at a few LLM depths."""

from duet_cli.methods.pyramiddrop.config import PyramidDropConfig

__all__ = ["PyramidDropConfig"]
