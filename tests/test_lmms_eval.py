"""`lmms-eval --model duet`: the plugin is found through its entry point, runs a local synth task written
by the test, and scores exactly what `duet eval` scores on the same records (per-record predictions,
accuracy and average visual tokens). Needs lmms-eval (`make check-lmms` runs this file in its own
venv); without it only the lmms-free parts run (the task folder, the lazy import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import ImageChops

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "tiny-llava"
SYNTH_LLAVA = ROOT / "models" / "synth-llava"
PROFILE = "duet-192"
NO_LMMS = "lmms-eval is not installed here; `make check-lmms` runs these tests in .venv-lmms"


def _lmms() -> Any:
    return pytest.importorskip("lmms_eval", reason=NO_LMMS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny models on a shared 2-core machine: one thread is several times faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- without lmms-eval ------------------------------------------------------------------------------------


def test_entry_point_is_declared_and_light() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        '[project.entry-points."lmms_eval.models"]\nduet = "duet_cli.integrations:lmms_eval_models"'
        in pyproject
    )
    assert '\nlmms = ["lmms-eval>=' in pyproject
    # lmms-eval's registry imports the entry point's module at its own start: no torch, no lmms-eval class
    probe = (
        "import sys, duet_cli.integrations as i; print(i.MODEL_CLASS); "
        "print(sorted({'torch', 'lmms_eval'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["duet_cli.integrations.lmms_eval.DuetLMMs", "[]"]


def test_synth_task_folder_holds_duet_evals_records(tmp_path: Path) -> None:
    from duet_cli.benchmarks.synth import BENCHMARK, is_correct
    from duet_cli.integrations.synth_task import TASK, doc_to_visual, process_results, write_synth_task

    yaml_path = write_synth_task(tmp_path / "task", limit=12)
    assert yaml_path.name == f"{TASK}.yaml" and (yaml_path.parent / "utils.py").is_file()
    text = yaml_path.read_text()
    assert "until: []" in text and "max_new_tokens: 16" in text  # duet eval's defaults, no stop sequence
    rows = [json.loads(line) for line in (tmp_path / "task" / "data" / "test.jsonl").read_text().splitlines()]
    records = list(BENCHMARK.load(None, "test", 12))
    assert [r["id"] for r in rows] == [r.id for r in records]
    assert {r["type"] for r in rows} == {r.meta["type"] for r in records} and len(
        {r["type"] for r in rows}
    ) == 6
    for row, rec in zip(rows, records, strict=True):
        assert (row["question"], row["answer"]) == (rec.question, rec.answers[0])
        (image,) = doc_to_visual(row, tmp_path / "task")
        assert ImageChops.difference(image, rec.images[0].convert("RGB")).getbbox() is None  # lossless PNG
        wrong = "B" if rec.answers[0] == "A" else "A"
        for prediction in (rec.answers[0], wrong, f"The answer is {rec.answers[0]}", ""):
            expected = 100.0 if is_correct(rec, prediction) else 0.0
            assert process_results(row, [prediction]) == {"accuracy": expected}
        assert process_results(row, [rec.answers[0]])["accuracy"] == 100.0


# -- with lmms-eval ---------------------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),  # lmms-eval's datasets cache stays in the test's folder
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def _duet_eval(model: Path, limit: int, out: Path) -> tuple[Any, list[dict[str, Any]]]:
    """`duet eval -m MODEL -B synth -p duet-192 --limit N` (batch 1, the default): its cell and rows."""
    from duet_cli.evaluate.runner import EvalConfig, run_eval

    cells = run_eval(EvalConfig(["synth"], [PROFILE], model=str(model), limit=limit, out=out))
    assert cells is not None
    (cell,) = [c for c in cells if c.profile == PROFILE]
    rows = [json.loads(line) for line in cell.predictions.read_text().splitlines()]
    return cell, rows


def _samples(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (results,) = out.rglob("*_results.json")
    (samples,) = out.rglob("*_samples_duet_synth.jsonl")
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    return json.loads(results.read_text()), rows


def _assert_same(
    results: dict[str, Any], samples: list[dict[str, Any]], cell: Any, rows: list[dict[str, Any]]
) -> None:
    # the samples file holds each response as a string, simple_evaluate's return value as a list of one
    answers = [s["filtered_resps"] for s in samples]
    assert [a[0] if isinstance(a, list) else a for a in answers] == [r["prediction"] for r in rows]
    assert results["results"]["duet_synth"]["accuracy,none"] == pytest.approx(cell.score.headline, abs=1e-9)
    for sample, row in zip(samples, rows, strict=True):
        (counts,) = sample["token_counts"]
        assert counts["duet_profile"] == PROFILE
        assert counts["avg_visual_tokens"] == row["avg_visual_tokens"] == 191.75  # DESIGN section 5
        assert (counts["visual_tokens_in"], counts["unreduced_visual_tokens"]) == (307, 576)


def test_cli_on_the_tiny_model_equals_duet_eval(tmp_path: Path) -> None:
    """The acceptance command: `lmms-eval --model duet --model_args pretrained=<tiny folder>,profile=duet-192
    --tasks <local task>` finds the plugin by its entry point alone and scores what duet eval scores."""
    _lmms()
    from duet_cli.integrations.synth_task import write_synth_task

    limit = 8
    task = write_synth_task(tmp_path / "task", limit=limit).parent
    lmms_eval_cli = Path(sys.executable).with_name("lmms-eval")
    cmd = [
        str(lmms_eval_cli), "--model", "duet", "--model_args", f"pretrained={TINY},profile={PROFILE}",
        "--include_path", str(task), "--tasks", "duet_synth", "--batch_size", "3",
        "--log_samples", "--output_path", str(tmp_path / "lmms"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=600)
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, done.stdout[
        -4000:
    ]
    results, samples = _samples(tmp_path / "lmms")
    assert results["config"]["model_backend"].startswith("duet_cli.integrations.lmms_eval.DuetLMMs")
    assert len(samples) == limit
    cell, rows = _duet_eval(TINY, limit, tmp_path / "duet")
    _assert_same(results, samples, cell, rows)


def test_simple_evaluate_on_the_bundled_model_equals_duet_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through lmms-eval's Python entry, on the trained bundled model, whose answers differ from
    record to record (the tiny model's random weights answer every question alike)."""
    _lmms()
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from duet_cli.integrations.synth_task import write_synth_task

    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    limit = 10
    task = write_synth_task(tmp_path / "task", limit=limit).parent
    results = simple_evaluate(
        model="duet",
        model_args=f"pretrained={SYNTH_LLAVA},profile={PROFILE}",
        tasks=["duet_synth"],
        batch_size=4,
        log_samples=True,
        task_manager=TaskManager("WARNING", include_path=str(task), include_defaults=False),
    )
    samples = sorted(results["samples"]["duet_synth"], key=lambda r: r["doc_id"])
    cell, rows = _duet_eval(SYNTH_LLAVA, limit, tmp_path / "duet")
    assert len({r["prediction"] for r in rows}) > 2 and 0 < cell.score.headline < 100  # a real comparison
    _assert_same(results, samples, cell, rows)


