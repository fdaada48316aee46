"""Random patches, stage 1 baseline: a seeded uniform choice of patches, no scoring at all."""

from duet_cli.methods.random_patches.config import RandomPatchesConfig

__all__ = ["RandomPatchesConfig"]
