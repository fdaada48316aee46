"""Stage 1 on Qwen2.5-VL: VisionZip on the merged tokens of each image, after the patch merger.

A forward pre-hook on the last full-attention vision block's attention computes, from its own input,
the attention every patch receives from the patches of its image (query chunks, the tower stays on its
efficient attention) and the keys; both are averaged per 2x2 merge unit and put in raster order
(`duet_cli.families.qwen2_5_vl.vision_scores`). The stock `get_image_features` is replaced on the model
instance by one that runs the stock tower and merger, then selects dominant and merges contextual tokens per
image in the LLM embedding space, counts clamped to the image: d = min(dominant, N - 1),
c = min(contextual, N - d).

Positions: the stock `get_rope_index` cannot place fewer placeholders than the image grid, so it is
replaced on the instance by one that computes each image's full-grid 3-D positions and gathers the
merge units each output token came from (dominant: its unit; contextual: its target's unit). `generate()`
asks for positions before the tower has run; it then gets provisional image positions (right text
positions) and the image columns, and the model's stored rope deltas, are corrected in a pre-hook on
the language model once the selection is known.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_window_index

from duet_cli.compat import cache_from
from duet_cli.engine.recorder import Recorder, Stopwatch
from duet_cli.engine.stage1 import swap_in, swap_out
from duet_cli.engine.stage1_counts import clamped_counts, reduced_count
from duet_cli.errors import HookError, UnsupportedSetupError
from duet_cli.families.base import FamilyAdapter
from duet_cli.families.qwen2_5_vl.positions import (
    IMAGE,
    KIND,
    VIDEO,
    Item,
    counts_per_row,
    per_row,
    rope_index,
)
from duet_cli.families.qwen2_5_vl.vision_scores import per_unit_raster, received_attention
from duet_cli.methods.visionzip.apply import image_selections
from duet_cli.methods.visionzip.select import select_and_merge
from duet_cli.trace import ImageSelection

METHODS = ("visionzip", "random")


class QwenVisionStage1:
    def __init__(self, model: nn.Module, adapter: FamilyAdapter, config: Any, recorder: Recorder) -> None:
        if config.method not in METHODS:
            why = " (a pooled token covers several merge units and has no single 3-D M-RoPE position)"
            raise UnsupportedSetupError(
                f"vision.method: {config.method!r} is not available for Qwen2.5-VL (visionzip or random)"
                + (why if config.method == "pool" else "")
            )
        self.model, self.adapter, self.config, self.recorder = model, adapter, config, recorder
        self.owner: Any = adapter.image_features_owner(model)
        self.lm = adapter.language_model(model)
        self.tower: Any = adapter.vision_tower(model)
        self.score_attn = adapter.vision_score_layer(model)  # the last full-attention block's attention
        model_config: Any = model.config
        vc = model_config.vision_config
        self.merge = int(vc.spatial_merge_size)
        self.window = (int(vc.window_size), int(vc.patch_size))
        self.modalities = ("image", "video")
        self.tokens_per_second = float(vc.tokens_per_second)
        # per image (and per video) of the latest tower call, flat over the batch: grid and merge units
        self.selected: list[Item] = []
        self.selected_video: list[Item] = []
        self._armed = False
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        self._provisional = False
        self._pending: dict[str, Any] = {}
        self._handles: list[Any] = []

    # -- install / remove -------------------------------------------------------------------------
    def install(self) -> None:
        swap_in(self.owner, "get_image_features", self.get_image_features)
        swap_in(self.owner, "get_video_features", self.get_video_features)
        swap_in(self.owner, "get_rope_index", self.get_rope_index)
        self._handles.append(self.score_attn.register_forward_pre_hook(self._capture, with_kwargs=True))
        self._handles.append(self.owner.register_forward_pre_hook(self._capture_inputs, with_kwargs=True))
        self._handles.append(self.lm.register_forward_pre_hook(self._fix_positions, with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name in ("get_image_features", "get_video_features", "get_rope_index"):
            swap_out(self.owner, name)

    # -- vision ---------------------------------------------------------------------------------
    def _capture(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not self._armed:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        seq = hidden.shape[0]
        q, k, _ = module.qkv(hidden).reshape(seq, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = kwargs["position_embeddings"]
        q_rot, k_rot = apply_rotary_pos_emb_vision(q, k, cos, sin)
        scores = received_attention(
            q_rot.transpose(0, 1), k_rot.transpose(0, 1), kwargs["cu_seqlens"], float(module.scaling)
        )
        self._captured = (scores, k.float().mean(dim=1))  # keys before rotary: content, not position
        return None

    def get_image_features(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        """Drop-in for the stock method: per image, what stage 1 keeps of its merged features."""
        if image_grid_thw is None:
            raise HookError("stage 1 on Qwen2.5-VL needs image_grid_thw")
        out, features, self.selected = self._reduce(pixel_values, image_grid_thw, self.recorder.images)
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=features)

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        """Drop-in for the stock method: per video, what stage 1 keeps of each temporal slice."""
        if video_grid_thw is None:
            raise HookError("stage 1 on Qwen2.5-VL needs video_grid_thw")
        out, features, self.selected_video = self._reduce(
            pixel_values_videos, video_grid_thw, self.recorder.frames
        )
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=features)

    def _reduce(
        self, pixels: torch.Tensor, grid_thw: torch.Tensor, record: list[ImageSelection]
    ) -> tuple[Any, Any, list[Item]]:
        """Run the stock tower and merger on every image (or video), then reduce each temporal slice of
        each as one image (an image is one slice): VisionZip on its scores and keys, or a seeded random
        draw. Returns the tower output, one tensor per image or video (the stock pooler_output list),
        and each one's grid with the raster merge unit of every output token."""
        watch = Stopwatch(pixels.device)
        watch.start()
        scoring = self.config.method == "visionzip"
        self._armed, self._captured = scoring, None
        try:
            out = self.tower(pixels.type(self.tower.dtype), grid_thw=grid_thw)
        finally:
            self._armed = False
        unit = self.merge * self.merge
        scores = keys = None
        if scoring:
            if self._captured is None:
                raise HookError(
                    "stage 1: the Qwen2.5-VL scoring hook did not fire (last full-attention block)"
                )
            scores, keys = self._captured
            self._captured = None
            window_index, _ = get_vision_window_index(
                grid_thw, spatial_merge_size=self.merge, window_size=self.window[0], patch_size=self.window[1]
            )
            scores, keys = (
                per_unit_raster(scores, window_index, unit),
                per_unit_raster(keys, window_index, unit),
            )
        merged = out.pooler_output
        features: list[torch.Tensor] = []
        items: list[Item] = []
        offset = 0  # merged tokens of the items before this one
        for t, h, w in grid_thw.tolist():
            n = h * w // unit  # merged tokens of one temporal slice
            grid = (h // self.merge, w // self.merge)
            parts, units = [], []
            for s in range(t):
                lo = offset + s * n
                hid = merged[lo : lo + n]
                if scores is not None and keys is not None:
                    reduced, kept, selection = self._visionzip(
                        hid, scores[lo : lo + n], keys[lo : lo + n], grid
                    )
                else:
                    reduced, kept, selection = self._random(hid, pixels[lo * unit : (lo + n) * unit], grid)
                parts.append(reduced)
                units += [s * n + u for u in kept]
                record.append(selection)
            features.append(torch.cat(parts))
            items.append(Item((t, h, w), units))
            offset += t * n
        self.recorder.vision_s += watch.stop()
        return out, features, items

    def _visionzip(
        self, hid: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, list[int], ImageSelection]:
        """VisionZip on one slice's merged tokens, counts clamped to the slice."""
        n, cfg = hid.shape[0], self.config
        dominant, contextual = cfg.counts_for(n)
        d, c = clamped_counts(dominant, contextual, n)
        reduced, sel = select_and_merge(
            hid[None],
            scores[None],
            keys[None],
            dominant=d,
            contextual=c,
            mode=cfg.contextual_mode,
            cluster_width=cfg.cluster_width or 1,
            has_cls=False,
        )
        kept = sel.dominant[0].tolist() + sel.targets[0].tolist()  # a contextual token sits at its target
        return reduced[0], kept, image_selections(sel, n, grid, has_cls=False)[0]

    def _random(
        self, hid: torch.Tensor, patches: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, list[int], ImageSelection]:
        """The `random` baseline on one slice: min(count, N) merge units drawn uniformly, seeded by the
        profile's seed and the slice's own patches (the same alone or in any batch), in raster order."""
        from duet_cli.methods.random_patches.apply import image_seed

        n = hid.shape[0]
        gen = torch.Generator().manual_seed(image_seed(self.config.seed, patches))
        keep = torch.randperm(n, generator=gen)[: reduced_count(self.config, n)].sort().values
        kept = keep.tolist()
        return hid[keep.to(hid.device)], kept, ImageSelection(n, grid, False, kept, [], method="random")

    def reset(self) -> None:
        """Forget the selections of an earlier tower call (one whose prefill never ran, e.g. it raised):
        the next prompt's positions must not be gathered at another image's kept units."""
        self.selected, self.selected_video, self._provisional = [], [], False

    # -- positions --------------------------------------------------------------------------------
    def _capture_inputs(self, module: Any, args: tuple, kwargs: dict) -> None:
        keys = ("input_ids", "mm_token_type_ids", "attention_mask", "second_per_grid_ts")
        self._pending = {k: kwargs.get(k) for k in keys}
        return None

    def get_rope_index(
        self,
        input_ids: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stock signature and result, for prompts whose images and videos have reduced counts."""
        seconds = _seconds(second_per_grid_ts)
        given = {
            IMAGE: [
                Item(_grid(g), None) for g in (image_grid_thw.tolist() if image_grid_thw is not None else [])
            ],
            VIDEO: [
                Item(_grid(g), None, seconds[i] if i < len(seconds) else 1.0)
                for i, g in enumerate(video_grid_thw.tolist() if video_grid_thw is not None else [])
            ],
        }
        positions, deltas, provisional = self._positions(
            input_ids, mm_token_type_ids, attention_mask, given, seconds
        )
        self._provisional = provisional
        return positions, deltas

    def _positions(
        self,
        input_ids: torch.Tensor,
        types: torch.Tensor,
        attention_mask: torch.Tensor | None,
        given: dict[int, list[Item]],
        seconds: list[float],
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        # generate() expands second_per_grid_ts for beams ([s0, s0, s1, s1]) while the tower ran once per
        # prompt: video i's seconds sit at i * (expansion factor)
        n = len(self.selected_video)
        repeat = len(seconds) // n if n and len(seconds) % n == 0 else 1
        videos = [
            Item(v.grid, v.kept, seconds[i * repeat] if i * repeat < len(seconds) else 1.0)
            for i, v in enumerate(self.selected_video)
        ]
        items = {
            key: per_row(counts_per_row(types, attention_mask, key), selected, given[key], KIND[key])
            for key, selected in ((IMAGE, self.selected), (VIDEO, videos))
        }
        return rope_index(
            self.owner, self.merge, self.tokens_per_second, input_ids, types, attention_mask, items
        )

    def _fix_positions(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """At a prefill whose positions were provisional, put the kept tokens' 3-D positions in place.

        Every prefill uses up the selections: the next generate() asks for positions before its own
        tower call, and must get provisional ones rather than the previous prompt's."""
        past = cache_from(kwargs)
        if past is not None and past.get_seq_length() > 0:
            return None
        try:
            if not self._provisional:
                return None
            pending, position_ids = self._pending, kwargs.get("position_ids")
            if (
                position_ids is None
                or pending.get("input_ids") is None
                or pending.get("mm_token_type_ids") is None
            ):
                raise HookError(
                    "stage 1 on Qwen2.5-VL needs input_ids and mm_token_type_ids to place positions"
                )
            if not self.selected and not self.selected_video:
                raise HookError("stage 1 on Qwen2.5-VL: no selection for the images of this prompt")
            fixed, deltas, _ = self._positions(
                pending["input_ids"],
                pending["mm_token_type_ids"],
                pending["attention_mask"],
                {IMAGE: [], VIDEO: []},
                _seconds(pending.get("second_per_grid_ts")),
            )
        finally:
            self._provisional, self.selected, self.selected_video = False, [], []
        fixed = fixed.to(position_ids.device)
        self.owner.rope_deltas = deltas.to(position_ids.device)  # what a later cached step continues from
        position_ids = torch.cat([position_ids[:1], fixed]) if position_ids.shape[0] == 4 else fixed
        return args, {**kwargs, "position_ids": position_ids}


def _grid(g: list[int]) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in g)
    return t, h, w


def _seconds(second_per_grid_ts: Any) -> list[float]:
    if second_per_grid_ts is None:
        return []
    values = second_per_grid_ts.tolist() if hasattr(second_per_grid_ts, "tolist") else second_per_grid_ts
    return [float(v) for v in values]
