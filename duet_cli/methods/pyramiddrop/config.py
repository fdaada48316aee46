"""PyramidDrop (stage 2) configuration: where the LLM drops visual tokens and how many it keeps.

Registers itself as the "pyramiddrop" method of the llm stage on import.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from duet_cli.methods.registry import (
    choice,
    count,
    fraction,
    issues_error,
    non_increasing,
    register_method,
    strictly_increasing,
)

Queries = Literal["last", "after_image", "all", "salient"]
Positions = Literal["keep", "renumber"]

Layer = Annotated[int, BeforeValidator(count(1))]
Depth = Annotated[float, BeforeValidator(fraction(closed=False))]
Ratio = Annotated[float, BeforeValidator(fraction(closed=True))]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class PyramidDropConfig(BaseModel):
    """Stage 2 settings (DESIGN.md section 5).

    Drop points are given either as `layers` (1-based: drop after this many decoder layers) or as
    `at_depth` fractions resolved per model; `keep_ratios` are absolute fractions of N0, one per point.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["pyramiddrop"] = "pyramiddrop"
    layers: list[Layer] | None = None
    at_depth: list[Depth] | None = None
    keep_ratios: list[Ratio]
    queries: Annotated[Queries, BeforeValidator(choice("last", "after_image", "all", "salient"))] = "last"
    positions: Annotated[Positions, BeforeValidator(choice("keep", "renumber"))] = "keep"

    @field_validator("layers", "at_depth")
    @classmethod
    def _drop_points_ascend(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            issues = strictly_increasing(value) if value else [("", "must list at least one drop point")]
            if issues:
                raise issues_error(issues)
        return value

    @field_validator("keep_ratios")
    @classmethod
    def _ratios_descend(cls, value: list[float]) -> list[float]:
        issues = non_increasing(value) if value else [("", "must list at least one keep ratio")]
        if issues:
            raise issues_error(issues)
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> PyramidDropConfig:
        if self.layers is not None and self.at_depth is not None:
            raise issues_error([("", "give exactly one of layers or at_depth, not both")])
        points = self.layers if self.layers is not None else self.at_depth
        if points is None:
            raise issues_error([("", "give exactly one of layers or at_depth (neither is set)")])
        key = "layers" if self.layers is not None else "at_depth"
        if len(points) != len(self.keep_ratios):
            have = _count(len(self.keep_ratios), "entry", "entries")
            want = _count(len(points), "drop point", "drop points")
            message = f"has {have} but {{path}}.{key} has {want}; give one keep ratio per drop point"
            raise issues_error([(".keep_ratios", message)])
        return self

    def summary(self) -> str:
        """One line for tables: 'pyramiddrop @[0.5,0.75] keep [0.5,0.0] after_image renumber'."""
        if self.at_depth is not None:
            where = "@[" + ",".join(str(f) for f in self.at_depth) + "]"
        else:
            where = "layers [" + ",".join(str(n) for n in self.layers or []) + "]"
        keep = "[" + ",".join(str(r) for r in self.keep_ratios) + "]"
        return f"{self.method} {where} keep {keep} {self.queries} {self.positions}"


register_method("pyramiddrop", "llm", PyramidDropConfig)
