"""The Python API that the commands use, usable from a notebook:

    from duet_cli import api
    loaded = api.load_model("tiny-llava")                # catalog name, local folder or hub id
    with api.apply_profile(loaded.model, "duet-192") as session:
        result = api.run(loaded, session, [api.Prompt("What is shown?", [api.load_image("cat.png")])])
    print(result.answers[0], result.trace.samples[0].avg_visual_tokens)

Or in one call: `api.infer("tiny-llava", "duet-192", [("What is shown?", ["cat.png"])])`.
Video (Video-LLaVA): `api.Prompt("What happens?", videos=[api.load_video("clip.mp4", frames=8)])`, or
`api.infer("video-llava-7b", "video-duet-960", [("What happens?", [], ["clip.mp4"])], frames=8)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duet_cli.engine.session import ReductionSession, apply_profile
from duet_cli.errors import InputError
from duet_cli.inputs.media import load_image
from duet_cli.inputs.video import Video, load_video
from duet_cli.profiles import load_profile, resolve_profile
from duet_cli.runtime import LoadedModel, Prompt, RunResult, check_question, load_model, run, run_batches
from duet_cli.trace import ReductionTrace

__all__ = [
    "InferReport",
    "LoadedModel",
    "Prompt",
    "ReductionSession",
    "ReductionTrace",
    "RunResult",
    "Video",
    "apply_profile",
    "infer",
    "infer_messages",
    "load_image",
    "load_model",
    "load_profile",
    "load_video",
    "run",
]


@dataclass
class InferReport:
    """Everything `duet infer` prints: answers, the trace, and where they came from."""

    model: str
    untrained: bool
    profile: Any  # ResolvedProfile
    questions: list[str]
    images: list[list[str]]
    ids: list[str | None]
    answers: list[str]
    trace: ReductionTrace
    provenance: dict[str, Any] = field(default_factory=dict)
    videos: list[list[str]] = field(default_factory=list)  # video paths per item (empty lists: none)
    clips: list[list[Video]] = field(default_factory=list)  # the sampled frames of those videos


def infer(
    model: str | LoadedModel | None,
    profile: str | None,
    items: Sequence[
        tuple[str, Sequence[str | Path]] | tuple[str, Sequence[str | Path], Sequence[str | Path]] | Any
    ],
    *,
    frames: int = 8,
    dtype: str = "auto",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chat_template: str | None = None,
    image_aspect: str | None = None,
    batch_size: int = 1,
    seed: int = 0,
    on_loaded: Callable[[LoadedModel], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    **generate: Any,
) -> InferReport:
    """Load the model, apply the profile, answer every (question, image paths) item in batches.

    The profile, all images and all videos are checked before the model is loaded, so bad input fails
    fast. `items` are (question, image paths) pairs, (question, image paths, video paths) triples, or
    objects with `.question`, `.images` and optional `.videos` and `.id`. Each video contributes
    `frames` frames sampled uniformly. `min_pixels` / `max_pixels` bound the image size of
    dynamic-resolution models (Qwen2.5-VL). `model` may also be a `LoadedModel` (from `load_model`
    or an earlier call's `on_loaded`), which is then used as it is instead of loading again.
    `chat_template` overrides the checkpoint's chat template; `image_aspect` is "pad" or "crop"
    (LLaVA families; see duet_cli.inputs.image_aspect).
    """

    questions, paths, video_paths, ids = [], [], [], []
    for item in items:
        if isinstance(item, tuple):
            q, imgs, i = item[0], item[1], None
            vids = item[2] if len(item) > 2 else []
        else:
            q, imgs, i = item.question, item.images, getattr(item, "id", None)
            vids = getattr(item, "videos", None) or []
        questions.append(q)
        paths.append([str(p) for p in imgs])
        video_paths.append([str(v) for v in vids])
        ids.append(i)
    for q in questions:
        check_question(q)
        if any(video_paths):
            check_question(q, "<video>")
    pictures = [[load_image(p) for p in ps] for ps in paths]
    clips = [[load_video(v, frames) for v in vs] for vs in video_paths]
    prompts = [Prompt(q, imgs, clip) for q, imgs, clip in zip(questions, pictures, clips, strict=True)]
    report = _answer(
        model, profile, prompts, ids, paths, video_paths, dtype=dtype, device=device, min_pixels=min_pixels,
        max_pixels=max_pixels, chat_template=chat_template, image_aspect=image_aspect, batch_size=batch_size,
        seed=seed, on_loaded=on_loaded, on_batch=on_batch, **generate,
    )  # fmt: skip
    if any(video_paths):
        report.provenance["frames"] = frames
        report.provenance["video_backend"] = sorted({c.backend for clip in clips for c in clip})
    return report


def infer_messages(
    model: str | LoadedModel | None,
    profile: str | None,
    conversations: Sequence[list[dict[str, Any]]],
    *,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int = 1,
    seed: int = 0,
    on_loaded: Callable[[LoadedModel], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    allow_urls: bool = False,
    chat_template: str | None = None,
    **generate: Any,
) -> InferReport:
    """`infer` for Qwen-style message lists (one user turn each, optionally after a system message): the
    images and videos are read and resized by qwen-vl-utils with each item's own settings, as Qwen's
    reference pipeline does (see duet_cli.families.qwen2_5_vl.messages). All conversations of one call
    share one system message (or none). `allow_urls`: fetch http(s) images (never when offline)."""
    from duet_cli.families.qwen2_5_vl.messages import prompt_parts, system_prompt

    systems = {system_prompt(conv) for conv in conversations}
    if len(systems) > 1:
        raise InputError("the conversations of one run have different system messages; run them apart")
    prompts, paths, video_paths = [], [], []
    for k, conv in enumerate(conversations):
        question, images, image_names, videos = prompt_parts(conv, f"conversation {k}", allow_urls=allow_urls)
        check_question(question)
        prompts.append(Prompt(question, images, videos))
        paths.append(image_names)
        video_paths.append([v.path for v in videos])
    report = _answer(
        model, profile, prompts, [None] * len(prompts), paths, video_paths, dtype=dtype, device=device,
        batch_size=batch_size, seed=seed, on_loaded=on_loaded, on_batch=on_batch, chat_template=chat_template,
        system=next(iter(systems)) if systems else None, **generate,
    )  # fmt: skip
    report.provenance["media_reader"] = "qwen-vl-utils"
    return report


def _answer(
    model: str | LoadedModel | None,
    profile: str | None,
    prompts: list[Prompt],
    ids: list[str | None],
    paths: list[list[str]],
    video_paths: list[list[str]],
    *,
    dtype: str = "auto",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chat_template: str | None = None,
    image_aspect: str | None = None,
    batch_size: int = 1,
    seed: int = 0,
    on_loaded: Callable[[LoadedModel], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    system: str | None = None,
    **generate: Any,
) -> InferReport:
    """Load the model (unless given), apply the profile, answer `prompts` in batches."""
    from duet_cli.reports.jsonio import provenance

    if profile is not None:
        load_profile(profile)  # a typo fails before the model loads
    if isinstance(model, LoadedModel):  # already loaded (e.g. several profiles on one model)
        loaded = model
    else:
        loaded = load_model(
            model, dtype=dtype, device=device, min_pixels=min_pixels, max_pixels=max_pixels,
            chat_template=chat_template, image_aspect=image_aspect,
        )  # fmt: skip
    if on_loaded is not None:
        on_loaded(loaded)
    if system is not None:
        loaded = with_system_prompt(loaded, system)
    profile_obj = load_profile(profile or loaded.default_profile)
    resolved = resolve_profile(profile_obj, loaded.adapter.dims(loaded.model))
    with apply_profile(loaded.model, resolved) as session:
        result = run_batches(
            loaded, session, prompts, batch_size=batch_size, on_batch=on_batch, seed=seed, **generate
        )
    prov = provenance(
        profile_name=resolved.name,
        profile_hash=resolved.hash,
        profile=profile_obj.to_dict(),
        model=loaded.name,
        dtype=str(loaded.dtype).removeprefix("torch."),
        device=str(loaded.device),
        seed=seed,
    )
    prov |= loaded.prompting()
    return InferReport(
        model=loaded.name,
        untrained=loaded.untrained,
        profile=resolved,
        questions=[p.question for p in prompts],
        images=paths,
        ids=ids,
        answers=result.answers,
        trace=result.trace,
        provenance=prov,
        videos=video_paths,
        clips=[list(p.videos) for p in prompts],
    )


def with_system_prompt(loaded: LoadedModel, system: str) -> LoadedModel:
    """The model with its chat template's system message set: a Jinja template renders it itself (and
    must show it); duet's form replaces its ChatML system block."""
    import dataclasses

    from duet_cli.inputs.chat_template import ChatTemplate

    chat = loaded.chat
    if chat.jinja is not None:
        changed = dataclasses.replace(loaded, chat=chat.with_system(system))
        probe = changed.chat.prompt(changed, "?", [], [])[0]
        if system not in probe:
            raise InputError(
                f"model {loaded.name}: its chat template ({chat.source}) does not write a system message"
            )
        return changed
    head, sep, rest = loaded.template.partition("<|im_start|>system\n")
    if not sep:
        raise InputError(f"model {loaded.name}: its chat template has no system message to set")
    _, end, tail = rest.partition("<|im_end|>")
    text = f"{head}{sep}{system}{end}{tail}"
    return dataclasses.replace(loaded, chat=ChatTemplate(chat.source, text=text, system=system))
