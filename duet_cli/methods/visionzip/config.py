"""VisionZip (stage 1) configuration: how many dominant and contextual tokens each image keeps.

Registers itself as the "visionzip" method of the vision stage on import.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from duet_cli.methods.registry import choice, count, fraction, issues_error, register_method

if TYPE_CHECKING:
    from duet_cli.dims import ModelDims

ContextualMode = Literal["uniform", "pooled"]
DEFAULT_CLUSTER_WIDTH = 4


class VisionZipConfig(BaseModel):
    """Stage 1 settings (DESIGN.md section 4). `dominant` includes the CLS token.

    Counts are absolute (`dominant`, `contextual`) or budget-relative (`dominant_fraction`,
    `contextual_fraction`: fractions of each image's own tokens, so one profile keeps the same share of
    a small and a large image on a dynamic-resolution model; an image of n tokens gets
    d = max(1, floor(n x dominant_fraction)) and c = floor(n x contextual_fraction), then the usual
    clamps). On a fixed-geometry model the fractions are of the tokens the encoder emits per image (CLS
    included) and become absolute counts when the profile is resolved against it.

    `cluster_width` is only meaningful for `pooled`: it is filled with 4 there when left out, and stays
    None for `uniform` (setting it with `uniform` is an error rather than silently ignored).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    needs_scores: ClassVar[bool] = True  # ranks by the encoder's CLS attention

    method: Literal["visionzip"] = "visionzip"
    dominant: Annotated[int, BeforeValidator(count(1))] | None = None
    contextual: Annotated[int, BeforeValidator(count(0))] | None = None
    dominant_fraction: Annotated[float, BeforeValidator(fraction(closed=True))] | None = None
    contextual_fraction: Annotated[float, BeforeValidator(fraction(closed=True))] | None = None
    contextual_mode: Annotated[ContextualMode, BeforeValidator(choice("uniform", "pooled"))] = "uniform"
    cluster_width: Annotated[int, BeforeValidator(count(1))] | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_cluster_width(cls, data: Any) -> Any:
        pooled = isinstance(data, dict) and data.get("contextual_mode") == "pooled"
        if pooled and data.get("cluster_width") is None:
            return {**data, "cluster_width": DEFAULT_CLUSTER_WIDTH}
        return data

    @model_validator(mode="after")
    def _absolute_or_relative(self) -> VisionZipConfig:
        absolute = (self.dominant, self.contextual)
        relative = (self.dominant_fraction, self.contextual_fraction)
        if all(v is not None for v in absolute) and all(v is None for v in relative):
            return self
        if all(v is not None for v in relative) and all(v is None for v in absolute):
            assert self.dominant_fraction is not None and self.contextual_fraction is not None
            if self.dominant_fraction <= 0:
                raise issues_error([(".dominant_fraction", "must be > 0 (got 0)")])
            if self.dominant_fraction + self.contextual_fraction > 1:
                total = self.dominant_fraction + self.contextual_fraction
                raise issues_error([("", f"dominant_fraction + contextual_fraction = {total:g} exceeds 1")])
            return self
        raise issues_error(
            [
                (
                    "",
                    "give either dominant and contextual (token counts) or dominant_fraction and "
                    "contextual_fraction (shares of each image's tokens), not a mix",
                )
            ]
        )

    @property
    def relative(self) -> bool:
        return self.dominant_fraction is not None

    def counts_for(self, n: int) -> tuple[int, int]:
        """(dominant, contextual) asked of an image of n tokens, before clamping to the image."""
        if self.dominant is not None and self.contextual is not None:
            return self.dominant, self.contextual
        assert self.dominant_fraction is not None and self.contextual_fraction is not None
        d = max(1, math.floor(n * Fraction(str(self.dominant_fraction))))
        return d, math.floor(n * Fraction(str(self.contextual_fraction)))

    def absolute(self, n: int) -> VisionZipConfig:
        """This config with the counts of an image of n tokens (itself when already absolute)."""
        if not self.relative:
            return self
        d, c = self.counts_for(n)
        data = self.model_dump(exclude={"dominant_fraction", "contextual_fraction"})
        return VisionZipConfig(**(data | {"dominant": d, "contextual": c}))

    @model_validator(mode="after")
    def _cluster_width_needs_pooled(self) -> VisionZipConfig:
        if self.cluster_width is not None and self.contextual_mode != "pooled":
            raise issues_error(
                [
                    (
                        ".cluster_width",
                        f"only applies to contextual_mode: pooled (this profile uses {self.contextual_mode})",
                    )
                ]
            )
        return self

    @property
    def tokens(self) -> int:
        """Tokens each image hands to the projector: dominant (CLS included) + contextual (absolute
        counts only; a budget-relative config gives `sum(counts_for(n))` per image)."""
        if self.dominant is None or self.contextual is None:
            raise ValueError("a budget-relative VisionZip config has no fixed token count")
        return self.dominant + self.contextual

    def check(self, dims: ModelDims) -> list[str]:
        """What this model cannot realise, as dotted-path error lines."""
        errors = []
        if self.tokens > dims.vision_tokens:
            cls = " (CLS included)" if dims.has_cls else ""
            errors.append(
                f"vision: dominant + contextual = {self.tokens} exceeds the {dims.vision_tokens} tokens "
                f"the vision encoder emits{cls}"
            )
        if dims.has_cls and (self.dominant or 0) < 1:
            errors.append("vision.dominant: must be >= 1 (it includes the CLS token)")
        return errors

    def summary(self) -> str:
        """One line for tables: 'visionzip 300+7 pooled w=4' (relative: 'visionzip 52.7%+9.8% ...')."""
        if self.relative:
            assert self.dominant_fraction is not None and self.contextual_fraction is not None
            counts = f"{self.dominant_fraction:.1%}+{self.contextual_fraction:.1%}"
        else:
            counts = f"{self.dominant}+{self.contextual}"
        text = f"{self.method} {counts} {self.contextual_mode}"
        if self.contextual_mode == "pooled":
            text += f" w={self.cluster_width}"
        return text


register_method("visionzip", "vision", VisionZipConfig)
