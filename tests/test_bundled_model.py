"""The bundled trained model, models/synth-llava: what the README and its model card promise of it.

Checked on the shipped weights (bfloat16 on disk, float32 compute, greedy): it is the default model,
fits the size budget, its card's architecture numbers are its config's, it answers the Quickstart
question, and what it lists comes from the image (ground truth from the scene generator)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from duet_cli.catalog import DEFAULT_MODEL, get_card, resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "models" / "synth-llava"


def test_it_is_the_default_and_fits_the_size_budget() -> None:
    assert DEFAULT_MODEL == "synth-llava"
    resolved = resolve_model("synth-llava")
    assert Path(resolved.source) == FOLDER.resolve() and resolved.local_files_only
    size = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file())
    assert size <= 25 * 1024 * 1024, size
    card = get_card("synth-llava")
    assert not card.untrained
    config = json.loads((FOLDER / "config.json").read_text())
    vision, text = config["vision_config"], config["text_config"]
    assert card.architecture["vision"]["hidden_size"] == vision["hidden_size"]
    assert card.architecture["vision"]["num_layers"] == vision["num_hidden_layers"]
    assert card.architecture["text"]["hidden_size"] == text["hidden_size"]
    assert card.architecture["text"]["num_layers"] == text["num_hidden_layers"]
    assert card.architecture["text"]["vocab_size"] == text["vocab_size"]
    assert text["num_hidden_layers"] % 4 == 0 and text["num_hidden_layers"] >= 8


def colours_present(index: int) -> str:
    """What synth test scene `index` holds, as the model was taught to list it (fixed COLORS order)."""
    from duet_cli.benchmarks.synth import scene_for
    from duet_cli.benchmarks.synth_scene import COLORS

    present = {o.color for o in scene_for("test", index).objects}
    return " ".join(c for c in COLORS if c in present)


def test_it_answers_the_quickstart_question() -> None:
    from duet_cli import api

    question = "What colors are in the image?"
    report = api.infer("synth-llava", "duet-192", [(question, [ROOT / "examples" / "scene.png"])])
    assert report.answers[0].strip() == colours_present(1) == "green blue purple black"


def test_it_reads_the_image() -> None:
    """Listing the colours of 16 unseen test scenes: right with each scene's own image, wrong with the
    next scene's image in its place (the answer comes from the pixels, not from the question)."""
    from duet_cli import api
    from duet_cli.benchmarks.synth import scene_for
    from duet_cli.benchmarks.synth_scene import render

    images = [render(scene_for("test", i)) for i in range(17)]
    truth = [colours_present(i) for i in range(16)]
    loaded = api.load_model("synth-llava", dtype="float32")
    right = {}
    with api.apply_profile(loaded.model, "baseline") as session:
        for name, shift in (("own", 0), ("next", 1)):
            prompts = [api.Prompt("What colors are in the image?", [images[i + shift]]) for i in range(16)]
            answers = api.run(loaded, session, prompts, max_new_tokens=12).answers
            right[name] = sum(a.strip() == t for a, t in zip(answers, truth))
    assert right["own"] >= 14 and right["next"] <= 4, right


def test_env_pins_the_suite_to_tiny_llava() -> None:
    assert os.environ.get("DUET_MODEL") == "tiny-llava"  # see conftest: the default stays fast in tests
