"""Imports every method's apply function so the registry can dispatch to it (torch is needed here)."""

from duet_cli.methods.pool import apply as _pool  # noqa: F401
from duet_cli.methods.random_patches import apply as _random  # noqa: F401
from duet_cli.methods.visionzip import apply as _visionzip  # noqa: F401
