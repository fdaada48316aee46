"""What the hooks write down during one run; the runtime turns it into a ReductionTrace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from duet_cli.compat import cache_from
from duet_cli.trace import ImageSelection


@dataclass
class RowDrops:
    """Stage 2 outcome of one batch row (one prompt, or one beam of it)."""

    n0: int  # visual tokens that entered the LLM in this row
    drops: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (layer, n_before, kept)


@dataclass
class Recorder:
    images: list[ImageSelection] = field(default_factory=list)
    frames: list[ImageSelection] = field(default_factory=list)  # stage 1 per video frame, in order
    rows: list[RowDrops] = field(default_factory=list)
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    # CUDA language-model forwards not yet read: (prefill?, start event, end event); `settle` reads them
    pending: list[tuple[bool, Any, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.images.clear()
        self.frames.clear()
        self.rows.clear()
        self.vision_s = self.prefill_s = self.decode_s = 0.0
        self.decode_steps = 0
        self.pending.clear()

    def settle(self) -> None:
        """Add the recorded CUDA event pairs to the times: one synchronisation after the run, instead of
        two in every decode step."""
        if not self.pending:
            return
        self.pending[-1][2].synchronize()
        for prefill, start, end in self.pending:
            seconds = start.elapsed_time(end) / 1000.0
            if prefill:
                self.prefill_s += seconds
            else:
                self.decode_s += seconds
        self.pending.clear()


def sync(device: torch.device | None) -> None:
    """Wait for queued accelerator work so that wall times mean something."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


class Stopwatch:
    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.t0 = 0.0

    def start(self) -> None:
        sync(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> float:
        sync(self.device)
        return time.perf_counter() - self.t0


class LanguageModelTimer:
    """Times every language-model forward: the first of a prompt is prefill, the rest decode steps.

    On CUDA each forward records a pair of events (no host synchronisation: a decode step must not wait
    for the device); `Recorder.settle` reads them after the run. Elsewhere the wall clock is read."""

    def __init__(self, lm: nn.Module, recorder: Recorder) -> None:
        self.lm, self.recorder = lm, recorder
        self._handles: list[Any] = []
        self._watch = Stopwatch(None)
        self._prefill = True
        self._events: tuple[Any, Any] | None = None

    def install(self) -> None:
        # prepend: the clock starts before any other hook (stage 2 ranking counts as prefill)
        self._handles.append(self.lm.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True))
        self._handles.append(self.lm.register_forward_hook(self._post))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        past = cache_from(kwargs)
        self._prefill = past is None or past.get_seq_length() == 0
        embeds = kwargs.get("inputs_embeds")
        device = embeds.device if embeds is not None else None
        if device is not None and device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
            if not self._prefill:
                self.recorder.decode_steps += 1
            return
        self._events = None
        self._watch = Stopwatch(device)
        self._watch.start()

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._events is not None:
            self._events[1].record()
            self.recorder.pending.append((self._prefill, *self._events))
            return
        elapsed = self._watch.stop()
        if self._prefill:
            self.recorder.prefill_s += elapsed
        else:
            self.recorder.decode_s += elapsed
            self.recorder.decode_steps += 1
