"""Every command on a tiny Qwen2.5-VL saved as a folder (`-m FOLDER`): infer, eval, visualize (images with
and without stage 1, video), with the numbers of the family's per-image grids."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_qwen import save_tiny_qwen
from typer.testing import CliRunner

from duet_cli import cli

SHAPES = Path(__file__).parent.parent / "examples" / "shapes.png"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen")))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_video import write_video

    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def invoke(*args: str) -> Any:
    result = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}).invoke(
        cli.app, list(args)
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_infer_uses_the_family_template_and_the_images_own_grid(qwen: str) -> None:
    # shapes.png is 336 x 336 px; the saved processor's max_pixels (28*28*64) brings it to 224 x 224:
    # 16 x 16 patches -> 8 x 8 = 64 merged tokens
    result = invoke("infer", "-m", qwen, "-i", str(SHAPES), "-q", "what color is the circle ?", "--json")
    doc = json.loads(result.stdout)
    sample = doc["trace"]["samples"][0]
    assert sample["unreduced_visual_tokens"] == sample["visual_tokens_in"] == 64
    assert sample["grids"] == [[8, 8]]
    assert doc["provenance"]["model"] == qwen


def test_eval_on_synth_runs_every_profile(qwen: str, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    invoke("eval", "-m", qwen, "-B", "synth", "-p", "qwen-duet-640-rel", "--limit", "4", "--out", str(out))
    doc = json.loads((out / "results.json").read_text())
    cells = {c["profile"]: c for c in doc["cells"]}
    assert set(cells) == {"baseline", "qwen-duet-640-rel"}
    assert all(c["count"] == 4 and c["failures"] == 0 for c in cells.values())
    # synth images (336 px) come in as 64 merged tokens: 64 * 0.52734375 = 33.75 -> 33, 64 * 0.09765625 -> 6
    assert cells["baseline"]["avg_visual_tokens"] == 64.0
    assert cells["qwen-duet-640-rel"]["avg_visual_tokens"] == (4 * 39 + 2 * 19 + 2 * 9) / 8


def test_visualize_without_stage1_draws_each_images_own_grid(qwen: str, tmp_path: Path) -> None:
    out = tmp_path / "v.png"
    args = ["-i", str(SHAPES), "-q", "what is the circle ?", "-p", "qwen-pdrop-50", "-p", "qwen-duet-640"]
    result = invoke("visualize", "-m", qwen, *args, "--out", str(out), "--json")
    doc = json.loads(result.stdout)
    assert [r["trace"]["samples"][0]["grids"] for r in doc["runs"]] == [[[8, 8]], [[8, 8]]]
    with Image.open(out) as png:
        assert png.size == tuple(doc["size"])


def test_visualize_video_draws_one_panel_per_temporal_slice(qwen: str, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.png"
    args = ["--video", str(clip), "--frames", "8", "-q", "what is the circle ?", "-p", "qwen-pdrop-50"]
    result = invoke("visualize", "-m", qwen, *args, "--out", str(out), "--json")
    sample = json.loads(result.stdout)["runs"][0]["trace"]["samples"][0]
    # 8 sampled frames of 64 x 48 px -> 4 slices of 2 x 2 merged tokens (56 x 56 px at min_pixels)
    assert [s["kind"] for s in sample["spans"]] == ["frame"] * 4
    assert sample["grids"] == [[2, 2]] * 4
    assert sample["unreduced_visual_tokens"] == 16
    # qwen-pdrop-50 keeps floor(16 * r) for r = 0.5, 0.3, 0.2, split over the slices
    assert [sum(d["kept_per_span"]) for d in sample["drops"]] == [8, 4, 3]
    assert out.is_file()


def test_an_image_the_processor_cannot_resize_is_one_line_naming_it(
    qwen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = tmp_path / "wide.png"
    Image.new("RGB", (600, 2), (200, 0, 0)).save(wide)
    monkeypatch.setattr(sys, "argv", ["duet", "infer", "-m", qwen, "-i", str(wide), "-q", "what is it ?"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # refused when the image is read (duet's own aspect-ratio limit is Qwen's resize limit, 200:1)
    assert lines == [
        f"error: image {wide} is 600x2, an aspect ratio of 300:1 (limit 200:1: resized for the model it "
        "would become a huge image)"
    ]


def test_eval_and_visualize_take_the_pixel_bounds(qwen: str, tmp_path: Path) -> None:
    # at most 56 x 56 px: 4 x 4 patches -> 2 x 2 = 4 merged tokens per image
    bounds = ["--min-pixels", "3136", "--max-pixels", "3136"]
    out = tmp_path / "ev"
    invoke(
        "eval", "-m", qwen, "-B", "synth", "-p", "qwen-pdrop-50", "--limit", "2", "--out", str(out), *bounds
    )
    cells = {c["profile"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["baseline"]["avg_visual_tokens"] == 4.0
    png = tmp_path / "v.png"
    args = ["-i", str(SHAPES), "-q", "what ?", "-p", "qwen-pdrop-50", "--out", str(png), "--json", *bounds]
    doc = json.loads(invoke("visualize", "-m", qwen, *args).stdout)
    assert doc["runs"][0]["trace"]["samples"][0]["grids"] == [[2, 2]]
