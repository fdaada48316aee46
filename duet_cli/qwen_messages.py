"""Qwen-style message lists as prompts (`duet infer --messages FILE`, `api.prompts_from_messages`).

A conversation is the list Qwen2.5-VL's own examples use:

    [{"role": "system", "content": "..."},                      # optional
     {"role": "user", "content": [{"type": "image", "image": "photo.jpg", "max_pixels": 401408},
                                  {"type": "video", "video": "clip.mp4", "fps": 1.0},
                                  {"type": "text", "text": "What happens?"}]}]

The images and videos are read by qwen-vl-utils (`process_vision_info`), with its per-item resizing
(`min_pixels`, `max_pixels`, `resized_height`/`resized_width`) and frame sampling (`fps`, `nframes`),
exactly as Qwen's reference pipeline prepares them; the text parts of the user message are the question.
A file holds one conversation or a list of them. One user turn per conversation (duet answers one
question per prompt); anything else is refused in one line naming the conversation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError
from duet_cli.video import Video

ROLES = ("system", "user", "assistant")


def load_conversations(path: str | Path) -> list[list[dict[str, Any]]]:
    """A JSON file holding one conversation (a list of messages) or a list of conversations."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"messages file not found: {path}")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON message list ({str(exc).splitlines()[0]})") from None
    if isinstance(data, list) and data and all(isinstance(m, dict) for m in data):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(c, list) for c in data):
        raise InputError(f"{path}: expected a conversation (a list of messages) or a list of them")
    for k, conv in enumerate(data):
        _check(conv, f"{path}: conversation {k}")
    return data


def _check(conv: list[Any], where: str) -> None:
    roles = []
    for j, message in enumerate(conv):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise InputError(f"{where}, message {j}: needs a role ({', '.join(ROLES)}) and a content")
        roles.append(message["role"])
    if roles not in (["user"], ["system", "user"]):
        raise InputError(
            f"{where}: duet answers one user turn (optionally after a system message); got {roles}"
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
    return " ".join(part.get("text", "") for part in parts)


def system_prompt(conv: list[dict[str, Any]]) -> str | None:
    """The system message of a conversation, if it has one."""
    return next((_text(m["content"]) for m in conv if m["role"] == "system"), None)


def prompt_parts(conv: list[dict[str, Any]], where: str) -> tuple[str, list[Any], list[str], list[Video]]:
    """(question, images, image names, videos) of one conversation, the media read by qwen-vl-utils."""
    try:
        from qwen_vl_utils import process_vision_info
    except ImportError:
        raise InputError("message lists need qwen-vl-utils: pip install 'duet-cli[qwen]'") from None
    user = next(m for m in conv if m["role"] == "user")
    question = _text(user["content"]).strip()
    if not question:
        raise InputError(f"{where}: the user message has no text part (the question)")
    try:
        images, videos, kwargs = process_vision_info([user], return_video_kwargs=True)
    except Exception as exc:  # a missing file, an unreadable video, a bad resize request, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: qwen-vl-utils could not read its media: {first}") from None
    fps = list(kwargs.get("fps") or [])
    items = (
        [part for part in user["content"] if isinstance(part, dict)]
        if isinstance(user["content"], list)
        else []
    )
    image_names = [
        str(p.get("image", p.get("image_url", ""))) for p in items if "image" in p or "image_url" in p
    ]
    names = [p.get("video") for p in items if "video" in p]
    clips = []
    for k, frames in enumerate(videos or []):
        pil = _frames(frames)
        rate = float(fps[k]) if k < len(fps) and fps[k] else None
        name = str(names[k]) if k < len(names) else f"video {k}"
        # frames as sampled by qwen-vl-utils: consecutive at its sampling rate
        clips.append(Video(name, pil, list(range(len(pil))), len(pil), rate, backend="qwen-vl-utils"))
    return question, list(images or []), image_names, clips


def _frames(frames: Any) -> list[Any]:
    """qwen-vl-utils video frames (a T x C x H x W tensor, or PIL images) as RGB PIL images."""
    import torch
    from PIL import Image

    if isinstance(frames, list):
        return [f.convert("RGB") for f in frames]
    array = frames.clamp(0, 255).to(dtype=torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]
