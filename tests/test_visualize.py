"""`duet visualize`: token-to-patch mapping, pixel-level checks of the panels, titles, legend, the CLI.

Pixel tests draw a uniform mid-grey image with a hand-written SampleTrace, so every expected colour is
computed here from the palette constants, independently of the drawing code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.trace import ContextualGroup, DropPoint, ImageSelection, SampleTrace
from duet_cli.visualize import draw
from duet_cli.visualize.draw import FigureRow, render_figure, stage_panels, write_png
from duet_cli.visualize.tokens import (
    Cell,
    CellState,
    cell_states,
    drop_title,
    image_caption,
    stage1_title,
    visual_tokens,
)

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.png"
GRID = (24, 24)
GREY = (128, 128, 128)


def selection(dominant: list[int], groups: list[tuple[int, list[int]]]) -> ImageSelection:
    return ImageSelection(
        n_tokens=577,
        grid=GRID,
        has_cls=True,
        dominant=dominant,
        contextual=[ContextualGroup(t, m) for t, m in groups],
    )


# One image: CLS + patches 1 and 50 dominant; contextual token 0 = target 100 + members 101, 102,
# contextual token 1 = target 200 + member 300. Visual tokens: [CLS, p1, p50, ctx0, ctx1] (N0 = 5).
# After layer 2 the sample keeps tokens 1 (patch 1) and 3 (ctx0).
SAMPLE = SampleTrace(
    images=[selection([0, 1, 50], [(100, [101, 102]), (200, [300])])],
    unreduced_visual_tokens=576,
    visual_tokens_in=5,
    drops=[DropPoint(layer=2, n_before=5, kept=[1, 3])],
    ledger=[5, 5, 2, 2],
)


def cell_of(token: int) -> int:
    return token - 1  # CLIP token index -> 0-based raster cell


def centre(cell: int, px: int) -> tuple[int, int]:
    r, c = divmod(cell, GRID[1])
    return c * px + px // 2, r * px + px // 2


def blend(base: tuple[int, ...], color: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    return tuple(b + alpha * (c - b) for b, c in zip(base, color))


def close(pixel: Any, expected: tuple[float, ...], tol: float = 1.0) -> bool:
    return all(abs(p - e) <= tol for p, e in zip(pixel, expected))


# ---------------------------------------------------------------------------------------------------------
# token -> patch mapping


def test_mapping_with_stage1_two_images() -> None:
    sample = SampleTrace(
        images=[selection([0, 1, 50], [(100, [101, 102])]), selection([0, 576], [(10, [11])])],
        unreduced_visual_tokens=1152,
        visual_tokens_in=7,
    )
    toks = visual_tokens(sample, 2, GRID)
    assert len(toks) == 7
    assert [(t.image, t.kind, t.target, t.members, t.group) for t in toks] == [
        (0, "cls", None, (), None),
        (0, "dominant", 0, (), None),
        (0, "dominant", 49, (), None),
        (0, "contextual", 99, (100, 101), 0),
        (1, "cls", None, (), None),
        (1, "dominant", 575, (), None),
        (1, "contextual", 9, (10,), 0),
    ]
    # patch p sits at row (p-1)//24, col (p-1)%24
    assert divmod(toks[2].target or 0, 24) == ((50 - 1) // 24, (50 - 1) % 24)
    # a drop keeping visual tokens 1 and 6: image 0 keeps patch 1, image 1 keeps its contextual token
    s0 = cell_states(toks, 0, GRID, {1, 6})
    s1 = cell_states(toks, 1, GRID, {1, 6})
    assert (
        s0[0] == CellState(Cell.DOMINANT) and s0[49].kind is Cell.DISCARDED and s0[99].kind is Cell.DISCARDED
    )
    assert s1[9] == CellState(Cell.TARGET, 0) and s1[10] == CellState(Cell.MEMBER, 0)
    assert s1[575].kind is Cell.DISCARDED
    assert sum(s.kind is not Cell.DISCARDED for s in s0 + s1) == 3


def test_mapping_without_stage1_two_images() -> None:
    sample = SampleTrace(images=[], unreduced_visual_tokens=1152, visual_tokens_in=1152)
    toks = visual_tokens(sample, 2, GRID)
    assert len(toks) == 1152
    assert all(t.kind == "patch" for t in toks)
    assert (toks[0].image, toks[0].target) == (0, 0)
    assert (toks[575].image, toks[575].target) == (0, 575)
    assert (toks[576].image, toks[576].target) == (1, 0)
    assert (toks[1151].image, toks[1151].target) == (1, 575)
    alive = {0, 576, 1151}
    s1 = cell_states(toks, 1, GRID, alive)
    assert [i for i, s in enumerate(s1) if s.kind is Cell.PATCH] == [0, 575]
    assert all(s.kind is Cell.PATCH for s in cell_states(toks, 0, GRID))  # no stage 1: everything enters


def test_mapping_full_strategy_and_mismatches() -> None:
    full = SampleTrace(images=[], unreduced_visual_tokens=577, visual_tokens_in=577)
    toks = visual_tokens(full, 1, GRID)
    assert toks[0].kind == "cls" and toks[1].target == 0
    with pytest.raises(ValueError, match="do not fit"):
        visual_tokens(SampleTrace(images=[], unreduced_visual_tokens=500, visual_tokens_in=500), 1, GRID)
    with pytest.raises(ValueError, match="the prompt 2"):
        visual_tokens(SAMPLE, 2, GRID)
    wrong_n0 = SampleTrace(images=SAMPLE.images, unreduced_visual_tokens=576, visual_tokens_in=6)
    with pytest.raises(ValueError, match="trace says 6"):
        visual_tokens(wrong_n0, 1, GRID)


# ---------------------------------------------------------------------------------------------------------
# pixels


@pytest.fixture(scope="module")
def grey_stages() -> list[draw.StagePanels]:
    return stage_panels([Image.new("RGB", (336, 336), GREY)], FigureRow("hand", SAMPLE), cell=draw.CELL)


def test_panel_size_and_stages(grey_stages: list[draw.StagePanels]) -> None:
    assert len(grey_stages) == 2  # stage 1, then the one drop point
    for stage in grey_stages:
        (panel,) = stage.panels
        assert panel.size == (24 * draw.CELL, 24 * draw.CELL)
        assert min(panel.size) >= 336
    # even a small cell size keeps panels at least 336 px
    small = stage_panels([Image.new("RGB", (50, 80), GREY)], FigureRow("hand", SAMPLE), cell=4)
    assert min(small[0].panels[0].size) >= 336


def test_stage1_pixels(grey_stages: list[draw.StagePanels]) -> None:
    px, panel = draw.CELL, grey_stages[0].panels[0]
    at = lambda token: panel.getpixel(centre(cell_of(token), px))  # noqa: E731
    # dominant patch: grey tinted towards the highlight colour
    assert close(at(1), blend(GREY, draw.DOMINANT_COLOR, draw.DOMINANT_TINT))
    assert close(at(50), blend(GREY, draw.DOMINANT_COLOR, draw.DOMINANT_TINT))
    # ... with an outline of the highlight colour inside the cell
    x, y = centre(cell_of(50), px)
    assert panel.getpixel((x, y - px // 2 + 1)) == draw.DOMINANT_COLOR
    # discarded patch: darker than the grey by the dim factor
    dimmed = at(400)
    assert close(dimmed, tuple(g * draw.DIM for g in GREY))
    assert all(d < g for d, g in zip(dimmed, GREY))
    # merged members carry their group's tint, one colour per group
    red, green = draw.PALETTE[0][1], draw.PALETTE[1][1]
    assert close(at(101), blend(GREY, red, draw.GROUP_TINT))
    assert close(at(102), blend(GREY, red, draw.GROUP_TINT))
    assert close(at(300), blend(GREY, green, draw.GROUP_TINT))
    # a target carries the marker at its centre and its group's tint around it
    assert at(100) == draw.MARKER_FILL
    assert at(200) == draw.MARKER_FILL
    x, y = centre(cell_of(100), px)
    assert close(panel.getpixel((x - px // 2 + 3, y - px // 2 + 3)), blend(GREY, red, draw.GROUP_TINT))


def test_drop_panel_pixels(grey_stages: list[draw.StagePanels]) -> None:
    px, panel = draw.CELL, grey_stages[1].panels[0]
    at = lambda token: panel.getpixel(centre(cell_of(token), px))  # noqa: E731
    red = draw.PALETTE[0][1]
    dim = tuple(g * draw.DIM for g in GREY)
    assert close(at(1), blend(GREY, draw.DOMINANT_COLOR, draw.DOMINANT_TINT))  # kept dominant
    assert close(at(50), dim)  # dropped dominant
    assert at(100) == draw.MARKER_FILL  # surviving contextual token lights up its target ...
    assert close(at(101), blend(GREY, red, draw.GROUP_TINT))  # ... and its members
    assert close(at(200), dim) and close(at(300), dim)  # dropped contextual token: target and member
    assert close(at(400), dim)  # discarded in stage 1 stays dimmed


def test_grid_lines_visible_on_uniform_image(grey_stages: list[draw.StagePanels]) -> None:
    panel = grey_stages[0].panels[0]
    x, y = centre(cell_of(400), draw.CELL)
    line = panel.getpixel((x, (cell_of(400) // 24) * draw.CELL))
    assert line != panel.getpixel((x, y))


# ---------------------------------------------------------------------------------------------------------
# titles, legend, figure


def test_titles_carry_the_trace_counts() -> None:
    assert stage1_title(SAMPLE) == "stage 1: 3 dominant + 2 contextual (5 of 576)"
    assert drop_title(SAMPLE, SAMPLE.drops[0]) == "after layer 2: 2 of 5 visual tokens"
    no_v2v = SampleTrace(images=[], unreduced_visual_tokens=576, visual_tokens_in=576)
    assert stage1_title(no_v2v) == "no stage 1: 576 of 576 visual tokens"
    duet192 = SampleTrace(
        images=[selection(list(range(300)), [(300 + k, []) for k in range(7)])],
        unreduced_visual_tokens=576,
        visual_tokens_in=307,
        drops=[DropPoint(layer=4, n_before=307, kept=list(range(153)))],
    )
    assert stage1_title(duet192) == "stage 1: 300 dominant + 7 contextual (307 of 576)"
    assert drop_title(duet192, duet192.drops[0]) == "after layer 4: 153 of 307 visual tokens"
    pooled = SampleTrace(
        images=[ImageSelection(577, GRID, True, [], [ContextualGroup(1, [2, 25, 26])], method="pool")],
        unreduced_visual_tokens=576,
        visual_tokens_in=1,
    )
    assert stage1_title(pooled) == "stage 1 (pool): 1 pooled tokens (1 of 576)"
    toks = visual_tokens(SAMPLE, 1, GRID)
    assert image_caption(toks, 0, 2, {1, 3}) == "image 1 of 2: 2 of 5"


def test_stage_panels_titles(grey_stages: list[draw.StagePanels]) -> None:
    assert [s.title for s in grey_stages] == [stage1_title(SAMPLE), drop_title(SAMPLE, SAMPLE.drops[0])]


def test_legend_names_every_colour_used() -> None:
    many = SampleTrace(
        images=[selection([0, 1], [(10 + 2 * k, [11 + 2 * k]) for k in range(12)])],
        unreduced_visual_tokens=576,
        visual_tokens_in=14,
    )
    used = draw.Used()
    for stage in stage_panels([Image.new("RGB", (336, 336), GREY)], FigureRow("p", many)):
        for st in stage.states:
            used.add(st)
    labels = [label for _, label in draw.legend_entries(used)]
    assert all(name in labels for name, _ in draw.PALETTE)  # 12 groups: every palette colour, cycled
    assert any("dominant" in lb for lb in labels) and any("dimmed" in lb for lb in labels)
    assert any("target" in lb for lb in labels)
    plain = draw.Used(kinds={Cell.PATCH})
    assert [lb for _, lb in draw.legend_entries(plain)] == ["patch kept as is, no stage 1 (unchanged)"]


def test_figure_rows_and_atomic_png(tmp_path: Path) -> None:
    images = [Image.new("RGB", (336, 336), GREY), Image.new("RGB", (400, 300), (10, 200, 30))]
    two = SampleTrace(
        images=[selection([0, 1], [(5, [6])]), selection([0, 2], [])],
        unreduced_visual_tokens=1152,
        visual_tokens_in=5,
        drops=[DropPoint(layer=1, n_before=5, kept=[0, 2])],
    )
    no_v2v = SampleTrace(images=[], unreduced_visual_tokens=1152, visual_tokens_in=1152)
    one = render_figure(images, [FigureRow("a", two)])
    both = render_figure(images, [FigureRow("a", two), FigureRow("b", no_v2v)])
    panel = 24 * draw.CELL
    assert both.height - one.height >= panel  # the second row is stacked below
    assert both.width >= draw.LABEL_W + 4 * panel  # two stages x two images side by side
    out = tmp_path / "sub" / "kept.png"
    write_png(out, both)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == both.size
    assert [p.name for p in out.parent.iterdir()] == ["kept.png"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------------
# the command

RUN = ["--max-new-tokens", "2", "--device", "cpu"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(args: list[str]) -> Any:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(cli.app, ["visualize", *args])


def test_cli_two_profiles_two_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import api

    loads: list[str] = []
    real_load = api.load_model

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append("load")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(api, "load_model", counting_load)
    out = tmp_path / "kept.png"
    result = invoke(
        [
            *("-i", str(SHAPES), "-q", "What is shown?", "--profile", "duet-64", "--profile", "visionzip-64"),
            *("--out", str(out), "--json", *RUN),
        ]
    )
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    assert loads == ["load"]  # one model load for both profiles
    doc = json.loads(result.stdout)
    assert doc["out"] == str(out)
    assert [r["provenance"]["profile_name"] for r in doc["runs"]] == ["duet-64", "visionzip-64"]
    duet = doc["runs"][0]["trace"]["samples"][0]
    assert duet["visual_tokens_in"] == 102 and len(duet["drops"]) == 2
    assert doc["runs"][1]["numbers"]["samples"][0]["tokens_in"] == 64
    panel = 24 * draw.CELL
    with Image.open(out) as png:
        w, h = png.size
    assert [w, h] == doc["size"]
    assert 2 * panel <= h < 3 * panel  # two rows of panels, stacked
    assert w >= draw.LABEL_W + 3 * panel  # duet-64: stage 1 + two drop points


def test_cli_table_output(tmp_path: Path) -> None:
    out = tmp_path / "kept.png"
    result = invoke(["-i", str(SHAPES), "-q", "What is shown?", "-p", "pdrop-64", "-o", str(out), *RUN])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    text = ANSI.sub("", result.stdout)
    assert "profile pdrop-64" in text and "tokens entering the LLM" in text
    assert f"wrote {out}" in result.stderr
    assert out.is_file()


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import api

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(api, "load_model", refuse)


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> tuple[int, str]:
    """`duet visualize ARGS` through the console-script entry point: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["duet", "visualize", *args, *RUN])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, ANSI.sub("", capsys.readouterr().err)


@pytest.mark.usefixtures("no_model")
def test_cli_unwritable_out_fails_before_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = run_main(
        monkeypatch, capsys, ["-i", str(SHAPES), "-q", "What?", "-o", str(blocker / "k.png")]
    )
    assert code == 1
    assert err.startswith("error: cannot write") and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("no_model")
def test_cli_refuses_non_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kept.jpg"
    code, err = run_main(monkeypatch, capsys, ["-i", str(SHAPES), "-q", "What?", "--out", str(out)])
    assert code == 2
    assert "must be a .png file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.usefixtures("no_model")
def test_cli_missing_image_fails_before_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, out = tmp_path / "nope.png", tmp_path / "k.png"
    code, err = run_main(monkeypatch, capsys, ["-i", str(missing), "-q", "What?", "--out", str(out)])
    assert code == 1
    assert err.strip() == f"error: image not found: {missing}"
    assert not out.exists()


def test_a_multi_line_question_is_one_header_line() -> None:
    from duet_cli.visualize.draw import header_line

    question = "What number is on the purple circle?\nAnswer the question using a single word or phrase."
    assert header_line(question) == (
        "What number is on the purple circle? Answer the question using a single word or phrase."
    )
