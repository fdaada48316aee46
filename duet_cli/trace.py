"""ReductionTrace: the one record of what a run kept, per sample, that every command renders.

Plain dataclasses (no torch) so that rendering, JSON and tests never touch model internals.
Index conventions:
- stage 1 indices are vision-encoder token indices of one image (CLIP: 0 = CLS, 1..576 = patches in
  raster order);
- stage 2 indices are positions among the visual tokens of one sample as they entered the LLM
  (0..N0-1, all images of the sample concatenated in prompt order, then each video's frames in order);
- a video frame is an image to stage 1: `frames` holds one ImageSelection per frame, and `spans` says
  which stage-2 indices each image and frame owns, so every drop can be read per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ContextualGroup:
    """One contextual token: a target token plus the tokens merged into it."""

    target: int
    members: list[int]


@dataclass
class ImageSelection:
    """Stage 1 (vision-to-vision) outcome for one image."""

    n_tokens: int  # tokens the encoder produced for this image (CLIP-L/336: 577, CLS included)
    grid: tuple[int, int]  # patch grid (rows, cols) of this image
    has_cls: bool  # whether token 0 is a CLS token (not a patch)
    dominant: list[int]  # kept as they are, in position order (CLS first when present)
    contextual: list[ContextualGroup]  # merged tokens, in output order
    method: str = "visionzip"  # visionzip: target + mean(members); pool: mean of target and members

    @property
    def n_out(self) -> int:
        return len(self.dominant) + len(self.contextual)


@dataclass
class VisualSpan:
    """The stage-2 indices [start, stop) of one image or one video frame within a sample."""

    kind: str  # "image" or "frame"
    index: int  # which image, or which video, of the sample (0-based, prompt order)
    start: int
    stop: int
    frame: int | None = None  # frames: position in the clip (0-based)
    source_frame: int | None = None  # frames: frame number in the video file

    def count(self, kept: list[int]) -> int:
        """How many of `kept` (stage-2 indices) fall in this span."""
        return sum(1 for k in kept if self.start <= k < self.stop)


@dataclass
class DropPoint:
    """Stage 2 (text-to-vision) outcome after `layer` decoder layers for one sample."""

    layer: int  # 1-based: the drop happens after this many decoder layers
    n_before: int
    kept: list[int]  # indices into the sample's N0 visual tokens, ascending


@dataclass
class SampleTrace:
    """Everything one sample (one prompt) went through."""

    images: list[ImageSelection]  # empty when stage 1 is off
    unreduced_visual_tokens: int  # what the stock model would feed the LLM for this sample
    visual_tokens_in: int  # N0: visual tokens entering the LLM
    drops: list[DropPoint] = field(default_factory=list)
    ledger: list[int] = field(default_factory=list)  # visual tokens seen by each decoder layer
    frames: list[ImageSelection] = field(default_factory=list)  # stage 1 per video frame (empty if off)
    spans: list[VisualSpan] = field(default_factory=list)  # filled when the sample has a video
    # dynamic-resolution families: the token grid (rows, cols) of each image, then of each temporal slice
    # of each video, in prompt order (empty for fixed-geometry families: every image has the model's grid)
    grids: list[tuple[int, int]] = field(default_factory=list)

    def kept_per_span(self, drop: DropPoint) -> list[int]:
        """Visual tokens of each span (image or frame) still alive after `drop`."""
        return [span.count(drop.kept) for span in self.spans]

    @property
    def avg_visual_tokens(self) -> float:
        return sum(self.ledger) / len(self.ledger) if self.ledger else float(self.visual_tokens_in)

    @property
    def reduction(self) -> float:
        """Fraction of the unreduced visual tokens removed, on the per-layer average."""
        if self.unreduced_visual_tokens == 0:
            return 0.0
        return 1.0 - self.avg_visual_tokens / self.unreduced_visual_tokens

    def segments(self) -> list[tuple[int, int, int]]:
        """(first_layer, last_layer, visual_tokens) per run of equal counts, layers 1-based."""
        out: list[tuple[int, int, int]] = []
        for i, n in enumerate(self.ledger, start=1):
            if out and out[-1][2] == n:
                out[-1] = (out[-1][0], i, n)
            else:
                out.append((i, i, n))
        return out


@dataclass
class Timings:
    """Wall-clock seconds of one run (synchronized on accelerators)."""

    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0


@dataclass
class ReductionTrace:
    profile: str
    num_layers: int
    samples: list[SampleTrace] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def avg_visual_tokens(self) -> float:
        if not self.samples:
            return 0.0
        return sum(s.avg_visual_tokens for s in self.samples) / len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s_obj, s_dict in zip(self.samples, d["samples"]):
            s_dict["avg_visual_tokens"] = s_obj.avg_visual_tokens
            s_dict["reduction"] = s_obj.reduction
            s_dict["segments"] = [list(seg) for seg in s_obj.segments()]
            for img in [*s_dict["images"], *s_dict["frames"]]:
                img["grid"] = list(img["grid"])
            s_dict["grids"] = [list(g) for g in s_obj.grids]
            if s_obj.spans:
                for drop_obj, drop_dict in zip(s_obj.drops, s_dict["drops"]):
                    drop_dict["kept_per_span"] = s_obj.kept_per_span(drop_obj)
        d["avg_visual_tokens"] = self.avg_visual_tokens
        return d
