"""VisionZip (stage 1) configuration: how many dominant and contextual tokens each image keeps.

Registers itself as the "visionzip" method of the vision stage on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from duet_cli.methods.registry import choice, count, issues_error, register_method

if TYPE_CHECKING:
    from duet_cli.dims import ModelDims

ContextualMode = Literal["uniform", "pooled"]
DEFAULT_CLUSTER_WIDTH = 4


class VisionZipConfig(BaseModel):
    """Stage 1 settings (DESIGN.md section 4). `dominant` includes the CLS token.

    `cluster_width` is only meaningful for `pooled`: it is filled with 4 there when left out, and stays
    None for `uniform` (setting it with `uniform` is an error rather than silently ignored).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    needs_scores: ClassVar[bool] = True  # ranks by the encoder's CLS attention

    method: Literal["visionzip"] = "visionzip"
    dominant: Annotated[int, BeforeValidator(count(1))]
    contextual: Annotated[int, BeforeValidator(count(0))]
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
        """Tokens each image hands to the projector: dominant (CLS included) + contextual."""
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
        if dims.has_cls and self.dominant < 1:
            errors.append("vision.dominant: must be >= 1 (it includes the CLS token)")
        return errors

    def summary(self) -> str:
        """One line for tables: 'visionzip 300+7 pooled w=4'."""
        text = f"{self.method} {self.dominant}+{self.contextual} {self.contextual_mode}"
        if self.contextual_mode == "pooled":
            text += f" w={self.cluster_width}"
        return text


register_method("visionzip", "vision", VisionZipConfig)
