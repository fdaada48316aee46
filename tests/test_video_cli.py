"""Video end to end on a tiny Video-LLaVA saved to a folder (tiny-llava's tokenizer plus <video>, the
stock Video-LLaVA processors): `duet infer --video`, `duet visualize --video` (the strip of frames),
`duet eval` on an MSVD-QA folder, and the frame strip drawn from a hand-made trace."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_video import save_tiny_video_llava, write_video
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.trace import ContextualGroup, DropPoint, ImageSelection, SampleTrace, VisualSpan

pytest.importorskip("av")
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
RUN = ["--device", "cpu", "--frames", "4"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable Video-LLaVA checkpoint folder with random weights."""
    return save_tiny_video_llava(tmp_path_factory.mktemp("tiny-video-llava"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", 16)


def invoke(args: list[str]) -> Any:
    result = CliRunner(env=ENV).invoke(cli.app, args)
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def test_infer_video_json(folder: Path, clip: Path) -> None:
    args = ["infer", *RUN, "-m", str(folder), "--video", str(clip), "-q", "What happens?", "--json"]
    doc = json.loads(invoke([*args, "-p", "video-duet-960", "--max-new-tokens", "2"]).stdout)
    (result,) = doc["results"]
    assert result["videos"] == [str(clip)] and result["frames"] == [[0, 5, 10, 15]] and result["images"] == []
    assert doc["provenance"]["frames"] == 4
    (sample,) = doc["trace"]["samples"]
    assert sample["visual_tokens_in"] == 4 * 192 and sample["unreduced_visual_tokens"] == 4 * 257
    assert [len(f["dominant"]) for f in sample["frames"]] == [160] * 4
    assert [(s["kind"], s["frame"], s["source_frame"]) for s in sample["spans"]] == [
        ("frame", f, i) for f, i in enumerate([0, 5, 10, 15])
    ]
    assert sample["ledger"] == [768] * 4 + [384] * 2 + [0] * 2
    assert [sum(d["kept_per_span"]) for d in sample["drops"]] == [384, 0]
    baseline = json.loads(invoke([*args, "-p", "baseline", "--max-new-tokens", "1"]).stdout)
    assert baseline["numbers"]["samples"][0]["tokens_in"] == 4 * 257


def test_video_on_an_image_only_model_is_one_line() -> None:
    result = CliRunner(env=ENV).invoke(cli.app, ["infer", "--device", "cpu", "-q", "hi"])
    assert result.exit_code == 0  # text-only prompts still work on tiny-llava
    from duet_cli import api
    from duet_cli.errors import InputError

    loaded = api.load_model("tiny-llava", device="cpu")
    with (
        api.apply_profile(loaded.model, "baseline") as session,
        pytest.raises(InputError, match="images only"),
    ):
        clip = api.Video("c", [Image.new("RGB", (8, 8))], [0], 1)
        api.run(loaded, session, [api.Prompt("hi", [], [clip])])


def test_visualize_video_strip(folder: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.png"
    args = [
        "visualize",
        *RUN,
        "-m",
        str(folder),
        "--video",
        str(clip),
        "-q",
        "What happens?",
        "--out",
        str(out),
    ]
    doc = json.loads(invoke([*args, "-p", "video-duet-960", "-p", "baseline", "--json"]).stdout)
    assert doc["video"] == str(clip) and doc["frames"] == [0, 5, 10, 15]
    with Image.open(out) as image:
        assert list(image.size) == doc["size"]
        width, height = image.size
    # 4 frames of 224 px side by side next to the label column; duet rows: 3 strips, baseline: 1
    assert width >= 170 + 4 * 224 and height > 4 * 224


def test_eval_on_an_msvd_folder(folder: Path, clip: Path, tmp_path: Path) -> None:
    from duet_cli.evaluate.runner import EvalConfig, run_eval

    root = tmp_path / "msvd"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "v1.avi").write_bytes(clip.read_bytes())  # the container is probed, not its name
    questions = [
        {"video_name": "v1", "question": "what is shown?", "question_id": 1},
        {"video_name": "gone", "question": "who?", "question_id": 2},
    ]
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(
        json.dumps([{"answer": "bar", "question_id": 1}, {"answer": "x", "question_id": 2}])
    )
    cfg = EvalConfig(
        benchmarks=["msvd"],
        profiles=["video-visionzip-136"],
        model=str(folder),
        data={"msvd": root},
        out=tmp_path / "out",
        device="cpu",
        max_new_tokens=2,
        frames=4,
    )
    cells = run_eval(cfg)
    assert cells is not None and [c.profile for c in cells] == ["baseline", "video-visionzip-136"]
    for cell in cells:
        assert cell.failures == 1 and cell.score.count == 2  # the missing video scores as a failure
    assert cells[1].avg_visual_tokens == 4 * 17 and cells[0].avg_visual_tokens == 4 * 257
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "msvd" / "baseline.jsonl").read_text().splitlines()
    ]
    assert "video not found" in rows[1]["error"]


def test_frame_strip_from_a_hand_made_trace() -> None:
    """Two frames of a 2x2 grid with CLS: stage 1 keeps CLS + 1 patch + 1 contextual token per frame;
    one drop keeps frame 2's tokens only. Panels, captions and the strip's size follow."""
    from duet_cli.visualize import FigureRow, render_video_figure
    from duet_cli.visualize.draw import VIDEO_MIN_PANEL, stage_panels
    from duet_cli.visualize.tokens import frame_view

    def selection() -> ImageSelection:
        return ImageSelection(5, (2, 2), True, [0, 2], [ContextualGroup(target=3, members=[1, 4])])

    sample = SampleTrace(
        images=[],
        unreduced_visual_tokens=10,
        visual_tokens_in=6,
        drops=[DropPoint(layer=2, n_before=6, kept=[3, 4, 5])],
        ledger=[6, 6, 3, 3],
        frames=[selection(), selection()],
        spans=[
            VisualSpan("frame", 0, 0, 3, frame=0, source_frame=0),
            VisualSpan("frame", 0, 3, 6, frame=1, source_frame=9),
        ],
    )
    view = frame_view(sample)
    assert view.images == sample.frames and view.drops == sample.drops
    frames = [Image.new("RGB", (40, 40), "gray"), Image.new("RGB", (40, 40), "white")]
    stages = stage_panels(frames, FigureRow("p", view, (2, 2)), 14, media="frame", min_panel=VIDEO_MIN_PANEL)
    assert [s.captions for s in stages] == [
        ["frame 1: 3 tokens", "frame 2: 3 tokens"],
        ["frame 1: 0 of 3", "frame 2: 3 of 3"],
    ]
    assert all(p.size == (224, 224) for s in stages for p in s.panels)
    figure = render_video_figure(frames, [FigureRow("p", sample, (2, 2))], header=["h"])
    assert figure.width >= 170 + 2 * 224 and figure.height > 2 * 224
    with pytest.raises(ValueError, match="video frames only"):
        frame_view(SampleTrace(images=[selection()], unreduced_visual_tokens=4, visual_tokens_in=3))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
