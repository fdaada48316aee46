"""`random` (stage 1) configuration: how many patches a seeded uniform draw keeps per image.

Registers itself as the "random" method of the vision stage on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from duet_cli.methods.registry import count, register_method

if TYPE_CHECKING:
    from duet_cli.dims import ModelDims


class RandomPatchesConfig(BaseModel):
    """Keep `count` patches drawn uniformly without replacement (CLS dropped, as stock LLaVA does).

    The draw is seeded by `seed` and the image's own pixels, so it differs between images but is the
    same for an image alone or in any batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    needs_scores: ClassVar[bool] = False

    method: Literal["random"] = "random"
    count: Annotated[int, BeforeValidator(count(1))]
    seed: Annotated[int, BeforeValidator(count(0))] = 0

    @property
    def tokens(self) -> int:
        return self.count

    def check(self, dims: ModelDims) -> list[str]:
        patches = dims.vision_tokens - (1 if dims.has_cls else 0)
        if self.count > patches:
            return [f"vision.count: {self.count} exceeds the {patches} patches of one image"]
        return []

    def summary(self) -> str:
        return f"random {self.count} (seed {self.seed})"


register_method("random", "vision", RandomPatchesConfig)
