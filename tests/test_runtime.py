"""The runtime on the bundled model: prompt building, the salient query rows, and run() end to end."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny import profile

from duet_cli.engine.session import apply_profile
from duet_cli.errors import InputError
from duet_cli.runtime import LoadedModel, Prompt, build_inputs, load_model, run

SALIENT = profile(
    "salient",
    vision={"dominant": 54, "contextual": 10},
    llm={"at_depth": [0.5], "keep_ratios": [0.5], "queries": "salient"},
)


@pytest.fixture(scope="module")
def bundled() -> LoadedModel:
    return load_model("tiny-llava", dtype="float32", device="cpu")


def test_salient_rows_are_content_words_and_the_last_token(bundled: LoadedModel) -> None:
    image = Image.new("RGB", (336, 336), "white")
    question = "What color is the circle?"
    with apply_profile(bundled.model, SALIENT) as session:
        inputs = build_inputs(bundled, session, [Prompt(question, [image])])
        assert session.llm is not None and session.llm.query_override is not None
        mask = session.llm.query_override[0]
    ids = inputs["input_ids"][0][mask.bool()].tolist()
    marked = [bundled.tokenizer.decode([i]).strip() for i in ids]
    assert "".join(marked) == "Whatcolorcircle?"  # wh-word, content words and '?'; not 'is', 'the'

    assert mask.sum() >= 3 and not mask[-1]  # the stage adds the last token itself


def test_run_with_salient_queries_keeps_the_profile_arithmetic(bundled: LoadedModel) -> None:
    image = Image.new("RGB", (336, 336), "red")
    with apply_profile(bundled.model, SALIENT) as session:
        result = run(bundled, session, [Prompt("What color is the circle?", [image])], max_new_tokens=2)
    sample = result.trace.samples[0]
    assert sample.visual_tokens_in == 64
    assert sample.ledger == [64] * 4 + [32] * 4  # floor(64 * 0.5) after layer 4 of 8
    assert len(result.answers) == 1


@pytest.mark.parametrize("question", ["", "   ", "look at <image> here"])
def test_bad_questions_are_refused(bundled: LoadedModel, question: str) -> None:
    image = Image.new("RGB", (336, 336), "red")
    with apply_profile(bundled.model, "baseline") as session, pytest.raises(InputError):
        build_inputs(bundled, session, [Prompt(question, [image])])


def test_text_only_prompt_runs(bundled: LoadedModel) -> None:
    with apply_profile(bundled.model, "duet-64") as session, torch.no_grad():
        result = run(bundled, session, [Prompt("Say hi")], max_new_tokens=2)
    assert result.trace.samples[0].visual_tokens_in == 0
    assert result.trace.samples[0].ledger == [0] * 8
