"""`apply_profile`: install a profile's hooks on one model instance, and remove every one of them after.

    with apply_profile(model, "duet-192") as session:
        ...  # model.generate(...) now runs stage 1 and stage 2; session.recorder has what was kept

Nothing on a transformers class is touched; applying twice to the same instance is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from duet_cli.engine.recorder import LanguageModelTimer, Recorder
from duet_cli.engine.setup_checks import check_model_setup
from duet_cli.engine.stage1 import VisionStage1, VisionTimer
from duet_cli.engine.stage1_counts import reduced_count
from duet_cli.engine.stage2 import PyramidDropStage
from duet_cli.errors import HookError
from duet_cli.families import get_adapter
from duet_cli.families.base import FamilyAdapter
from duet_cli.families.qwen2_5_vl.stage1 import QwenVisionStage1

_MARK = "_duet_session"


class ReductionSession:
    """The installed hooks of one profile on one model, and the recorder they write to."""

    def __init__(self, model: nn.Module, adapter: FamilyAdapter, resolved: Any) -> None:
        self.model, self.adapter, self.resolved = model, adapter, resolved
        self.dims = adapter.dims(model)
        self.recorder = Recorder()
        # dynamic-resolution families, for the latest inputs built: stock merged tokens of each image,
        # and (temporal slices, merged tokens per slice) of each video
        self.image_tokens: list[int] = []
        self.video_slices: list[tuple[int, int]] = []
        self.image_grids: list[tuple[int, int]] = []  # merged-token grid (rows, cols) of each image
        self.video_grids: list[tuple[int, int]] = []  # ... of each video's slices
        owner = adapter.image_features_owner(model)
        self.vision: VisionStage1 | QwenVisionStage1 | VisionTimer = (
            (QwenVisionStage1 if self.dims.dynamic_resolution else VisionStage1)(
                model, adapter, resolved.vision, self.recorder
            )
            if resolved.vision is not None
            else VisionTimer(owner, self.recorder, tuple(adapter.modalities))
        )
        self.llm = PyramidDropStage(model, adapter, resolved, self.recorder) if resolved.llm_layers else None
        self.timer = LanguageModelTimer(adapter.language_model(model), self.recorder)

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens each image contributes to the prompt (the placeholder count)."""
        return int(self.resolved.tokens_per_image(self.dims))

    def tokens_for_image(self, merged_tokens: int) -> int:
        """Placeholders of one image with `merged_tokens` stock tokens (dynamic-resolution families:
        stage 1 clamps its counts to each image)."""
        if self.resolved.vision is None:
            return merged_tokens
        return reduced_count(self.resolved.vision, merged_tokens)

    def tokens_for_video(self, slices: int, per_slice: int) -> int:
        """Placeholders of one video of `slices` temporal slices of `per_slice` stock merged tokens
        (dynamic-resolution families: stage 1 treats each slice as an image)."""
        return slices * self.tokens_for_image(per_slice)

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens each video frame contributes (0 when the family takes no video).

        Stage 1 treats a frame as an image, so a vision stage gives the same count as for an image;
        without one it is the stock count (Video-LLaVA keeps CLS on frames: 257 at 224 px).
        """
        if not self.dims.unreduced_frame_tokens:
            return 0
        vision = self.resolved.vision
        return int(vision.tokens) if vision is not None else self.dims.unreduced_frame_tokens

    def forget_selections(self) -> None:
        """Drop stage-1 selections left by an earlier call (Qwen2.5-VL places positions from them)."""
        reset = getattr(self.vision, "reset", None)
        if reset is not None:
            reset()

    def install(self) -> None:
        self.timer.install()
        self.vision.install()
        if self.llm is not None:
            self.llm.install()

    def remove(self) -> None:
        if self.llm is not None:
            self.llm.remove()
        self.vision.remove()
        self.timer.remove()


def resolve_for(model: nn.Module, profile: Any) -> Any:
    """A profile (name, path, Profile or ResolvedProfile) resolved against this model's dims."""
    from duet_cli.profiles import Profile, load_profile, resolve_profile

    if isinstance(profile, str):
        profile = load_profile(profile)
    if isinstance(profile, Profile):
        profile = resolve_profile(profile, get_adapter(model).dims(model))
    return profile


@contextmanager
def apply_profile(model: nn.Module, profile: Any) -> Iterator[ReductionSession]:
    """Apply `profile` to `model` (this instance only) for the duration of the block."""
    if getattr(model, _MARK, None) is not None:
        raise HookError("a duet profile is already applied to this model; remove it before applying another")
    adapter = get_adapter(model)
    resolved = resolve_for(model, profile)
    check_model_setup(model, resolved)
    session = ReductionSession(model, adapter, resolved)
    object.__setattr__(model, _MARK, session)
    try:
        session.install()
        yield session
    finally:
        try:
            session.remove()
        finally:
            object.__delattr__(model, _MARK)
