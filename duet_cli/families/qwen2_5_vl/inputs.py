"""Model inputs of dynamic-resolution families (Qwen2.5-VL): every image and every video has its own grid.

The processors size each image and each video (within `LoadedModel.pixel_range`); an image gets its own
placeholder count (its merged tokens, or what stage 1 keeps of them), a video one count per temporal
slice (`temporal_patch_size` frames make one slice of h/2 x w/2 merged tokens; stage 1 treats a slice
as an image). `mm_token_type_ids` (1 image, 2 video) always goes with the ids: without it transformers
silently falls back to 1-D positions. Videos carry `second_per_grid_ts`, the seconds one temporal slice
spans, from the sampled frames' spacing, which spaces their M-RoPE temporal positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from duet_cli.errors import InputError, UsageError
from duet_cli.trace import VisualSpan

if TYPE_CHECKING:
    from duet_cli.engine.session import ReductionSession
    from duet_cli.inputs.video import Video
    from duet_cli.runtime import LoadedModel, Prompt

DEFAULT_SECONDS_PER_FRAME = 0.5  # the Qwen processors' default sampling rate, 2 frames per second


def size_bounds(processor: Any, pixel_range: tuple[int | None, int | None]) -> dict[str, Any]:
    """The `size` override for a Qwen processor from --min-pixels / --max-pixels (both bounds at once)."""
    min_pixels, max_pixels = pixel_range
    if min_pixels is None and max_pixels is None:
        return {}
    default = processor.size
    lo = min_pixels if min_pixels is not None else default["shortest_edge"]
    hi = max_pixels if max_pixels is not None else default["longest_edge"]
    if lo > hi:
        raise UsageError(f"--min-pixels {lo} is larger than --max-pixels {hi}")
    return {"size": {"shortest_edge": lo, "longest_edge": hi}}


def seconds_per_slice(video: Video, temporal_patch_size: int) -> float:
    """Seconds one temporal slice spans: `temporal_patch_size` sampled frames at their mean spacing."""
    if video.fps and len(video.indices) > 1:
        spacing = (video.indices[-1] - video.indices[0]) / (len(video.indices) - 1) / video.fps
        if spacing > 0:
            return temporal_patch_size * spacing
    return temporal_patch_size * DEFAULT_SECONDS_PER_FRAME


def encode_pixels(loaded: LoadedModel, images: list[Any], videos: list[Video]) -> dict[str, torch.Tensor]:
    try:
        return _encode_pixels(loaded, images, videos)
    except ValueError as exc:  # e.g. an aspect ratio above 200, which the Qwen processors cannot resize
        names = [getattr(im, "info", {}).get("duet_path", "") for im in images] + [v.path for v in videos]
        which = ", ".join(n for n in names if n) or "an input"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{which}: the {loaded.name} processor cannot take it: {first}") from None


def _encode_pixels(loaded: LoadedModel, images: list[Any], videos: list[Video]) -> dict[str, torch.Tensor]:
    processor = loaded.processor
    out: dict[str, torch.Tensor] = {}
    if images:
        image_processor = processor.image_processor
        extra = size_bounds(image_processor, loaded.pixel_range)
        encoded = image_processor(images, return_tensors="pt", **extra)
        out |= {"pixel_values": encoded["pixel_values"], "image_grid_thw": encoded["image_grid_thw"]}
    if videos:
        video_processor = getattr(processor, "video_processor", None)
        if video_processor is None:
            raise InputError(f"model {loaded.name} has no video processor: it cannot take video")
        extra = size_bounds(video_processor, loaded.pixel_range)
        frames = [list(v.frames) for v in videos]
        encoded = video_processor(videos=frames, return_tensors="pt", **extra)
        temporal = int(video_processor.temporal_patch_size)
        out["pixel_values_videos"] = encoded["pixel_values_videos"]
        out["video_grid_thw"] = encoded["video_grid_thw"]
        out["second_per_grid_ts"] = torch.tensor([seconds_per_slice(v, temporal) for v in videos])
    return out


def build_dynamic_inputs(
    loaded: LoadedModel, session: ReductionSession, prompts: Sequence[Prompt]
) -> dict[str, Any]:
    """Tokenized, left-padded prompts with per-image and per-video placeholder counts, and pixels."""
    from duet_cli.methods.pyramiddrop.salient import salient_spans, salient_token_mask
    from duet_cli.runtime import check_question

    adapter = loaded.adapter
    for p in prompts:
        for placeholder in adapter.placeholders:
            check_question(p.question, placeholder)
    images = [img for p in prompts for img in p.images]
    videos = [v for p in prompts for v in p.videos]
    pixels = encode_pixels(loaded, images, videos)
    merge = int(loaded.model.config.vision_config.spatial_merge_size)
    image_thw = pixels["image_grid_thw"].tolist() if images else []
    video_thw = pixels["video_grid_thw"].tolist() if videos else []
    merged = [int(t * h * w) // merge**2 for t, h, w in image_thw]
    slices = [(int(t), int(h * w) // merge**2) for t, h, w in video_thw]
    session.image_tokens, session.video_slices = merged, slices
    session.image_grids = [(int(h) // merge, int(w) // merge) for _, h, w in image_thw]
    session.video_grids = [(int(h) // merge, int(w) // merge) for _, h, w in video_thw]
    texts, starts, image_cursor, video_cursor = [], [], 0, 0
    for p in prompts:
        counts = [session.tokens_for_image(n) for n in merged[image_cursor : image_cursor + len(p.images)]]
        video_counts = [
            session.tokens_for_video(t, n) for t, n in slices[video_cursor : video_cursor + len(p.videos)]
        ]
        image_cursor += len(p.images)
        video_cursor += len(p.videos)
        text, start = loaded.chat.prompt(loaded, p.question, counts, video_counts)
        texts.append(text)
        starts.append(start)
    salient = session.llm is not None and session.resolved.queries == "salient"
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=salient)
    ids = enc["input_ids"]
    image_id = adapter.visual_token_id(loaded.model, "image")
    video_id = adapter.visual_token_id(loaded.model, "video")
    expected = {
        "image": (image_id, sum(session.tokens_for_image(n) for n in merged)),
        "video": (video_id, sum(session.tokens_for_video(t, n) for t, n in slices)),
    }
    for kind, (token, want) in expected.items():
        if int((ids == token).sum()) != want:
            raise InputError(f"prompts have {int((ids == token).sum())} {kind} placeholders, expected {want}")
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": enc["attention_mask"],
        "mm_token_type_ids": (ids == image_id).int() + 2 * (ids == video_id).int(),
    }
    for key, value in pixels.items():
        inputs[key] = value.to(loaded.dtype) if value.is_floating_point() and "pixel" in key else value
    if salient:
        rows = [
            salient_token_mask([tuple(o) for o in offsets], salient_spans(p.question), base=start)
            for offsets, p, start in zip(enc["offset_mapping"].tolist(), prompts, starts)
        ]
        assert session.llm is not None
        session.llm.query_override = torch.tensor(rows, dtype=torch.bool)
    return {k: v.to(loaded.device) for k, v in inputs.items()}


def dynamic_spans(
    prompt: Prompt,
    image_counts: Sequence[int],
    video_slices: Sequence[tuple[int, int]],
    per_slice: Sequence[int],
) -> list[VisualSpan]:
    """Where each image and each temporal slice of each video sits among the prompt's visual tokens
    (images first, then videos, as the prompt is built). A slice is reported as a "frame" span whose
    `frame` is the slice index and `source_frame` the file frame number of its first sampled frame."""
    spans, start = [], 0
    for i, n in enumerate(image_counts):
        spans.append(VisualSpan("image", i, start, start + n))
        start += n
    for v, ((t, _), n) in enumerate(zip(video_slices, per_slice)):
        video = prompt.videos[v]
        step = max(1, -(-len(video.frames) // t))  # frames per slice (the processor pads the last)
        for s in range(t):
            first = s * step
            source = video.indices[first] if first < len(video.indices) else None
            spans.append(VisualSpan("frame", v, start, start + n, frame=s, source_frame=source))
            start += n
    return spans
