"""`duet infer`: answer questions about images or videos under a reduction profile and show what was kept."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from duet_cli.commands.options import (
    ChatTemplateOpt,
    DeviceOpt,
    DtypeOpt,
    FramesOpt,
    ImageAspectOpt,
    JsonOpt,
    MaxPixelsOpt,
    MinPixelsOpt,
    ModelOpt,
    ProfileOpt,
    SeedOpt,
    check_template_options,
)
from duet_cli.console import err, out, prepare_transformers, print_json
from duet_cli.errors import UsageError


def infer(
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Image file (repeat for several images).")
    ] = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="The question to ask.")] = None,
    video: Annotated[
        list[Path] | None,
        typer.Option(
            "--video", help="Video file for a video model (Video-LLaVA, Qwen2.5-VL); repeat for several."
        ),
    ] = None,
    frames: FramesOpt = 8,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch", help='JSONL file of {"image" or "images", "question"} records, run in batches.'
        ),
    ] = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Prompts per forward pass.")
    ] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate.")] = 32,
    num_beams: Annotated[int, typer.Option("--num-beams", min=1, help="Beam search width (1 = greedy).")] = 1,
    do_sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    min_pixels: MinPixelsOpt = None,
    max_pixels: MaxPixelsOpt = None,
    chat_template: ChatTemplateOpt = None,
    image_aspect: ImageAspectOpt = None,
    messages: Annotated[
        Path | None,
        typer.Option(
            "--messages",
            help="Qwen2.5-VL: a JSON message list (or a list of them) in Qwen's chat format; its images "
            "and videos are read by qwen-vl-utils with each item's own settings.",
        ),
    ] = None,
    allow_urls: Annotated[
        bool,
        typer.Option(
            "--allow-urls",
            help="With --messages: fetch http(s) image and video URLs (never when HF_HUB_OFFLINE is set).",
        ),
    ] = False,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON document to this file (atomically).")
    ] = None,
) -> None:
    """Answer a question about images or videos, with a table of the visual tokens each stage kept."""
    from duet_cli import api
    from duet_cli.inputs.batchfile import read_batch
    from duet_cli.reports.jsonio import atomic_write_text, check_writable, to_json
    from duet_cli.reports.render import (
        answers_renderable,
        infer_numbers,
        numbers_table,
        setup_line,
        untrained_notice,
    )

    if batch is not None and (question is not None or image or video):
        raise UsageError("use either --batch FILE or --question/--image/--video, not both")
    if messages is not None and (batch is not None or question is not None or image or video):
        raise UsageError("--messages FILE carries its own questions and media: give it alone")
    if batch is None and question is None and messages is None:
        raise UsageError("give --question (with --image or --video), --batch FILE or --messages FILE")
    if allow_urls and messages is None:
        raise UsageError("--allow-urls is for --messages FILE (other inputs are local files)")
    from duet_cli.gen_settings import check_generation, check_rows

    check_generation(
        batch=1, num_beams=num_beams, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed
    )
    items: list[Any]
    conversations = None
    listed: list[Path] = []  # the images a batch file names
    if messages is not None:
        from duet_cli.families.qwen2_5_vl.messages import load_conversations

        conversations = load_conversations(messages, allow_urls=allow_urls)
        items = conversations
    elif batch is not None:
        records = read_batch(batch)
        listed = [p for record in records for p in record.images]
        items = list(records)
    elif video:
        items = [(question or "", list(image or []), list(video))]
    else:
        items = [(question or "", list(image or []))]
    check_rows(min(batch_size, len(items)), num_beams)  # what one forward pass will decode
    check_template_options(chat_template, image_aspect, messages=messages is not None)
    if out_file is not None:  # before any model loads: never an input, a device or a FIFO
        named = [*(image or []), *(video or []), *listed, batch, messages, profile, chat_template]
        check_writable(out_file, [*named, *_message_media(conversations or [])])
    prepare_transformers()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=len(items) <= batch_size,
    )
    single = len(items) <= batch_size
    waiting = err.status("running", spinner="dots") if single else contextlib.nullcontext()
    with progress, waiting:
        task = progress.add_task("answering", total=len(items))
        common: dict[str, Any] = {
            "dtype": dtype,
            "device": device,
            "batch_size": batch_size,
            "seed": seed,
            "on_batch": lambda n: progress.advance(task, n),
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "do_sample": do_sample,
            "temperature": temperature,
            "top_p": top_p,
        }
        if conversations is not None:
            report = api.infer_messages(
                model, profile, conversations, allow_urls=allow_urls, chat_template=chat_template, **common
            )
        else:
            report = api.infer(
                model, profile, items, frames=frames, min_pixels=min_pixels, max_pixels=max_pixels,
                chat_template=chat_template, image_aspect=image_aspect, **common,
            )  # fmt: skip
    numbers = infer_numbers(report.trace)
    results: list[dict[str, Any]] = [
        {"id": i, "question": q, "images": imgs, "answer": a}
        for i, q, imgs, a in zip(report.ids, report.questions, report.images, report.answers)
    ]
    for result, paths, clips in zip(results, report.videos, report.clips):
        if paths:  # only video runs carry these keys, so image-only documents are unchanged
            result["videos"] = paths
            result["frames"] = [clip.indices for clip in clips]
    document = {
        "provenance": report.provenance,
        "results": results,
        "numbers": numbers,
        "trace": report.trace.to_dict(),
    }
    if out_file is not None:
        atomic_write_text(out_file, to_json(document) + "\n")
    if json_out:
        print_json(document)
        return
    if report.untrained:
        err.print(untrained_notice(report.model))
    out.print(answers_renderable(report.questions, report.answers))
    title = f"{report.model} · profile {report.profile.name}"
    out.print(numbers_table(numbers, title=title, footer=setup_line(report.provenance)))


def _message_media(conversations: list[list[dict[str, Any]]]) -> list[str]:
    """The local files a message list names (URLs and inline data name no file, and are ignored)."""
    found: list[str] = []
    for conv in conversations:
        for message in conv:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                for key in ("image", "image_url", "video") if isinstance(part, dict) else ():
                    value = part.get(key)
                    for v in value if isinstance(value, list) else [value]:  # a video may be a frame list
                        if isinstance(v, str):
                            found.append(v.removeprefix("file://"))
    return found