# -- the model class on its own ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duet_lm() -> Any:
    _lmms()
    from duet_cli.integrations.lmms_eval import DuetLMMs

    return DuetLMMs.create_from_arg_string(
        f"pretrained={TINY},profile={PROFILE},batch_size=2", {"batch_size": 1}
    )


def _requests(lm: Any, items: list[tuple[str, dict[str, Any], list[Any]]]) -> list[Any]:
    from lmms_eval.api.instance import Instance

    lm.task_dict = {"t": {"test": [{"visuals": v} for _, _, v in items]}}
    return [
        Instance(
            request_type="generate_until",
            arguments=(q, dict(g), lambda doc: doc["visuals"], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, (q, g, _) in enumerate(items)
    ]


def test_generate_until_matches_duet_and_keeps_request_order(duet_lm: Any) -> None:
    """Two generation-settings groups, batches of 2 sorted by prompt length: each answer is the one
    duet gives that prompt alone, in request order, with its trace's average visual tokens."""
    from duet_cli import api

    assert duet_lm.batch_size == 2  # model_args win over the CLI's --batch_size default
    shapes, grid = api.load_image(ROOT / "examples/shapes.png"), api.load_image(ROOT / "examples/grid.png")
    greedy4 = {"max_new_tokens": 4, "temperature": 0, "until": []}
    greedy6 = {"max_new_tokens": 6, "do_sample": False}
    items = [  # (context, generation_kwargs, visuals, the question and image duet should see)
        ("What is shown?", greedy4, [shapes], "What is shown?", shapes),
        (
            "<image>\nWhich shapes are there, and what colours?",
            greedy6,
            [grid],
            "Which shapes are there, and what colours?",
            grid,
        ),
        ("Describe it.", greedy4, [grid], "Describe it.", grid),
        ("Is there a circle?", greedy6, [shapes], "Is there a circle?", shapes),
        ("What colour is the square?", greedy4, [[shapes]], "What colour is the square?", shapes),  # nested
    ]
    results = duet_lm.generate_until(_requests(duet_lm, [item[:3] for item in items]))
    with api.apply_profile(duet_lm.model, PROFILE) as session:
        for (_, gen, _, question, image), result in zip(items, results, strict=True):
            alone = api.run(
                duet_lm.loaded, session, [api.Prompt(question, [image])], max_new_tokens=gen["max_new_tokens"]
            )
            assert result.text == alone.answers[0]
            assert result.token_counts.avg_visual_tokens == alone.trace.samples[0].avg_visual_tokens == 191.75


def test_stop_sequences_cut_the_answer(duet_lm: Any) -> None:
    from duet_cli import api

    shapes = api.load_image(ROOT / "examples/shapes.png")
    (full,) = duet_lm.generate_until(
        _requests(duet_lm, [("What is shown?", {"max_new_tokens": 6}, [shapes])])
    )
    words = full.text.split()
    assert len(words) > 1, full.text
    (cut,) = duet_lm.generate_until(
        _requests(duet_lm, [("What is shown?", {"max_new_tokens": 6, "until": [" " + words[1]]}, [shapes])])
    )
    assert cut.text == words[0]


def test_refused_media_answers_empty_and_the_rest_run(duet_lm: Any) -> None:
    from duet_cli import api

    shapes = api.load_image(ROOT / "examples/shapes.png")
    gen = {"max_new_tokens": 3}
    audio = {"array": [0.0], "sampling_rate": 16000}
    results = duet_lm.generate_until(
        _requests(
            duet_lm, [("Q one?", gen, [shapes]), ("Q two?", gen, [audio]), ("Q three?", gen, ["clip.mp4"])]
        )
    )
    assert results[0].text and results[0].token_counts is not None
    assert [r.text for r in results[1:]] == ["", ""] and all(r.token_counts is None for r in results[1:])


def test_loglikelihood_and_bad_model_args_are_refused_clearly(duet_lm: Any) -> None:
    from duet_cli.errors import UsageError
    from duet_cli.integrations.lmms_eval import DuetLMMs

    with pytest.raises(NotImplementedError, match=r"loglikelihood requests .* not supported"):
        duet_lm.loglikelihood([])
    with pytest.raises(UsageError, match=r"unknown model_args 'profil' \(did you mean: profile\?\)"):
        DuetLMMs.create_from_arg_string(f"pretrained={TINY},profil={PROFILE}")
    with pytest.raises(UsageError, match="batch_size=auto: duet has no automatic batch size"):
        DuetLMMs.create_from_arg_string(f"pretrained={TINY}", {"batch_size": "auto"})
    with pytest.raises(UsageError, match="max_new_tokens=0 must be a whole number"):
        DuetLMMs.create_from_arg_string(f"pretrained={TINY},max_new_tokens=0")
