"""Stage 1 on Qwen2.5-VL: VisionZip on the merged tokens of each image, after the patch merger.

A forward pre-hook on the last full-attention vision block's attention computes, from its own input,
the attention every patch receives from the patches of its image (query chunks, the tower stays on its
efficient attention) and the keys; both are averaged per 2x2 merge unit and put in raster order
(`duet_cli.engine.qwen_vision_scores`). The stock `get_image_features` is replaced on the model instance
by one that runs the stock tower and merger, then selects dominant and merges contextual tokens per
image in the LLM embedding space, counts clamped to the image: d = min(dominant, N - 1),
c = min(contextual, N - d).

Positions: the stock `get_rope_index` cannot place fewer placeholders than the image grid, so it is
replaced on the instance by one that computes each image's full-grid 3-D positions and gathers the
merge units each output token came from (dominant: its unit; contextual: its target's unit). `generate()`
asks for positions before the tower has run; it then gets provisional image positions (right text
positions, so decoding and rope deltas are right) and the image columns are corrected in a pre-hook on
the language model once the selection is known.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_window_index

from duet_cli.engine.qwen_vision_scores import per_unit_raster, received_attention
from duet_cli.engine.recorder import Recorder, Stopwatch
from duet_cli.engine.stage1_counts import clamped_counts, reduced_count
from duet_cli.errors import HookError, UnsupportedSetupError
from duet_cli.families.base import FamilyAdapter
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
        self.modalities = ("image",)
        # (grid, merge unit of each output token) per image of the latest tower call, flat over the batch
        self.selected: list[tuple[tuple[int, int, int], list[int]]] = []
        self._armed = False
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        self._provisional = False
        self._pending: dict[str, Any] = {}
        self._handles: list[Any] = []

    # -- install / remove -------------------------------------------------------------------------
    def install(self) -> None:
        _swap_in(self.owner, "get_image_features", self.get_image_features)
        _swap_in(self.owner, "get_rope_index", self.get_rope_index)
        self._handles.append(self.score_attn.register_forward_pre_hook(self._capture, with_kwargs=True))
        self._handles.append(self.owner.register_forward_pre_hook(self._capture_inputs, with_kwargs=True))
        self._handles.append(self.lm.register_forward_pre_hook(self._fix_positions, with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name in ("get_image_features", "get_rope_index"):
            _swap_out(self.owner, name)

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
        """Drop-in for the stock method: per image, the VisionZip tokens of its merged features."""
        if image_grid_thw is None:
            raise HookError("stage 1 on Qwen2.5-VL needs image_grid_thw")
        watch = Stopwatch(pixel_values.device)
        watch.start()
        if self.config.method == "random":
            out, chosen = self._random(pixel_values, image_grid_thw)
            self.recorder.vision_s += watch.stop()
            return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=chosen)
        self._armed, self._captured = True, None
        try:
            out = self.tower(pixel_values.type(self.tower.dtype), grid_thw=image_grid_thw)
        finally:
            self._armed = False
        if self._captured is None:
            raise HookError("stage 1: the Qwen2.5-VL scoring hook did not fire (last full-attention block)")
        scores, keys = self._captured
        self._captured = None
        window_index, _ = get_vision_window_index(
            image_grid_thw,
            spatial_merge_size=self.merge,
            window_size=self.window[0],
            patch_size=self.window[1],
        )
        unit = self.merge * self.merge
        scores, keys = per_unit_raster(scores, window_index, unit), per_unit_raster(keys, window_index, unit)
        merged = out.pooler_output
        sizes = (image_grid_thw.prod(-1) // unit).tolist()
        features: list[torch.Tensor] = []
        self.selected = []
        cfg = self.config
        for (t, h, w), hid, sc, ky in zip(
            image_grid_thw.tolist(), merged.split(sizes), scores.split(sizes), keys.split(sizes)
        ):
            n = hid.shape[0]
            d, c = clamped_counts(*cfg.counts_for(n), n=n)
            reduced, sel = select_and_merge(
                hid[None],
                sc[None],
                ky[None],
                dominant=d,
                contextual=c,
                mode=cfg.contextual_mode,
                cluster_width=cfg.cluster_width or 1,
                has_cls=False,
            )
            features.append(reduced[0])
            self.selected.append(((t, h, w), sel.dominant[0].tolist() + sel.targets[0].tolist()))
            grid = (t * h // self.merge, w // self.merge)
            self.recorder.images.extend(image_selections(sel, n, grid, has_cls=False))
        self.recorder.vision_s += watch.stop()
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=features)

    def _random(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor
    ) -> tuple[Any, Any]:  # (tower output, one tensor per image, as the stock pooler_output list)
        """The stage-1 `random` baseline per image: min(count, N) merge units drawn uniformly, seeded by
        the profile's seed and the image's own patches (the same alone or in any batch), in raster order."""
        from duet_cli.methods.random_patches.apply import image_seed

        out = self.tower(pixel_values.type(self.tower.dtype), grid_thw=image_grid_thw)
        unit = self.merge * self.merge
        patches = image_grid_thw.prod(-1).tolist()
        sizes = [p // unit for p in patches]
        features: list[torch.Tensor] = []
        self.selected = []
        for (t, h, w), hid, px in zip(
            image_grid_thw.tolist(), out.pooler_output.split(sizes), pixel_values.split(patches)
        ):
            n = hid.shape[0]
            gen = torch.Generator().manual_seed(image_seed(self.config.seed, px))
            keep = torch.randperm(n, generator=gen)[: reduced_count(self.config, n)].sort().values
            features.append(hid[keep.to(hid.device)])
            self.selected.append(((t, h, w), keep.tolist()))
            grid = (t * h // self.merge, w // self.merge)
            self.recorder.images.append(ImageSelection(n, grid, False, keep.tolist(), [], method="random"))
        return out, features

    # -- positions --------------------------------------------------------------------------------
    def _capture_inputs(self, module: Any, args: tuple, kwargs: dict) -> None:
        self._pending = {k: kwargs.get(k) for k in ("input_ids", "mm_token_type_ids", "attention_mask")}
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
        """The stock signature and result, for prompts whose images have reduced placeholder counts."""
        if video_grid_thw is not None:
            raise UnsupportedSetupError("a vision stage on Qwen2.5-VL takes images, not video")
        positions, deltas, provisional = self._positions(
            input_ids, mm_token_type_ids, attention_mask, image_grid_thw
        )
        self._provisional = provisional
        return positions, deltas

    def _positions(
        self,
        input_ids: torch.Tensor,
        types: torch.Tensor,
        attention_mask: torch.Tensor | None,
        grids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(3, B, L) positions, (B, 1) rope deltas, and whether image positions are provisional."""
        device = input_ids.device
        b, length = input_ids.shape
        positions = torch.zeros(3, b, length, dtype=input_ids.dtype, device=device)
        rows = []
        for row in range(b):
            valid = (
                attention_mask[row].bool()
                if attention_mask is not None
                else torch.ones(length, dtype=torch.bool, device=device)
            )
            groups = [(key, len(list(run))) for key, run in itertools.groupby(types[row][valid].tolist())]
            rows.append((valid, groups))
        images = self._images_per_row([sum(1 for key, _ in g if key != 0) for _, g in rows], grids)
        provisional, deltas = False, list[int]()
        for (valid, groups), row_images in zip(rows, images):
            cur, parts, pending = 0, [], iter(row_images)
            for key, n in groups:
                if key == 0:
                    parts.append(torch.arange(n, device=device).view(1, -1).expand(3, -1) + cur)
                    cur += n
                    continue
                if key != 1:
                    raise UnsupportedSetupError("a vision stage on Qwen2.5-VL takes images, not video")
                (t, h, w), kept = next(pending)
                grid = torch.tensor([t, h, w])
                full = self.owner.get_vision_position_ids(cur, grid, 1, self.merge, 1, device=device)
                if kept is None:  # the tower has not run yet (generate() asks first): corrected later
                    kept, provisional = list(range(min(n, full.shape[1]))), True
                if len(kept) != n:
                    raise HookError(
                        f"an image has {n} placeholders but stage 1 emits {len(kept)} tokens for it "
                        f"(grid {(t, h, w)}); build prompts with the reduced counts"
                    )
                parts.append(full[:, torch.tensor(kept, dtype=torch.long, device=device)])
                cur += max(h, w) // self.merge
            llm = torch.cat(parts, dim=1)
            positions[:, len(deltas), valid] = llm.to(positions.dtype)
            deltas.append(int(llm.max()) + 1 - int(valid.sum()))
        return positions, torch.tensor(deltas, device=device).unsqueeze(1), provisional

    def _images_per_row(self, counts: list[int], grids: torch.Tensor | None) -> list[list[Any]]:
        """(grid, kept units or None) of each image of each row, rows holding `counts` images.

        After the tower ran: its selections, in order; generate() repeats each prompt's rows for beams
        after the tower ran once per prompt, so the rows of prompt p are p * r ... p * r + r - 1.
        Before (generate() asks for positions first): the given grids, with no selection yet."""
        total, selected = sum(counts), self.selected
        if selected and total % len(selected) == 0:
            repeat = total // len(selected)
            out = []
            for row, c in enumerate(counts):
                first = sum(counts[p * repeat] for p in range(row // repeat))
                out.append(list(selected[first : first + c]))
            return out
        if grids is None or len(grids) != total:
            raise HookError(
                f"stage 1 on Qwen2.5-VL: {total} images in the prompts but "
                f"{0 if grids is None else len(grids)} image grids (image_grid_thw)"
            )
        flat = [(tuple(int(v) for v in g), None) for g in grids.tolist()]
        return [flat[sum(counts[:row]) : sum(counts[: row + 1])] for row in range(len(counts))]

    def _fix_positions(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """At a prefill whose positions were provisional, put the kept tokens' 3-D positions in place.

        Every prefill uses up the selections: the next generate() asks for positions before its own
        tower call, and must get provisional ones rather than the previous prompt's."""
        past = kwargs.get("past_key_values")
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
            if not self.selected:
                raise HookError("stage 1 on Qwen2.5-VL: no selection for the images of this prompt")
            fixed, _, _ = self._positions(
                pending["input_ids"], pending["mm_token_type_ids"], pending["attention_mask"], None
            )
        finally:
            self._provisional, self.selected = False, []
        fixed = fixed.to(position_ids.device)
        position_ids = torch.cat([position_ids[:1], fixed]) if position_ids.shape[0] == 4 else fixed
        return args, {**kwargs, "position_ids": position_ids}


def _swap_in(owner: nn.Module, name: str, fn: Any) -> None:
    if name in vars(owner):
        raise HookError(f"{name} is already replaced on this model instance (is a profile applied?)")
    object.__setattr__(owner, name, fn)


def _swap_out(owner: nn.Module, name: str) -> None:
    if name in vars(owner):
        object.__delattr__(owner, name)
