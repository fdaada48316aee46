"""Stage 1 on CLIP towers: a registered method reduces the feature-layer tokens before the projector.

Methods that rank by CLS attention (VisionZip) get the CLS query and the keys from forward hooks on
the scoring layer's own q_proj / k_proj (outputs it computes anyway), so the tower stays on SDPA
and no encoder layer runs in eager mode to return attention maps. For every modality the family takes
(`image`; `video` for Video-LLaVA) the stock `get_<modality>_features` is replaced on the model
*instance* (never the class), which is what both `forward()` and `generate()` call. Video frames are
reduced one by one: a clip of F frames is F images to the tower and to the method.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from duet_cli.engine.recorder import Recorder, Stopwatch
from duet_cli.engine.stage1_inputs import Stage1Inputs
from duet_cli.errors import HookError
from duet_cli.families.base import FamilyAdapter
from duet_cli.methods import implementations as _implementations  # noqa: F401  (registers apply functions)
from duet_cli.methods.registry import get_method
from duet_cli.methods.visionzip.select import scores_from_projections
from duet_cli.trace import ImageSelection


def method_name(modality: str) -> str:
    """The stock method that turns one modality's pixels into LLM features (transformers' convention)."""
    return f"get_{modality}_features"


class VisionTimer:
    """Times the stock feature methods (used when stage 1 is off, so every run reports vision time)."""

    def __init__(
        self, owner: nn.Module, recorder: Recorder, modalities: tuple[str, ...] = ("image",)
    ) -> None:
        self.owner: Any = owner
        self.recorder = recorder
        self.modalities = modalities

    def install(self) -> None:
        timed = {"image": self._timed, "video": self._timed_video}
        for modality in self.modalities:
            name = method_name(modality)
            swap_in(self.owner, name, _with_signature_of(getattr(self.owner, name), timed[modality]))

    def remove(self) -> None:
        for modality in self.modalities:
            swap_out(self.owner, method_name(modality))

    def _timed(self, pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # the caller's arguments go through untouched: each family's stock signature differs
        # (LLaVA: vision_feature_layer, ...; Qwen2.5-VL: image_grid_thw, passed positionally)
        watch = Stopwatch(pixel_values.device)
        watch.start()
        result = type(self.owner).get_image_features(self.owner, pixel_values, *args, **kwargs)
        self.recorder.vision_s += watch.stop()
        return result

    def _timed_video(self, pixel_values_videos: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        watch = Stopwatch(pixel_values_videos.device)
        watch.start()
        result = type(self.owner).get_video_features(self.owner, pixel_values_videos, *args, **kwargs)
        self.recorder.vision_s += watch.stop()
        return result


class VisionStage1:
    def __init__(self, model: nn.Module, adapter: FamilyAdapter, config: Any, recorder: Recorder) -> None:
        self.model, self.adapter, self.config, self.recorder = model, adapter, config, recorder
        self.owner = adapter.image_features_owner(model)
        apply_fn = get_method(config.method, "vision").apply
        if apply_fn is None:
            raise HookError(f"stage-1 method {config.method!r} has no apply function registered")
        self.apply_fn: Callable[..., Any] = apply_fn
        self.needs_scores = bool(getattr(config, "needs_scores", False))
        self.modalities = tuple(adapter.modalities)
        # every hook point is looked up now, so a missing one fails before anything is installed
        self.score_attn: dict[str, Any] = {m: adapter.vision_score_layer(model, m) for m in self.modalities}
        self.dims = adapter.dims(model)
        self._armed = False
        self._captured: dict[str, torch.Tensor] = {}  # the scoring layer's own q_proj / k_proj outputs
        self._handles: list[Any] = []

    def install(self) -> None:
        if self.needs_scores:
            for attn in self.score_attn.values():
                self._handles.append(attn.q_proj.register_forward_hook(self._keep("q")))
                self._handles.append(attn.k_proj.register_forward_hook(self._keep("k")))
        replacements = {"image": self.get_image_features, "video": self.get_video_features}
        for modality in self.modalities:
            swap_in(self.owner, method_name(modality), replacements[modality])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for modality in self.modalities:
            swap_out(self.owner, method_name(modality))

    def _keep(self, name: str) -> Any:
        """A forward hook keeping the projection the scoring layer computes anyway (no extra matmul)."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._armed:
                self._captured[name] = output
            return None

        return hook

    def _reduce(
        self, modality: str, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, Any, list[ImageSelection]]:
        """Tower, method and projector on a batch of images (B, 3, H, W): features (B, n, D)."""
        reduced, last_hidden, selections = self.reduce_tokens(modality, pixel_values)
        return self.adapter.project(self.model, reduced), last_hidden, selections

    def reduce_tokens(
        self, modality: str, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, Any, list[ImageSelection]]:
        """Tower, scoring and the method, before the projector: the kept tokens (B, n, Dv)."""
        tower = self.adapter.vision_tower(self.model, modality)
        self._armed, self._captured = self.needs_scores, {}
        try:
            outputs = tower(pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            self._armed = False
        hidden = outputs.hidden_states[self.adapter.vision_feature_layer(self.model)]
        inputs = Stage1Inputs(hidden, pixel_values, self.dims.grid, self.dims.has_cls)
        if self.needs_scores:
            if set(self._captured) != {"q", "k"}:
                raise HookError(
                    "stage 1: the vision scoring hooks did not fire; the tower is not laid out as expected"
                )
            attn = self.score_attn[modality]
            q, k = self._captured["q"], self._captured["k"]
            self._captured = {}
            inputs.scores, inputs.keys = scores_from_projections(q, k, attn.num_heads, float(attn.scale))
        reduced, selections = self.apply_fn(inputs, self.config)
        return reduced, outputs.last_hidden_state, selections

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Drop-in for the stock `get_image_features`: the method's tokens, projected."""
        watch = Stopwatch(pixel_values.device)
        watch.start()
        features, last_hidden, selections = self._reduce("image", pixel_values)
        self.recorder.images.extend(selections)
        self.recorder.vision_s += watch.stop()
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden, pooler_output=self.adapter.pooled_output("image", features)
        )

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Drop-in for the stock `get_video_features`: (B, F, 3, H, W) -> the method's tokens per frame,
        projected, as (B * F, n, D) in frame order (what the stock model scatters into the prompt)."""
        watch = Stopwatch(pixel_values_videos.device)
        watch.start()
        b, f = pixel_values_videos.shape[:2]
        frames = pixel_values_videos.reshape(b * f, *pixel_values_videos.shape[2:])
        features, last_hidden, selections = self._reduce("video", frames)
        self.recorder.frames.extend(selections)
        self.recorder.vision_s += watch.stop()
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden, pooler_output=self.adapter.pooled_output("video", features)
        )


def _with_signature_of(stock: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` presenting the stock method's signature: generate() reads it to pick the encoder's
    arguments out of its kwargs (Qwen2.5-VL's image_grid_thw)."""

    @functools.wraps(stock)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def swap_in(owner: nn.Module, name: str, fn: Any) -> None:
    """Replace a method on this one instance (get_<modality>_features; on Qwen also get_rope_index)."""
    if name in vars(owner):
        raise HookError(f"{name} is already replaced on this model instance (is a profile applied?)")
    object.__setattr__(owner, name, fn)


def swap_out(owner: nn.Module, name: str) -> None:
    if name in vars(owner):
        object.__delattr__(owner, name)
