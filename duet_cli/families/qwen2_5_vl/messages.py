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

Every image (a path, `file://`, an inline `data:` URI, a video's frame list) is decoded by duet's own
`load_image` checks before qwen-vl-utils sees it, so qwen-vl-utils never opens or fetches an image
itself. An `http(s)://` source is refused unless the caller opts in (`--allow-urls`), and always when
offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE): nothing is fetched that the user did not ask for.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError
from duet_cli.inputs import userfiles
from duet_cli.inputs.userfiles import IMAGE_BYTES, JSON_BYTES, read_text
from duet_cli.inputs.video import Video

ROLES = ("system", "user", "assistant")
URL_FLAG = "--allow-urls"
FETCH_TIMEOUT_S = 30.0
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: "C:\x.png" is a path
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# qwen-vl-utils resizes to what these ask for: bounded like a decoded image, so a request cannot eat memory
_PIXEL_KEYS = ("min_pixels", "max_pixels", "total_pixels", "resized_height", "resized_width")


def offline() -> bool:
    """Whether the user asked for offline mode (Hugging Face's own switches)."""
    return any(
        os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for name in _OFFLINE_ENV
    )


def load_conversations(path: str | Path, *, allow_urls: bool = False) -> list[list[dict[str, Any]]]:
    """A JSON file holding one conversation (a list of messages) or a list of conversations. Media
    sources are checked here, before any model loads (a URL without `allow_urls` is refused)."""
    text = read_text(path, "messages file", JSON_BYTES)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
        raise InputError(f"{path}: not a JSON message list ({detail})") from None
    if isinstance(data, list) and data and all(isinstance(m, dict) for m in data):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(c, list) for c in data):
        raise InputError(f"{path}: expected a conversation (a list of messages) or a list of them")
    for k, conv in enumerate(data):
        _check(conv, f"{path}: conversation {k}")
        _check_media(_user(conv), f"{path}: conversation {k}", allow_urls)
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


def _user(conv: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in conv if m["role"] == "user")


