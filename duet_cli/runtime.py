"""Loading a model and running prompts through it under an applied profile, returning a ReductionTrace."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from duet_cli.engine.session import ReductionSession
from duet_cli.errors import InputError, ModelNotFoundError, UsageError
from duet_cli.families import get_adapter
from duet_cli.families.base import FamilyAdapter
from duet_cli.inputs.chat_template import ChatTemplate
from duet_cli.inputs.video import Video
from duet_cli.trace import ReductionTrace, SampleTrace, Timings, VisualSpan

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model with everything needed to prompt it."""

    name: str
    model: Any
    processor: Any
    tokenizer: Any
    adapter: FamilyAdapter
    chat: ChatTemplate  # the chat template prompts are written with (duet_cli.inputs.chat_template)
    dtype: torch.dtype
    device: torch.device
    untrained: bool = False
    default_profile: str = "baseline"
    # dynamic-resolution families: (min_pixels, max_pixels) for the image processor; None = its default
    pixel_range: tuple[int | None, int | None] = (None, None)
    image_aspect: str = "crop"  # LLaVA families: "pad" or "crop"; Qwen2.5-VL: "native" (image_aspect.py)

    @property
    def template(self) -> str:
        """The chat template's text (Jinja, or duet's `<image>`/`{question}` form)."""
        return self.chat.body

    def prompting(self) -> dict[str, Any]:
        """How prompts and images are prepared, as provenance and results.json record it."""
        return {"chat_template": self.chat.describe(), "image_aspect": self.image_aspect}


@dataclass
class Prompt:
    question: str
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)  # each: its sampled frames (duet_cli.inputs.video)

    @property
    def n_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)


