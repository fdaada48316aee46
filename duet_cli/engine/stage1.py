"""Stage 1 on CLIP towers: a registered method reduces the feature-layer tokens before the projector.

Methods that rank by CLS attention (VisionZip) get the CLS query and the keys from a forward pre-hook
on the scoring layer's self-attention (its input is already layer-normed), so the tower stays on SDPA
and no encoder layer runs in eager mode to return attention maps. `get_image_features` is replaced on
the model *instance* (never the class), which is what both `forward()` and `generate()` call.
"""

from __future__ import annotations

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
from duet_cli.methods.visionzip.select import cls_attention_scores


class VisionTimer:
    """Times the stock `get_image_features` (used when stage 1 is off, so every run reports vision time)."""

    def __init__(self, owner: nn.Module, recorder: Recorder) -> None:
        self.owner: Any = owner
        self.recorder = recorder

    def install(self) -> None:
        _swap_in(self.owner, self._timed)

    def remove(self) -> None:
        _swap_out(self.owner)

    def _timed(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        watch = Stopwatch(pixel_values.device)
        watch.start()
        result = type(self.owner).get_image_features(
            self.owner,
            pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            image_sizes=image_sizes,
            **kwargs,
        )
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
        self.score_attn = adapter.vision_score_layer(model)
        self.dims = adapter.dims(model)
        self._armed = False
        self._captured: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._handle: Any = None

    def install(self) -> None:
        if self.needs_scores:
            self._handle = self.score_attn.register_forward_pre_hook(self._capture, with_kwargs=True)
        _swap_in(self.owner, self.get_image_features)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        _swap_out(self.owner)

    def _capture(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not self._armed:
            return None
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        b, n, _ = hidden.shape
        heads, head_dim = module.num_heads, module.head_dim
        q_cls = module.q_proj(hidden[:, :1]).view(b, heads, head_dim)
        keys = module.k_proj(hidden).view(b, n, heads, head_dim).transpose(1, 2)
        self._captured = (q_cls, keys, float(module.scale))
        return None

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Drop-in for `LlavaModel.get_image_features`: the method's tokens, projected."""
        watch = Stopwatch(pixel_values.device)
        watch.start()
        tower = self.adapter.vision_tower(self.model)
        self._armed, self._captured = self.needs_scores, None
        try:
            outputs = tower(pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            self._armed = False
        hidden = outputs.hidden_states[self.adapter.vision_feature_layer(self.model)]
        inputs = Stage1Inputs(hidden, pixel_values, self.dims.grid, self.dims.has_cls)
        if self.needs_scores:
            if self._captured is None:
                raise HookError(
                    "stage 1: the vision scoring hook did not fire; the tower is not laid out as expected"
                )
            q_cls, keys, scale = self._captured
            self._captured = None
            inputs.scores = cls_attention_scores(q_cls, keys, scale)
            inputs.keys = keys.mean(dim=1)
        reduced, selections = self.apply_fn(inputs, self.config)
        features = self.adapter.project(self.model, reduced)
        self.recorder.images.extend(selections)
        self.recorder.vision_s += watch.stop()
        per_image: Any = list(features)  # LLaVA reads pooler_output as one tensor per image
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state, pooler_output=per_image
        )


def _swap_in(owner: nn.Module, fn: Any) -> None:
    if "get_image_features" in vars(owner):
        raise HookError(
            "get_image_features is already replaced on this model instance (is a profile applied?)"
        )
    object.__setattr__(owner, "get_image_features", fn)


def _swap_out(owner: nn.Module) -> None:
    if "get_image_features" in vars(owner):
        object.__delattr__(owner, "get_image_features")
