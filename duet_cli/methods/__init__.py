"""Reduction methods, one folder each; importing this package registers every method's config."""

from duet_cli.methods import pool, pyramiddrop, random_patches, visionzip
from duet_cli.methods.registry import MethodSpec, available, get_method, register_method

__all__ = [
    "MethodSpec",
    "available",
    "get_method",
    "pool",
    "pyramiddrop",
    "random_patches",
    "register_method",
    "visionzip",
]
