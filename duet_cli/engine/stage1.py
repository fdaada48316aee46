"""Stage 1 on CLIP towers: VisionZip selection on the feature layer, with the tower kept on SDPA.

The CLS query and the keys come from a forward pre-hook on the scoring layer's self-attention (its
input is already layer-normed), so no encoder layer ever runs in eager mode to return attention maps.
`get_image_features` is replaced on the model *instance* (never the class), which is what both
`forward()` and `generate()` call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from duet_cli.engine.recorder import Recorder, Stopwatch
from duet_cli.errors import HookError
from duet_cli.families.base import FamilyAdapter
from duet_cli.methods.visionzip.select import Stage1Selection, cls_attention_scores, select_and_merge
from duet_cli.trace import ContextualGroup, ImageSelection


def image_selections(sel: Stage1Selection, n_tokens: int, grid: tuple[int, int]) -> list[ImageSelection]:
    """Per-image trace records from a batched selection."""
    out = []
    assign = sel.assign.tolist()
    for b, (dominant, targets) in enumerate(zip(sel.dominant.tolist(), sel.targets.tolist())):
        members: list[list[int]] = [[] for _ in targets]
        for token, slot in enumerate(assign[b]):
            if slot >= 0 and token != targets[slot]:
                members[slot].append(token)
        groups = [ContextualGroup(target=t, members=m) for t, m in zip(targets, members)]
        out.append(ImageSelection(n_tokens, grid, True, dominant, groups))
    return out


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


class VisionZipStage:
    def __init__(self, model: nn.Module, adapter: FamilyAdapter, config: Any, recorder: Recorder) -> None:
        self.model, self.adapter, self.config, self.recorder = model, adapter, config, recorder
        self.owner = adapter.image_features_owner(model)
        self.score_attn = adapter.vision_score_layer(model)
        self.dims = adapter.dims(model)
        self._armed = False
        self._captured: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._handle: Any = None

    def install(self) -> None:
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
        """Drop-in for `LlavaModel.get_image_features`: [CLS + dominant, contextual] tokens, projected."""
        watch = Stopwatch(pixel_values.device)
        watch.start()
        tower = self.adapter.vision_tower(self.model)
        self._armed, self._captured = True, None
        try:
            outputs = tower(pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            self._armed = False
        if self._captured is None:
            raise HookError(
                "stage 1: the vision scoring hook did not fire; the tower layout is not what duet expects"
            )
        q_cls, keys, scale = self._captured
        self._captured = None
        hidden = outputs.hidden_states[self.adapter.vision_feature_layer(self.model)]
        scores = cls_attention_scores(q_cls, keys, scale)
        cfg = self.config
        reduced, selection = select_and_merge(
            hidden,
            scores,
            keys.mean(dim=1),
            dominant=cfg.dominant,
            contextual=cfg.contextual,
            mode=cfg.contextual_mode,
            cluster_width=cfg.cluster_width or 1,  # unused by the uniform mode
            has_cls=True,
        )
        features = self.adapter.project(self.model, reduced)
        self.recorder.images.extend(image_selections(selection, hidden.shape[1], self.dims.grid))
        self.recorder.vision_s += watch.stop()
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state, pooler_output=list(features)
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
