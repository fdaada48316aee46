"""Infer table, answers and notices, rendered into an in-memory console and checked as text."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console, RenderableType

from duet_cli.reports.render import (
    answers_renderable,
    infer_numbers,
    infer_table,
    untrained_notice,
)
from duet_cli.trace import ReductionTrace, SampleTrace, Timings


def render(obj: RenderableType, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(obj)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def sample(ledger: list[int], n0: int | None = None, unreduced: int = 576) -> SampleTrace:
    return SampleTrace(
        images=[],
        unreduced_visual_tokens=unreduced,
        visual_tokens_in=ledger[0] if n0 is None else n0,
        ledger=ledger,
    )


DUET_8 = [307] * 4 + [153] * 2 + [0] * 2
TIMINGS = Timings(vision_s=0.0123, prefill_s=0.0456, decode_s=0.0800, decode_steps=8)


def trace(*samples: SampleTrace, timings: Timings = TIMINGS) -> ReductionTrace:
    return ReductionTrace(profile="duet-192", num_layers=8, samples=list(samples), timings=timings)


def shown_numbers(numbers: dict[str, Any]) -> list[str]:
    """Every number of an infer_numbers dict, formatted as the table shows it."""

    def count(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:.2f}"

    out: list[str] = []
    for s in [*numbers["samples"], *([numbers["mean"]] if numbers["mean"] else [])]:
        out += [f"{count(s['tokens_in'])} of {count(s['unreduced'])}"]
        for first, last, n in s["segments"]:
            label = f"layer {first}" if first == last else f"layers {first}-{last}"
            out += [label, count(n)]
        out += [f"{s['avg_visual_tokens']:.2f}", f"{s['reduction_pct']:.1f}%"]
    t = numbers["timings"]
    out += [f"{t['vision_ms']:.1f} ms", f"{t['prefill_ms']:.1f} ms", f"{t['decode_ms']:.1f} ms"]
    out += [f"decode ({t['decode_steps']} tokens)", f"{t['decode_ms_per_token']:.1f} ms"]
    return out


def row(text: str, label: str) -> str:
    (line,) = [ln for ln in text.splitlines() if re.search(rf"│ {re.escape(label)} +│", ln)]
    return line


def test_segments_average_and_reduction_of_a_hand_written_trace() -> None:
    tr = trace(sample(DUET_8))
    numbers = infer_numbers(tr)
    s = numbers["samples"][0]
    assert s["segments"] == [[1, 4, 307], [5, 6, 153], [7, 8, 0]]
    assert s["avg_visual_tokens"] == 191.75
    assert s["reduction_pct"] == 66.7
    assert (s["tokens_in"], s["unreduced"]) == (307, 576)
    assert numbers["timings"] == {
        "vision_ms": 12.3,
        "prefill_ms": 45.6,
        "decode_ms": 80.0,
        "decode_steps": 8,
        "decode_ms_per_token": 10.0,
    }

    text = render(infer_table(tr))
    assert "307" in row(text, "layers 1-4")
    assert "153" in row(text, "layers 5-6")
    assert "0" in row(text, "layers 7-8")
    assert "191.75" in row(text, "average visual tokens")
    assert "66.7%" in row(text, "reduction vs unreduced")
    assert "307 of 576 unreduced" in row(text, "tokens entering the LLM")
    assert "80.0 ms" in row(text, "decode (8 tokens)")
    assert "10.0 ms" in row(text, "decode per token")
    assert "duet-192" in text and "8 decoder layers" in text
    assert "sample 1" not in text and "mean" not in text


@pytest.mark.parametrize(
    "samples",
    [
        [sample(DUET_8)],
        [sample(DUET_8)] * 3,
        [sample(DUET_8), sample([300] * 4 + [150] * 2 + [0] * 2, unreduced=580)],
        [sample([10 + i] * 3 + [i] * 5, unreduced=50) for i in range(8)],
    ],
    ids=["one", "identical", "two-distinct", "eight-distinct"],
)
def test_every_number_of_the_dict_is_in_the_table(samples: list[SampleTrace]) -> None:
    tr = trace(*samples)
    numbers = infer_numbers(tr)
    text = render(infer_table(tr), width=250)
    for shown in shown_numbers(numbers):
        assert shown in text, shown
    json.dumps(numbers)  # the same dict is what --json prints


def test_identical_samples_share_one_column() -> None:
    text = render(infer_table(trace(*[sample(DUET_8)] * 3)))
    assert "all 3 samples" in text
    assert "sample 1" not in text and "mean" not in text
    assert "whole run of 3 samples" in text


def test_distinct_samples_get_a_column_each_and_a_mean() -> None:
    a, b = sample(DUET_8), sample([100] * 8, unreduced=576)
    numbers = infer_numbers(trace(a, b))
    text = render(infer_table(trace(a, b)))
    assert "sample 1" in text and "sample 2" in text and "mean" in text
    # rows are the union of both samples' boundaries: b is constant, so it repeats per row
    assert [seg[:2] for seg in numbers["mean"]["segments"]] == [[1, 4], [5, 6], [7, 8]]
    assert numbers["mean"]["segments"][0][2] == 203.5
    assert "203.50" in row(text, "layers 1-4")
    assert numbers["mean"]["avg_visual_tokens"] == round((191.75 + 100) / 2, 2)


def test_more_than_eight_distinct_samples_show_eight_and_a_mean() -> None:
    samples = [sample([20 + i] * 8, unreduced=100) for i in range(11)]
    text = render(infer_table(trace(*samples)), width=160)
    assert "sample 8" in text and "sample 9" not in text and "mean" in text
    assert "first 8 of 11 samples" in text
    numbers = infer_numbers(trace(*samples))
    assert numbers["mean"]["tokens_in"] == 25
    assert "25 of 100" in row(text, "tokens entering the LLM (of unreduced)")


def test_no_decode_steps_and_custom_title() -> None:
    tr = trace(sample(DUET_8), timings=Timings(vision_s=0.001, prefill_s=0.002))
    assert infer_numbers(tr)["timings"]["decode_ms_per_token"] is None
    text = render(infer_table(tr, title="my run"))
    assert "my run" in text and "per token" not in text


def test_answers_and_notice() -> None:
    text = render(answers_renderable(["What [bold]colour?"], ["Red."]))
    assert "What [bold]colour?" in text and "Red." in text  # user text is not markup
    text = render(answers_renderable(["q1", "q2"], ["a1", "a2"]))
    assert "1. q1" in text and "2. q2" in text
    with pytest.raises(ValueError):
        answers_renderable(["q"], [])
    notice = untrained_notice("tiny-llava")
    assert "tiny-llava" in notice.plain and "random" in notice.plain and "meaningless" in notice.plain
    assert str(notice.style) == "yellow"


def test_render_does_not_import_torch() -> None:
    modules = "duet_cli.reports.render, duet_cli.reports.jsonio, duet_cli.inputs.batchfile"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
