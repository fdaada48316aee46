"""Pool, stage 1 baseline: average-pool the patch grid to a smaller grid."""

from duet_cli.methods.pool.config import PoolConfig

__all__ = ["PoolConfig"]
