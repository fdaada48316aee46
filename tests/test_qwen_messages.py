"""Qwen-style message lists (`duet infer --messages`): media read by qwen-vl-utils with per-item settings,
the same answer as the path-based input when nothing is resized, one-line errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_qwen import save_tiny_qwen

from duet_cli import api, cli
from duet_cli.errors import InputError
from duet_cli.families.qwen2_5_vl.messages import load_conversations

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("qwen_vl_utils")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> api.LoadedModel:
    return api.load_model(
        save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen"))), dtype="float32", device="cpu"
    )


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """112 x 112 px: a multiple of 28 inside every bound, so neither reader resizes it (16 merged tokens)."""
    g = torch.Generator().manual_seed(3)
    path = tmp_path_factory.mktemp("img") / "p.png"
    Image.fromarray(torch.randint(0, 255, (112, 112, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    return path


def user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


def test_a_message_list_answers_like_the_same_image_and_question(
    loaded: api.LoadedModel, picture: Path
) -> None:
    conv = user(
        {"type": "image", "image": str(picture)}, {"type": "text", "text": "what color is the circle ?"}
    )
    via_messages = api.infer_messages(loaded, "qwen-pdrop-50", [conv], max_new_tokens=4)
    via_paths = api.infer(
        loaded, "qwen-pdrop-50", [("what color is the circle ?", [picture])], max_new_tokens=4
    )
    assert via_messages.answers == via_paths.answers and via_messages.answers[0]
    got, want = via_messages.trace.samples[0], via_paths.trace.samples[0]
    assert got.unreduced_visual_tokens == want.unreduced_visual_tokens == 16
    assert [d.kept for d in got.drops] == [d.kept for d in want.drops]
    assert via_messages.images == [[str(picture)]]
    assert via_messages.provenance["media_reader"] == "qwen-vl-utils"


def test_per_item_max_pixels_is_honoured(loaded: api.LoadedModel) -> None:
    shapes = Path(__file__).parent.parent / "examples" / "shapes.png"  # 336 x 336 px
    conv = user(
        {"type": "image", "image": str(shapes), "max_pixels": 56 * 56}, {"type": "text", "text": "what ?"}
    )
    report = api.infer_messages(loaded, "baseline", [conv], max_new_tokens=2)
    # qwen-vl-utils resizes to at most 56 x 56 px: 4 x 4 patches -> 2 x 2 = 4 merged tokens
    assert report.trace.samples[0].unreduced_visual_tokens == 4
    assert report.trace.samples[0].grids == [(2, 2)]


def test_system_message_replaces_the_templates(loaded: api.LoadedModel, picture: Path) -> None:
    with_system = api.with_system_prompt(loaded, "Answer in one word.")
    assert (
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n<image>" in with_system.template
    )
    conv = [{"role": "system", "content": "Answer in one word."}, *user({"type": "text", "text": "what ?"})]
    conv[1]["content"].insert(0, {"type": "image", "image": str(picture)})
    assert api.infer_messages(loaded, "baseline", [conv], max_new_tokens=2).answers[0]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "one user turn"),
        ([{"role": "narrator", "content": "a"}], "needs a role"),
        ({"role": "user"}, "expected a conversation"),
    ],
)
def test_malformed_message_files_are_one_line(tmp_path: Path, content: object, fragment: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=fragment):
        load_conversations(path)


def test_missing_media_is_one_line_from_the_cli(
    loaded: api.LoadedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            user({"type": "image", "image": str(tmp_path / "nope.png")}, {"type": "text", "text": "?"})
        )
    )
    monkeypatch.setattr(sys, "argv", ["duet", "infer", "--messages", str(path), "-q", "what ?"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2  # --messages carries its own question: a usage error
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["duet", "infer", "--messages", str(path)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # images are read by duet's load_image before qwen-vl-utils sees them
    assert len(lines) == 1 and "conversation 0: image not found" in lines[0], lines
    assert "nope.png" in lines[0]


def test_a_video_message_is_sampled_by_qwen_vl_utils(loaded: api.LoadedModel, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_video import write_video

    clip = write_video(tmp_path / "clip.mp4")  # 24 frames at 8 fps
    conv = user({"type": "video", "video": str(clip), "nframes": 4}, {"type": "text", "text": "what ?"})
    report = api.infer_messages(loaded, "qwen-pdrop-50", [conv], max_new_tokens=2)
    (video,) = report.clips[0]
    # qwen-vl-utils takes 4 frames spread over the 3 s clip: 4 / 3 frames per second
    assert len(video.frames) == 4 and video.fps == pytest.approx(4 / 3)
    sample = report.trace.samples[0]
    assert [s.kind for s in sample.spans] == ["frame", "frame"]  # two slices of two frames
    assert report.videos == [[str(clip)]]


# --- nothing fetched unless asked, never offline; every image through duet's own checks ---------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any connection attempt (sockets, requests, urllib) is recorded and fails."""
    import socket
    import urllib.request

    import requests

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def _cli_line(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int = 1
) -> str:
    monkeypatch.setattr(sys, "argv", ["duet", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


URL = "http://198.51.100.7/cat.png"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image", "image": URL},
        {"type": "image_url", "image_url": URL},
        {"type": "image", "image": "HTTPS://198.51.100.7/cat.png"},
        {"type": "video", "video": URL.replace("png", "mp4")},
        {"type": "video", "video": ["frame.png", URL]},
    ],
)
def test_a_url_is_refused_without_the_flag_and_nothing_connects(
    part: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[object],
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    from duet_cli import runtime

    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    path = tmp_path / "m.json"
    path.write_text(json.dumps(user(part, {"type": "text", "text": "what ?"})))
    line = _cli_line(["infer", "--messages", str(path)], monkeypatch, capsys)
    assert "is a URL" in line and "--allow-urls" in line and "fetches nothing" in line, line
    assert "198.51.100.7" in line and "conversation 0" in line
    assert no_network == []


def test_offline_refuses_a_url_even_with_the_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[object],
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(user({"type": "image", "image": URL}, {"type": "text", "text": "what ?"})))
    line = _cli_line(["infer", "--messages", str(path), "--allow-urls"], monkeypatch, capsys)
    assert "offline mode is set" in line and URL in line, line
    # the API refuses too, whatever it is handed
    conv = user({"type": "image", "image": URL}, {"type": "text", "text": "what ?"})
    from duet_cli.families.qwen2_5_vl.messages import prompt_parts

    with pytest.raises(InputError, match="offline mode is set"):
        prompt_parts(conv, "conversation 0", allow_urls=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(InputError, match="--allow-urls"):
        prompt_parts(conv, "conversation 0")  # the API default: no fetching
    assert no_network == []


def test_allow_urls_fetches_through_duet_and_checks_the_image(
    loaded: api.LoadedModel,
    picture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_network: list[object],
) -> None:
    """With the flag and not offline the refusal is lifted: duet's own bounded fetch runs (patched here),
    and the bytes go through load_image, so a bad download is one line naming the URL."""
    from duet_cli.families.qwen2_5_vl import messages as qwen_messages

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    fetched: list[str] = []
    body = {URL: picture.read_bytes(), URL + "?bad": b"<html>not an image</html>"}
    monkeypatch.setattr(qwen_messages, "fetch_url", lambda url: fetched.append(url) or body[url])
    conv = user({"type": "image", "image": URL}, {"type": "text", "text": "what color is the circle ?"})
    report = api.infer_messages(loaded, "qwen-pdrop-50", [conv], max_new_tokens=4, allow_urls=True)
    local = user(
        {"type": "image", "image": str(picture)}, {"type": "text", "text": "what color is the circle ?"}
    )
    assert report.answers == api.infer_messages(loaded, "qwen-pdrop-50", [local], max_new_tokens=4).answers
    assert fetched == [URL] and report.images == [[URL]]
    bad = user({"type": "image", "image": URL + "?bad"}, {"type": "text", "text": "what ?"})
    with pytest.raises(
        InputError, match=r"not a recognized image file: http://198\.51\.100\.7/cat\.png\?bad$"
    ):
        api.infer_messages(loaded, "baseline", [bad], max_new_tokens=2, allow_urls=True)
    assert no_network == []


def test_the_cli_flag_lifts_the_refusal(
    picture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[object],
) -> None:
    from duet_cli.families.qwen2_5_vl import messages as qwen_messages

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(qwen_messages, "fetch_url", lambda url: b"\x89PNG\r\n\x1a\n truncated")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(user({"type": "image", "image": URL}, {"type": "text", "text": "what ?"})))
    line = _cli_line(["infer", "--messages", str(path), "--allow-urls"], monkeypatch, capsys)
    # fetched (patched), then refused by load_image's checks, named by its URL: not a model load failure
    assert URL in line and ("corrupt" in line or "not a recognized image" in line), line
    assert "/tmp" not in line.replace(str(tmp_path), "") and "duet-image-" not in line
    line = _cli_line(["infer", "-q", "what ?", "-i", str(picture), "--allow-urls"], monkeypatch, capsys, 2)
    assert "--allow-urls is for --messages" in line


