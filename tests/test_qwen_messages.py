"""Qwen-style message lists (`duet infer --messages`): media read by qwen-vl-utils with per-item settings,
the same answer as the path-based input when nothing is resized, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_qwen import save_tiny_qwen

from duet_cli import api, cli
from duet_cli.errors import InputError
from duet_cli.qwen_messages import load_conversations

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
    assert len(lines) == 1 and "conversation 0: qwen-vl-utils could not read its media" in lines[0], lines
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