@dataclass
class RunResult:
    answers: list[str]
    trace: ReductionTrace


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device (try cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(
                f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            why = "has no MPS support" if not torch.backends.mps.is_built() else "finds no Apple GPU"
            raise UsageError(f"--device {device}: this PyTorch build {why}; use cpu")
    elif dev.type != "cpu":  # meta, xla, ...: nothing duet can run a model on
        raise UsageError(f"--device {device!r}: duet runs on cpu, cuda, cuda:N or mps")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    spec: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chat_template: str | None = None,
    image_aspect: str | None = None,
) -> LoadedModel:
    """Load a catalog name, a local folder or a hub id (offline-aware) with its processor.

    `min_pixels` / `max_pixels` bound the image size of dynamic-resolution families (Qwen2.5-VL).
    `chat_template` (a file or a template string) overrides the checkpoint's own chat template
    (duet_cli.inputs.chat_template); `image_aspect` ("pad" or "crop", LLaVA families) the card's or `crop`."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from duet_cli.catalog import default_model, resolve_model
    from duet_cli.inputs.chat_template import from_option, resolve
    from duet_cli.inputs.image_aspect import resolve_aspect

    resolved = resolve_model(spec or default_model())
    if chat_template is not None:
        from_option(chat_template)  # a bad --chat-template fails before the model loads
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    kwargs = {"local_files_only": resolved.local_files_only}
    try:
        config = AutoConfig.from_pretrained(resolved.source, **kwargs)
        adapter = get_adapter(config)
        model: Any = AutoModelForImageTextToText.from_pretrained(resolved.source, dtype=torch_dtype, **kwargs)
        processor = AutoProcessor.from_pretrained(resolved.source, **kwargs)
    except Exception as exc:  # whatever a bad folder makes transformers, safetensors or torch.load raise
        from duet_cli.model_files import describe_load_failure

        raise ModelNotFoundError(describe_load_failure(resolved.spec, resolved.source, exc)) from None
    try:
        model = model.to(dev).eval()
    except torch.OutOfMemoryError:
        raise ModelNotFoundError(f"model '{resolved.spec}' does not fit in the memory of {dev}") from None
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    card = resolved.card
    loaded = LoadedModel(
        name=card.name if card else resolved.spec,
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        adapter=adapter,
        chat=resolve(processor, tokenizer, card, adapter, chat_template),
        dtype=torch_dtype,
        device=dev,
        untrained=bool(card and card.untrained),
        default_profile=card.default_profile if card else "baseline",
        pixel_range=(min_pixels, max_pixels),
        image_aspect=resolve_aspect(adapter, card, image_aspect),
    )
    loaded.chat.check(loaded)
    return loaded


def check_question(question: str, placeholder: str = "<image>") -> None:
    """Refuse an empty question, or one that smuggles in the image placeholder."""
    if not question or not question.strip():
        raise InputError("the question is empty")
    if placeholder in question:
        raise InputError(f"the question may not contain the image placeholder {placeholder}")


_context_warned: set[tuple[str, int]] = set()


def check_context(loaded: LoadedModel, inputs: dict[str, Any], max_new_tokens: int) -> None:
    """Refuse a prompt longer than the model's context (max_position_embeddings); warn once on stderr
    when the answer may run past it. The prompt length bounds its positions (M-RoPE's are fewer)."""
    context = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
    if not isinstance(context, int) or context <= 0:
        return
    ids = inputs["input_ids"]
    length = int(ids.shape[1])
    visual = int(sum((ids == t).sum(dim=1).max() for t in loaded.adapter.visual_token_ids(loaded.model)))
    if length > context:
        raise InputError(
            f"the prompt is {length} tokens ({visual} of them visual), more than model {loaded.name}'s "
            f"context of {context} positions (max_position_embeddings): use a profile that keeps fewer "
            "visual tokens, or fewer or smaller images"
        )
    if length + max_new_tokens > context and (loaded.name, context) not in _context_warned:
        from rich.markup import escape

        from duet_cli.console import err

        _context_warned.add((loaded.name, context))
        text = (
            f"a prompt of {length} tokens plus --max-new-tokens {max_new_tokens} runs past model "
            f"{loaded.name}'s context of {context} positions (max_position_embeddings): the answer "
            "stops being reliable there"
        )
        err.print(f"[yellow]warning:[/] {escape(text)}")


def build_inputs(loaded: LoadedModel, session: ReductionSession, prompts: Sequence[Prompt]) -> dict[str, Any]:
    """Tokenized, left-padded prompts with `tokens_per_image` placeholders per image (and
    `tokens_per_frame` per video frame), plus pixels."""
    from duet_cli.inputs.image_aspect import prepare_images
    from duet_cli.inputs.media import check_image
    from duet_cli.methods.pyramiddrop.salient import salient_spans, salient_token_mask

    # images from a dataset or an API caller skip load_image's checks, and processors resize before
    # anything else: a 2x30000 image would become gigabytes of pixels
    for p in prompts:
        for image in p.images:
            check_image(image)
        for video in p.videos:
            if video.frames:
                check_image(video.frames[0], f"{video.path} (its frames)")
    if session.dims.dynamic_resolution:
        from duet_cli.families.qwen2_5_vl.inputs import build_dynamic_inputs

        return build_dynamic_inputs(loaded, session, prompts)

    adapter = loaded.adapter
    per_image, per_frame = session.tokens_per_image, session.tokens_per_frame
    texts, starts = [], []
    for p in prompts:
        for placeholder in adapter.placeholders:
            check_question(p.question, placeholder)
        if p.videos and not per_frame:
            raise InputError(f"model {loaded.name} takes images only, not video")
        video_tokens = [per_frame * len(v.frames) for v in p.videos]
        text, start = loaded.chat.prompt(loaded, p.question, [per_image] * len(p.images), video_tokens)
        texts.append(text)
        starts.append(start)
    salient = session.llm is not None and session.resolved.queries == "salient"
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=salient)
    image_id = adapter.image_token_id(loaded.model)
    counts = (enc["input_ids"] == image_id).sum(dim=1).tolist()
    for p, n in zip(prompts, counts):
        if n != per_image * len(p.images):
            raise InputError(f"prompt has {n} image placeholders, expected {per_image * len(p.images)}")
    if any(p.videos for p in prompts):
        video_id = adapter.visual_token_id(loaded.model, "video")
        counts = (enc["input_ids"] == video_id).sum(dim=1).tolist()
        for p, n in zip(prompts, counts):
            if n != per_frame * p.n_frames:
                raise InputError(f"prompt has {n} video placeholders, expected {per_frame * p.n_frames}")
    inputs: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    images = prepare_images(loaded, [img for p in prompts for img in p.images])
    videos = [v.frames for p in prompts for v in p.videos]
    for key, pixels in adapter.pixel_inputs(loaded.processor, images, videos).items():
        inputs[key] = pixels.to(loaded.dtype)
    if salient:
        rows = []
        for offsets, p, start in zip(enc["offset_mapping"].tolist(), prompts, starts):
            rows.append(
                salient_token_mask([tuple(o) for o in offsets], salient_spans(p.question), base=start)
            )
        assert session.llm is not None
        session.llm.query_override = torch.tensor(rows, dtype=torch.bool)
    return {k: v.to(loaded.device) for k, v in inputs.items()}


def visual_spans(prompt: Prompt, per_image: int, per_frame: int) -> list[VisualSpan]:
    """Where each image and each video frame sits among the prompt's visual tokens (images first,
    then the videos' frames in order: the order the adapters write the placeholders in)."""
    spans, start = [], 0
    for i in range(len(prompt.images)):
        spans.append(VisualSpan("image", i, start, start + per_image))
        start += per_image
    for v, video in enumerate(prompt.videos):
        for f in range(len(video.frames)):
            source = video.indices[f] if f < len(video.indices) else None
            spans.append(VisualSpan("frame", v, start, start + per_frame, frame=f, source_frame=source))
            start += per_frame
    return spans


def assemble_trace(
    session: ReductionSession, prompts: Sequence[Prompt], rows_per_prompt: int
) -> ReductionTrace:
    """Per-prompt records from what the hooks saw (each prompt once, whatever the beam count)."""
    rec, dims, resolved = session.recorder, session.dims, session.resolved
    num_layers = dims.num_layers
    starts = [0, *resolved.llm_layers]
    samples: list[SampleTrace] = []
    image_cursor = frame_cursor = video_cursor = 0
    per_image, per_frame = session.tokens_per_image, session.tokens_per_frame
    for i, p in enumerate(prompts):
        n_img, n_frames = len(p.images), p.n_frames
        clips: list[tuple[int, int]] = []
        if dims.dynamic_resolution:  # (temporal slices, merged tokens per slice) of each video
            clips = session.video_slices[video_cursor : video_cursor + len(p.videos)]
            video_cursor += len(p.videos)
            n_frames = sum(t for t, _ in clips)  # stage 1 records one selection per temporal slice
        images = rec.images[image_cursor : image_cursor + n_img] if resolved.vision is not None else []
        frames = rec.frames[frame_cursor : frame_cursor + n_frames] if resolved.vision is not None else []
        image_cursor += n_img
        frame_cursor += n_frames
        n0 = per_image * n_img + per_frame * n_frames
        unreduced = dims.unreduced_tokens * n_img + dims.unreduced_frame_tokens * n_frames
        spans = visual_spans(p, per_image, per_frame) if p.videos else []
        grids: list[tuple[int, int]] = []
        if dims.dynamic_resolution:  # every image and every video has its own count
            own = session.image_tokens[image_cursor - n_img : image_cursor]
            per_slice = [session.tokens_for_image(n) for _, n in clips]
            unreduced = sum(own) + sum(t * n for t, n in clips)
            n0 = sum(session.tokens_for_image(n) for n in own) + sum(
                t * k for (t, _), k in zip(clips, per_slice)
            )
            if p.videos:
                from duet_cli.families.qwen2_5_vl.inputs import dynamic_spans

                spans = dynamic_spans(p, [session.tokens_for_image(n) for n in own], clips, per_slice)
            clip_grids = session.video_grids[video_cursor - len(p.videos) : video_cursor]
            grids = session.image_grids[image_cursor - n_img : image_cursor]
            grids += [g for (t, _), g in zip(clips, clip_grids) for _ in range(t)]
        sample = SampleTrace(
            images=images,
            unreduced_visual_tokens=unreduced,
            visual_tokens_in=n0,
            frames=frames,
            spans=spans,
            grids=grids,
        )
        counts = [n0]
        if rec.rows:
            row = rec.rows[i * rows_per_prompt]
            sample.visual_tokens_in = row.n0
            counts = [row.n0]
            for layer, before, kept in row.drops:
                from duet_cli.trace import DropPoint

                sample.drops.append(DropPoint(layer=layer, n_before=before, kept=kept))
                counts.append(len(kept))
        bounds = [*starts[: len(counts)], num_layers]
        sample.ledger = [c for s, c in enumerate(counts) for _ in range(bounds[s + 1] - bounds[s])]
        samples.append(sample)
    rec.settle()  # CUDA: the language model's event pairs, read once after the run
    timings = Timings(rec.vision_s, rec.prefill_s, rec.decode_s, rec.decode_steps)
    return ReductionTrace(profile=resolved.name, num_layers=num_layers, samples=samples, timings=timings)


def run(
    loaded: LoadedModel,
    session: ReductionSession,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    **generate_kwargs: Any,
) -> RunResult:
    """Answer a batch of prompts under the applied profile."""
    from duet_cli.gen_settings import check_generation

    if not prompts:
        raise InputError("no prompts to run")
    check_generation(
        batch=len(prompts), num_beams=num_beams, do_sample=do_sample, temperature=temperature,
        top_p=top_p, seed=seed, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    if session.llm is not None and any(
        k in generate_kwargs for k in ("assistant_model", "prompt_lookup_num_tokens")
    ):
        from duet_cli.errors import UnsupportedSetupError

        raise UnsupportedSetupError(
            "assisted decoding is not supported with an llm stage (decode runs one token at a time)"
        )
    inputs = build_inputs(loaded, session, prompts)
    check_context(loaded, inputs, max_new_tokens)
    session.recorder.reset()
    session.forget_selections()
    torch.manual_seed(seed)
    tok = loaded.tokenizer
    sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            pad_token_id=tok.pad_token_id,
            **sampling,
            **generate_kwargs,
        )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    answers = [a.strip() for a in tok.batch_decode(new_tokens, skip_special_tokens=True)]
    rows = max(1, len(session.recorder.rows) // len(prompts)) if session.recorder.rows else 1
    return RunResult(answers=answers, trace=assemble_trace(session, prompts, rows))


def run_batches(
    loaded: LoadedModel,
    session: ReductionSession,
    prompts: Sequence[Prompt],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> RunResult:
    """`run` over consecutive batches, merged into one result (timings summed)."""
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    answers: list[str] = []
    merged: ReductionTrace | None = None
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        result = run(loaded, session, chunk, **kwargs)
        answers.extend(result.answers)
        if merged is None:
            merged = result.trace
        else:
            merged.samples.extend(result.trace.samples)
            t, u = merged.timings, result.trace.timings
            t.vision_s += u.vision_s
            t.prefill_s += u.prefill_s
            t.decode_s += u.decode_s
            t.decode_steps += u.decode_steps
        if on_batch is not None:
            on_batch(len(chunk))
    assert merged is not None
    return RunResult(answers=answers, trace=merged)