def test_inline_and_file_images_go_through_load_image(
    loaded: api.LoadedModel, picture: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    import base64

    from duet_cli.inputs import media

    seen: list[str] = []
    real = media.load_image
    monkeypatch.setattr(media, "load_image", lambda p: seen.append(str(p)) or real(p))
    data = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    convs = [
        user({"type": "image", "image": data}, {"type": "text", "text": "what color ?"}),
        user({"type": "image", "image": "file://" + str(picture)}, {"type": "text", "text": "what color ?"}),
        user({"type": "video", "video": [str(picture)] * 2}, {"type": "text", "text": "what color ?"}),
    ]
    report = api.infer_messages(loaded, "baseline", convs, max_new_tokens=2)
    assert len(seen) == 4  # the inline image (via a private file), the file:// one and both frames
    assert report.images[0] == ["data:image/png;base64,..."] and report.images[1] == [
        "file://" + str(picture)
    ]
    truncated = "data:image/png;base64," + base64.b64encode(picture.read_bytes()[:200]).decode()
    conv = user({"type": "image", "image": truncated}, {"type": "text", "text": "what ?"})
    with pytest.raises(InputError, match=r"image data:image/png;base64,\.\.\. is corrupt or truncated"):
        api.infer_messages(loaded, "baseline", [conv], max_new_tokens=2)
    conv = user({"type": "image", "image": "data:image/png;base64,@@@"}, {"type": "text", "text": "?"})
    with pytest.raises(InputError, match="base64 payload is corrupt"):
        api.infer_messages(loaded, "baseline", [conv], max_new_tokens=2)


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"type": "video", "video": "rtsp://198.51.100.7/live"}, "rtsp: is not a source duet reads"),
        ({"type": "image", "image": "ftp://198.51.100.7/a.png"}, "ftp: is not a source duet reads"),
        ({"type": "video", "video": "data:video/mp4;base64,AAAA"}, "a video must be a file"),
        ({"type": "image", "image": {"url": URL}}, "must be a non-empty string"),
        ({"type": "image", "image": "a.png", "resized_height": 10**6, "resized_width": 10**6}, "pixel limit"),
        ({"type": "image", "image": "a.png", "min_pixels": 10**12}, "pixel limit"),
        ({"type": "image", "image": "a.png", "max_pixels": -1}, "max_pixels must be a positive number"),
    ],
)
def test_sources_and_sizes_duet_will_not_read_are_one_line(
    part: dict, fragment: str, tmp_path: Path, no_network: list[object]
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(user(part, {"type": "text", "text": "what ?"})))
    with pytest.raises(InputError, match=fragment) as info:
        load_conversations(path, allow_urls=True)
    assert "\n" not in str(info.value) and "conversation 0" in str(info.value)
    assert no_network == []


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_local_video_that_is_not_a_regular_file_is_refused_before_reading(
    tmp_path: Path, kind: str
) -> None:
    """qwen-vl-utils opens a message's local video itself: a FIFO there would block every command."""
    clip = tmp_path / "clip.mp4"
    if kind == "fifo":
        os.mkfifo(clip)
    else:
        clip.mkdir()
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(user({"type": "video", "video": str(clip)}, {"type": "text", "text": "what ?"}))
    )
    with pytest.raises(InputError) as info:
        load_conversations(path)
    shown = "a FIFO (pipe)" if kind == "fifo" else "a folder"
    assert str(info.value) == (
        f"{path}: conversation 0: video (content part 0): video {clip} is {shown}: give a regular file"
    )
