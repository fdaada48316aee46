"""Stage 2 in the decoder: PyramidDrop drop points as forward pre-hooks on the stock decoder layers.

At prefill, the hook on the first layer of each new segment ranks the visual tokens, gathers the kept
columns (hidden states, positions, padding mask), re-pads on the left and builds that segment's mask
and rotary tables; later layers of the segment get the same substitutions. Each layer's KV cache
keeps the length it saw, so during decoding every segment rebuilds its mask against its own cache.
Layer 0 always sees the full sequence, which is what `generate()` reads.
Every placeholder id the family has (images, and video frames for Video-LLaVA) marks a visual token, so
all images and all frames of a prompt are ranked together against one keep count.
M-RoPE families (Qwen2.5-VL, `rope_rows = 3`): the decoder layers get only the text positions (row 0 of
the (4, B, L) ids, or None); the three M-RoPE rows are read where the language model is called, gathered
with the kept columns (kept tokens keep their 3-D positions) and turned into cos/sin by the model's own
rotary module, so ranking and attention rotate exactly as the stock attention does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from duet_cli.compat import cache_from, causal_mask, decode_mask
from duet_cli.engine.recorder import Recorder, RowDrops
from duet_cli.errors import HookError, UnsupportedSetupError
from duet_cli.families.base import FamilyAdapter
from duet_cli.methods.pyramiddrop.rank import (
    gather_columns,
    plan_keep,
    query_rows,
    repack_left,
    text_to_visual_scores,
)


@dataclass
class Segment:
    """The columns one run of decoder layers sees (segment 0 = the full prompt)."""

    cols: torch.Tensor  # (B, Ls) original prompt column, -1 for padding
    vis: torch.Tensor  # (B, Ls) index among the row's visual tokens, -1 for non-visual/padding
    mask2d: torch.Tensor  # (B, Ls) long, 1 = real token
    shift: torch.Tensor  # (B,) subtract from stock decode positions (renumber mode)
    kwargs: dict[str, Any] | None = None  # substitutions for the current forward
    rope: torch.Tensor | None = None  # (3, B, Ls) M-RoPE positions of the prefill columns (M-RoPE only)
    padded: bool = True  # whether mask2d has a zero (read once at prefill: decode steps never sync)
    decoded: int = 0  # tokens decoded since the prefill (this segment's cache = Ls + decoded)


@dataclass
class PromptState:
    prompt_len: int
    query_mask: torch.Tensor  # (B, L0) bool
    n0: list[int]  # visual tokens per row
    segments: list[Segment] = field(default_factory=list)
    active: bool = True  # False when no row has visual tokens


class PyramidDropStage:
    def __init__(self, model: nn.Module, adapter: FamilyAdapter, resolved: Any, recorder: Recorder) -> None:
        self.model, self.adapter, self.resolved, self.recorder = model, adapter, resolved, recorder
        self.lm: Any = adapter.language_model(model)
        self.layers = adapter.decoder_layers(model)
        self.starts = [0, *resolved.llm_layers]  # first 0-based layer of each segment
        # every modality's placeholders are visual tokens: all images and all frames are ranked together
        self.visual_ids = torch.tensor(adapter.visual_token_ids(model), dtype=torch.long)
        self.rotary = adapter.rotary_embedding(model)
        self.mrope = adapter.rope_rows > 1
        if self.mrope and resolved.positions == "renumber":
            raise UnsupportedSetupError(
                "llm.positions: renumber is not defined for M-RoPE models (3-D positions); "
                "use positions: keep (kept tokens keep their original 3-D positions)"
            )
        self._rope_in: torch.Tensor | None = None  # (3, B, L) M-RoPE rows of the current forward
        self.state: PromptState | None = None
        self.phase = "idle"
        self.query_override: torch.Tensor | None = None  # (B, L0) bool, one prefill only
        self.forced: list[list[list[int]]] | None = None  # [drop][prompt] visual indices to keep
        self._pending_ids: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._swapped: list[tuple[nn.Module, Any]] = []
        self._attn = "sdpa"

    # -- install / remove -------------------------------------------------------------------------
    def install(self) -> None:
        self._handles.append(self.model.register_forward_pre_hook(self._refuse_labels, with_kwargs=True))
        owner = self.adapter.image_features_owner(self.model)
        self._handles.append(owner.register_forward_pre_hook(self._capture_ids, with_kwargs=True))
        self._handles.append(self.lm.register_forward_pre_hook(self._lm_pre, with_kwargs=True))
        self._handles.append(self.lm.register_forward_hook(self._lm_post, with_kwargs=True))
        # the layers of segments 1.. get an instance-level forward instead of a pre-hook: a module with
        # hooks takes torch's slow call path (~15 Python calls per layer per decode step), this costs one
        for i in range(self.starts[1], len(self.layers)):
            layer = self.layers[i]
            previous = vars(layer).get("forward")  # e.g. accelerate's own instance-level forward
            self._swapped.append((layer, previous))
            object.__setattr__(layer, "forward", self._layer_forward(i, layer, layer.forward))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for layer, previous in reversed(self._swapped):
            object.__delattr__(layer, "forward")
            if previous is not None:
                object.__setattr__(layer, "forward", previous)
        self._swapped.clear()
        self.state = None

    # -- hooks ----------------------------------------------------------------------------------
    def _refuse_labels(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if kwargs.get("labels") is not None:
            raise UnsupportedSetupError(
                "a forward with labels under an llm stage would misalign labels with the kept tokens; "
                "training with stage 2 goes through duet's training path"
            )
        return None

    def _capture_ids(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._pending_ids = ids
        return None

    def _lm_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise HookError("stage 2 expects the language model to be called with inputs_embeds")
        past = cache_from(kwargs)
        if past is not None and not isinstance(past, DynamicCache):
            raise UnsupportedSetupError(
                f"stage 2 needs a DynamicCache (per-layer lengths); got {type(past).__name__}. "
                "Static and offloaded caches are not supported with an llm stage"
            )
        cached = past is not None and past.get_seq_length() > 0
        if self.mrope:
            self._rope_in = self._mrope_rows(kwargs.get("position_ids"), embeds, past)
        if not cached:
            self._start_prompt(embeds, kwargs.get("attention_mask"))
            if self.mrope and self.state is not None:
                self.state.segments[0].rope = self._rope_in
            self.phase = "prefill"
        else:
            if self.state is None:
                raise HookError("stage 2: decoding step without a prefill under this profile")
            if embeds.shape[1] != 1:
                raise UnsupportedSetupError(
                    "stage 2 decodes one token at a time: assisted/speculative decoding and "
                    "cache continuation with several tokens are not supported with an llm stage"
                )
            self.phase = "decode"
            self._decode_mask = kwargs.get("attention_mask")
        return None

    @staticmethod
    def _mrope_rows(position_ids: torch.Tensor | None, embeds: torch.Tensor, past: Any) -> torch.Tensor:
        """The (3, B, L) M-RoPE rows the stock text model derives from its `position_ids` argument."""
        b, length = embeds.shape[:2]
        if position_ids is None:
            start = past.get_seq_length() if past is not None else 0
            rows = torch.arange(start, start + length, device=embeds.device).view(1, 1, -1)
        elif position_ids.ndim == 2:
            rows = position_ids[None]
        elif position_ids.shape[0] == 4:
            rows = position_ids[1:]  # row 0 holds the text positions (mask only)
        else:
            rows = position_ids
        return rows.to(embeds.device).expand(3, b, length)

    def _lm_post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.state is not None:
            for seg in self.state.segments:
                seg.kwargs = None
        self.phase = "idle"
        return None

    def _layer_forward(self, index: int, layer: nn.Module, inner: Any) -> Any:
        """Layer `index`'s forward with its segment's substitutions; the first layer of a segment drops
        (prefill) or prepares the segment's decode mask (once per step for the whole segment)."""
        s = bisect.bisect_right(self.starts, index) - 1
        first = index == self.starts[s]

        def forward(*args: Any, **kwargs: Any) -> Any:
            state = self.state
            if state is None or not state.active or self.phase == "idle":
                return inner(*args, **kwargs)
            if args:
                hidden, rest = args[0], args[1:]
            else:
                hidden, rest = kwargs.pop("hidden_states"), ()
            if first:
                if self.phase == "prefill":
                    hidden = self._drop(s, index, layer, hidden, kwargs)
                else:
                    self._decode_segment(s, index, hidden, kwargs)
            seg_kwargs = state.segments[s].kwargs
            assert seg_kwargs is not None
            return inner(hidden, *rest, **{**kwargs, **seg_kwargs})

        return forward

    # -- prefill --------------------------------------------------------------------------------
    def _start_prompt(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        ids = self._pending_ids
        self._pending_ids = None
        b, length = embeds.shape[:2]
        if ids is None or tuple(ids.shape) != (b, length):
            raise HookError(
                "stage 2 needs input_ids to locate the image tokens (inputs_embeds alone are not enough)"
            )
        device = embeds.device
        ids = ids.to(device)
        valid = (
            attention_mask.to(device).bool()
            if attention_mask is not None
            else torch.ones(b, length, dtype=torch.bool, device=device)
        )
        if not bool(valid[:, -1].all()):
            raise UnsupportedSetupError("stage 2 needs left padding (tokenizer.padding_side = 'left')")
        visual = torch.isin(ids, self.visual_ids.to(device))
        vis = torch.where(visual, visual.long().cumsum(dim=1) - 1, torch.full_like(ids, -1))
        cols = torch.where(valid, torch.arange(length, device=device).expand(b, length), -1)
        query = self._query_mask(ids, valid, visual)
        n0 = visual.sum(dim=1).tolist()
        zero = torch.zeros(b, dtype=torch.long, device=device)
        self.state = PromptState(
            prompt_len=length,
            query_mask=query,
            n0=n0,
            segments=[Segment(cols=cols, vis=vis, mask2d=valid.long(), shift=zero)],
            active=any(n0),
        )
        self.recorder.rows = [RowDrops(n0=n) for n in n0]
        self._attn = str(self.lm.config._attn_implementation)  # once per prompt, for the decode masks

    def _query_mask(self, ids: torch.Tensor, valid: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        b, length = ids.shape
        last = torch.zeros_like(valid)
        last[:, -1] = True
        override, self.query_override = self.query_override, None
        if override is not None:
            override = override.to(ids.device)
            if override.shape[0] != b:  # generate() expanded rows for beams / return sequences
                override = override.repeat_interleave(b // override.shape[0], dim=0)
            return (override.bool() & valid) | last
        mode = self.resolved.queries
        if mode == "last":
            return last
        if mode == "all":
            return valid.clone()
        if mode == "after_image":
            cols = torch.arange(length, device=ids.device).expand(b, length)
            last_image = torch.where(visual, cols, -1).max(dim=1, keepdim=True).values
            return (valid & (cols > last_image)) | last
        raise HookError(
            f"queries: {mode!r} needs prompts built by duet (the question's tokens are not known)"
        )

    def _drop(self, s: int, index: int, layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        state = self.state
        assert state is not None
        prev = state.segments[s - 1]
        current = prev.kwargs if prev.kwargs is not None else kwargs
        cos, sin = current["position_embeddings"]
        positions = current["position_ids"]
        b, length = hidden.shape[:2]
        if positions is not None:  # M-RoPE layers may get no text positions
            positions = positions.expand(b, length) if positions.shape[0] != b else positions
        valid = prev.mask2d.bool()
        visual = prev.vis >= 0
        keep_n = torch.tensor(
            [self.resolved.keep_counts(n)[s - 1] for n in state.n0], device=hidden.device, dtype=torch.long
        )
        if self.forced is not None:
            keep = self._forced_keep(s, prev, valid, visual)
        else:
            query = gather_columns(state.query_mask, prev.cols, fill=False) & valid
            keep = self._rank(layer, hidden, query, valid, visual, keep_n, cos, sin)
        index_map = repack_left(keep)
        new_hidden = gather_columns(hidden, index_map)
        mask2d = gather_columns(prev.mask2d, index_map)
        seg = Segment(
            cols=gather_columns(prev.cols, index_map, fill=-1),
            vis=gather_columns(prev.vis, index_map, fill=-1),
            mask2d=mask2d,
            shift=state.segments[0].mask2d.sum(dim=1) - mask2d.sum(dim=1),
            padded=bool((mask2d == 0).any()),
        )
        new_pos: torch.Tensor | None
        if self.resolved.positions == "renumber":
            new_pos = (mask2d.cumsum(dim=1) - 1).clamp(min=0)
        else:
            new_pos = gather_columns(positions, index_map) if positions is not None else None
            seg.shift = torch.zeros_like(seg.shift)
        if self.mrope:  # kept tokens keep their 3-D positions
            assert prev.rope is not None
            seg.rope = gather_columns(prev.rope.permute(1, 2, 0), index_map).permute(2, 0, 1)
        seg.kwargs = self._segment_kwargs(index, new_hidden, mask2d, new_pos, cache_from(kwargs), seg.rope)
        if len(state.segments) > s:
            state.segments[s] = seg
        else:
            state.segments.append(seg)
        layer_count = self.starts[s]
        for row, (vis_prev, vis_new) in enumerate(zip(prev.vis.tolist(), seg.vis.tolist())):
            before = sum(1 for v in vis_prev if v >= 0)
            kept = sorted(v for v in vis_new if v >= 0)
            self.recorder.rows[row].drops.append((layer_count, before, kept))
        return new_hidden

    @torch.no_grad()  # ranking is detached: in training, gradients flow through the kept tokens only
    def _rank(
        self,
        layer: nn.Module,
        hidden: torch.Tensor,
        query: torch.Tensor,
        valid: torch.Tensor,
        visual: torch.Tensor,
        keep_n: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        b = hidden.shape[0]
        rows, row_valid = query_rows(query)
        q, k = self.adapter.query_key(layer, hidden, rows)
        cos_q = gather_columns(cos.expand(b, -1, -1), rows)
        sin_q = gather_columns(sin.expand(b, -1, -1), rows)
        q = self.adapter.apply_rope(q, cos_q, sin_q)
        k = self.adapter.apply_rope(k, cos.expand(b, -1, -1), sin.expand(b, -1, -1))
        scaling = self.adapter.attention_geometry(layer)[3]
        scores = text_to_visual_scores(q, k, rows, row_valid, valid, scaling)
        return plan_keep(scores, visual, valid, keep_n)

    def final_columns(self) -> torch.Tensor:
        """Original prompt column of each column the last layers saw in the latest prefill (-1 = padding)."""
        if self.state is None:
            raise HookError("stage 2 has not run a prefill yet")
        return self.state.segments[-1].cols

    def _forced_keep(self, s: int, prev: Segment, valid: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        assert self.forced is not None
        per_prompt = self.forced[s - 1]
        rows = prev.vis.shape[0]
        repeat = rows // len(per_prompt)
        keep = valid & ~visual
        for row in range(rows):
            wanted = torch.tensor(per_prompt[row // repeat], dtype=torch.long, device=prev.vis.device)
            keep[row] |= visual[row] & torch.isin(prev.vis[row], wanted)
        return keep

    # -- decode ---------------------------------------------------------------------------------
    def _decode_segment(self, s: int, index: int, hidden: torch.Tensor, kwargs: dict) -> None:
        """One decode step's substitutions for every layer of segment s, made once at its first layer:
        the mask against this segment's (shorter) cache and, when positions are renumbered, shifted
        positions and their rotary tables. Kept positions need neither: the stock ones are right."""
        state = self.state
        assert state is not None
        seg = state.segments[s]
        past = cache_from(kwargs)
        b = hidden.shape[0]
        grown = seg.decoded + hidden.shape[1]  # columns after the prefill's, this step's included
        full = self._decode_mask
        if full is not None:  # generate() appends ones: a decoded column never adds padding
            extra = full[:, full.shape[1] - grown :].to(seg.mask2d)
        else:
            extra = torch.ones(b, grown, dtype=seg.mask2d.dtype, device=seg.mask2d.device)
        mask2d = torch.cat([seg.mask2d, extra], dim=1)
        seg.decoded = grown
        positions = kwargs["position_ids"]
        renumbered = self.resolved.positions == "renumber" and not self.mrope
        if renumbered:
            positions = positions.expand(b, -1) if positions.shape[0] != b else positions
            positions = positions - seg.shift.unsqueeze(1)
        mask = decode_mask(
            config=self.lm.config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            cache=past,
            position_ids=positions,
            layer_idx=index,
            padded=seg.padded,
            attn_implementation=self._attn,
        )
        seg.kwargs = {"attention_mask": mask}
        if renumbered:
            seg.kwargs |= {"position_ids": positions, "position_embeddings": self.rotary(hidden, positions)}

    def _segment_kwargs(
        self,
        index: int,
        hidden: torch.Tensor,
        mask2d: torch.Tensor,
        positions: torch.Tensor | None,
        past: Any,
        rope: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        # always an explicit 2-D mask: gapped positions (keep mode) must never be read as packed sequences
        mask = causal_mask(
            config=self.lm.config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            cache=past,
            position_ids=positions,
            layer_idx=index,
        )
        return {
            "attention_mask": mask,
            "position_ids": positions,
            # M-RoPE: cos/sin from the three position rows; the text positions only feed the mask
            "position_embeddings": self.rotary(hidden, rope if rope is not None else positions),
        }
