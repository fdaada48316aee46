"""`pool` (stage 1) configuration: the side of the grid the patch grid is average-pooled to.

Registers itself as the "pool" method of the vision stage on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from duet_cli.methods.registry import count, register_method

if TYPE_CHECKING:
    from duet_cli.dims import ModelDims


class PoolConfig(BaseModel):
    """Adaptive average pooling of the patch grid (CLS dropped) to `grid` x `grid` tokens, raster order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    needs_scores: ClassVar[bool] = False

    method: Literal["pool"] = "pool"
    grid: Annotated[int, BeforeValidator(count(1))]

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    def check(self, dims: ModelDims) -> list[str]:
        rows, cols = dims.grid
        if self.grid > min(rows, cols):
            return [f"vision.grid: {self.grid} exceeds the model's {rows}x{cols} patch grid"]
        return []

    def summary(self) -> str:
        return f"pool {self.grid}x{self.grid}"


register_method("pool", "vision", PoolConfig)