def _media_parts(user: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index, part) of the content parts qwen-vl-utils would read as media (its own test)."""
    content = user["content"]
    parts = content if isinstance(content, list) else []
    return [
        (j, p)
        for j, p in enumerate(parts)
        if isinstance(p, dict)
        and (
            "image" in p
            or "image_url" in p
            or "video" in p
            or p.get("type") in ("image", "image_url", "video")
        )
    ]


def _image_source(part: dict[str, Any]) -> Any:
    return part["image"] if "image" in part else part.get("image_url")


def _label(source: str) -> str:
    """How a message names a source: a data URI by its header only (the payload can be megabytes)."""
    return source.split(",", 1)[0] + ",..." if source[:5].lower() == "data:" else source


def _kind(source: str) -> str:
    """url, file (file://), data (data: URI), path, or the unknown scheme itself."""
    lower = source[:8].lower()
    if lower.startswith(("http://", "https://")):
        return "url"
    if lower.startswith("file://"):
        return "file"
    if lower.startswith("data:"):
        return "data"
    match = _SCHEME.match(source)
    return f"{match[1]}:" if match else "path"


def _refuse_url(what: str, source: str, allow_urls: bool) -> None:
    if offline():
        raise InputError(
            f"{what} {source} is a URL and offline mode is set (HF_HUB_OFFLINE): duet fetches nothing "
            "while offline; download it and give the file"
        )
    if not allow_urls:
        raise InputError(
            f"{what} {source} is a URL: duet fetches nothing from the network unless asked; pass "
            f"{URL_FLAG} to fetch it, or download it and give the file"
        )


def _check_source(what: str, source: Any, allow_urls: bool, *, video: bool = False) -> None:
    from PIL import Image

    if isinstance(source, Image.Image) and not video:
        return  # the API may pass decoded images
    if not isinstance(source, str) or not source.strip():
        raise InputError(
            f"{what} must be a non-empty string (a file path, file:// or data: URI), got {source!r}"
        )
    kind = _kind(source)
    if kind == "url":
        _refuse_url(what, source, allow_urls)
    elif kind == "data" and video:
        raise InputError(f"{what} {_label(source)}: a video must be a file (or a list of frame images)")
    elif video and os.path.lexists(local := source.removeprefix("file://")):
        # qwen-vl-utils opens a local video itself: a FIFO or a device there would block or never end
        try:
            userfiles.check_regular(local, "video", userfiles.VIDEO_BYTES)
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from None
    elif kind not in ("file", "data", "path"):
        raise InputError(
            f"{what} {_label(source)}: {kind} is not a source duet reads (a file path, file://, data: URI, "
            f"or an http(s) URL with {URL_FLAG})"
        )


def _check_pixels(what: str, part: dict[str, Any]) -> None:
    from duet_cli.inputs.media import MAX_PIXELS

    for key in _PIXEL_KEYS:
        if key not in part:
            continue
        value = part[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value <= 0:
            raise InputError(f"{what}: {key} must be a positive number, got {value!r}")
    area = [part[k] for k in ("resized_height", "resized_width") if k in part]
    biggest = max(math.prod(area) if len(area) == 2 else 0, part.get("min_pixels", 0))
    if biggest > MAX_PIXELS:
        raise InputError(f"{what}: asks for {biggest:,.0f} pixels, over the {MAX_PIXELS:,} pixel limit")


def _check_media(user: dict[str, Any], where: str, allow_urls: bool) -> None:
    """Refuse, in one line naming the item, a source duet will not read and a resize it cannot afford."""
    for j, part in _media_parts(user):
        if "video" in part or part.get("type") == "video":
            what = f"{where}: video (content part {j})"
            source = part.get("video")
            frames = source if isinstance(source, list) else None
            if frames is not None and not frames:
                raise InputError(f"{what}: the frame list is empty")
            for f, frame in enumerate(frames or []):
                _check_source(f"{what} frame {f}", frame, allow_urls)
            if frames is None:
                _check_source(what, source, allow_urls, video=True)
        else:
            what = f"{where}: image (content part {j})"
            _check_source(what, _image_source(part), allow_urls)
        _check_pixels(what, part)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
    return " ".join(part.get("text", "") for part in parts)


def system_prompt(conv: list[dict[str, Any]]) -> str | None:
    """The system message of a conversation, if it has one."""
    return next((_text(m["content"]) for m in conv if m["role"] == "system"), None)


def fetch_url(url: str, limit: int = IMAGE_BYTES) -> bytes:
    """The body of an http(s) URL, at most `limit` bytes (only ever called once the user opted in)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "duet-cli"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            data: bytes = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"cannot fetch image {url}: {reason}") from None
    if len(data) > limit:
        raise InputError(f"image {url} is over the {limit >> 20} MiB limit for an image")
    return data


def _decode_bytes(data: bytes, name: str) -> Any:
    """`load_image` on bytes (a fetched or inline image): through a private temporary file, so the same
    checks run; its messages name the source, not the temporary file."""
    from duet_cli.inputs.media import load_image

    with tempfile.TemporaryDirectory(prefix="duet-image-") as tmp:
        file = Path(tmp) / "image"
        file.write_bytes(data)
        try:
            image = load_image(file)
        except InputError as exc:
            raise InputError(str(exc).replace(str(file), name)) from None
    image.info["duet_path"] = name
    return image


def _load(source: Any, what: str) -> Any:
    """One checked image source (see `_check_source`) as a decoded RGB image."""
    from PIL import Image

    from duet_cli.inputs.media import load_image

    if isinstance(source, Image.Image):
        return source
    kind = _kind(source)
    if kind == "url":
        return _decode_bytes(fetch_url(source), source)
    if kind == "data":
        header, comma, payload = source.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise InputError(
                f"{what} {_label(source)}: a data: URI must be base64 (data:image/...;base64,...)"
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{what} {_label(source)}: the base64 payload is corrupt") from None
        return _decode_bytes(data, _label(source))
    path = source[len("file://") :] if kind == "file" else source
    image = load_image(path)
    image.info["duet_path"] = source
    return image


def _decoded_user(user: dict[str, Any], where: str) -> dict[str, Any]:
    """The user message with every image (and frame-list video) replaced by its decoded image."""
    content = list(user["content"]) if isinstance(user["content"], list) else user["content"]
    for j, part in _media_parts(user):
        if "video" in part or part.get("type") == "video":
            if isinstance(part.get("video"), list):
                what = f"{where}: video (content part {j})"
                frames = [_load(frame, f"{what} frame {f}") for f, frame in enumerate(part["video"])]
                content[j] = {**part, "video": frames}
        else:
            image = _load(_image_source(part), f"{where}: image (content part {j})")
            content[j] = {k: v for k, v in part.items() if k != "image_url"} | {"image": image}
    return {**user, "content": content}


def prompt_parts(
    conv: list[dict[str, Any]], where: str, *, allow_urls: bool = False
) -> tuple[str, list[Any], list[str], list[Video]]:
    """(question, images, image names, videos) of one conversation, the media read by qwen-vl-utils
    after duet's own checks (`allow_urls`: fetch http(s) images, unless offline)."""
    try:
        from qwen_vl_utils import process_vision_info
    except ImportError:
        raise InputError("message lists need qwen-vl-utils: pip install 'duet-cli[qwen]'") from None
    user = _user(conv)
    question = _text(user["content"]).strip()
    if not question:
        raise InputError(f"{where}: the user message has no text part (the question)")
    _check_media(user, where, allow_urls)  # again: the API may hand us conversations of its own
    try:
        decoded = _decoded_user(user, where)
    except InputError as exc:
        text = str(exc)
        raise InputError(text if text.startswith(where) else f"{where}: {text}") from None
    try:
        images, videos, kwargs = process_vision_info([decoded], return_video_kwargs=True)
    except Exception as exc:  # a missing file, an unreadable video, a bad resize request, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: qwen-vl-utils could not read its media: {first}") from None
    fps = list(kwargs.get("fps") or [])
    items = [part for _, part in _media_parts(user)]
    image_names = [
        _label(str(_image_source(p))) for p in items if not ("video" in p or p.get("type") == "video")
    ]
    names = [p.get("video") for p in items if "video" in p]
    clips = []
    for k, frames in enumerate(videos or []):
        pil = _frames(frames)
        rate = float(fps[k]) if k < len(fps) and fps[k] else None
        name = str(names[k]) if k < len(names) and isinstance(names[k], str) else f"video {k}"
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
