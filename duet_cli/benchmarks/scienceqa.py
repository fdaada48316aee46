"""ScienceQA-IMG: multiple-choice science questions that come with an image; option-letter accuracy."""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import ImageRef, Record, Score, warn_malformed
from duet_cli.benchmarks.metrics import extract_choice_letter
from duet_cli.errors import InputError, UsageError

NAME = "scienceqa"
PROBLEMS = "problems.json"
SPLITS_FILE = "pid_splits.json"
IMAGES = "images"
SUFFIX = "\nAnswer with the option's letter from the given choices directly."
HUB = ("lmms-lab/ScienceQA", "ScienceQA-IMG", "test")
EXPECTED = f"{PROBLEMS}, {SPLITS_FILE} and {IMAGES}/test/<pid>/image.png (github.com/lupantech/ScienceQA)"


def prompt(hint: str, question: str, choices: Sequence[str]) -> str:
    """Context (when there is one), question, lettered options, then the letter instruction."""
    context = f"Context: {hint.strip()}\n" if hint and hint.strip() else ""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(string.ascii_uppercase, choices))
    return f"{context}{question}\n{options}{SUFFIX}"


class ScienceQA:
    name = NAME
    description = "ScienceQA-IMG test: 2,017 multiple-choice science questions with an image; accuracy"
    layout = (
        "A folder with problems.json ({pid: {question, choices, answer: index, hint, image: 'image.png' "
        "or null, ...}}), pid_splits.json ({'test': [pid, ...], ...}) and images/test/<pid>/image.png "
        "(github.com/lupantech/ScienceQA: data/scienceqa/ and the test images zip); only problems with an "
        "image are used. Or an lmms-eval parquet folder (lmms-lab/ScienceQA, config ScienceQA-IMG, test "
        "split; columns question, choices, answer (index), hint, image; rows without an image skipped), "
        "or that hub id when online. Split: a key of pid_splits.json, default test. Records follow the "
        "split's pid order; ids are the pids (parquet: 'row<N>', the row's position in the files)."
    )

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        name = (split or "test").strip()
        base = hf.resolve_root(NAME, root)
        if (base / PROBLEMS).is_file() and (base / SPLITS_FILE).is_file() and (base / IMAGES).is_dir():
            records = _local(base, name)
        else:
            if split is not None and name != "test":
                raise UsageError(
                    f"{NAME}: an lmms-eval parquet folder has only the test split, not '{split}'"
                )
            parts = hf.open_dataset(NAME, base, lambda repo: [hf.hub_part(NAME, repo, *HUB[1:])])
            if parts is None:
                raise hf.missing(NAME, base, EXPECTED)
            records = _parquet(parts)
        return _limited(records, limit)

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        right = [
            extract_choice_letter(p, r.meta["num_choices"]) == r.answers[0]
            for r, p in zip(records, predictions, strict=True)
        ]
        acc = 100.0 * sum(right) / len(right) if right else 0.0
        return Score(headline=acc, headline_name="accuracy", metrics={"accuracy": acc}, count=len(right))


def _limited(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    for count, record in enumerate(records):
        if limit is not None and count >= limit:
            return
        yield record


def _problem(item: Any) -> tuple[str, list[str], str, str]:
    """(question, choices, gold letter, hint) of a problem, or Malformed."""
    question = hf.field(item, "question", str)
    choices = hf.string_list(item, "choices")
    if len(choices) < 2 or len(choices) > len(string.ascii_uppercase):
        raise hf.Malformed(f"{len(choices)} choices")
    answer = hf.field(item, "answer", int)
    if not 0 <= answer < len(choices):
        raise hf.Malformed(f"answer index {answer} outside the {len(choices)} choices")
    hint = item.get("hint") if isinstance(item.get("hint"), str) else ""
    return question, choices, string.ascii_uppercase[answer], hint


def _record(rid: str, item: tuple[str, list[str], str, str], image: ImageRef, where: str) -> Record:
    question, choices, letter, hint = item
    return Record(
        id=rid,
        question=prompt(hint, question, choices),
        images=[image],
        answers=[letter],
        meta={"num_choices": len(choices), "where": where},
    )


def _local(base: Path, split: str) -> Iterator[Record]:
    problems = hf.read_json(NAME, base / PROBLEMS)
    splits = hf.read_json(NAME, base / SPLITS_FILE)
    if not isinstance(problems, dict):
        raise InputError(f"{NAME}: {base / PROBLEMS}: expected an object mapping pids to problems")
    if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
        keys = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
        raise InputError(f"{NAME}: {base / SPLITS_FILE} has no '{split}' list of pids (keys: {keys})")
    seen: set[str] = set()
    for i, pid in enumerate(splits[split]):
        where = f"{base / SPLITS_FILE} [{split!r}][{i}]"
        item = problems.get(str(pid))
        if item is None:
            warn_malformed(NAME, where, f"pid {pid!r} is not in {PROBLEMS}")
            continue
        if not isinstance(item, dict) or not item.get("image"):
            continue  # a text-only problem: not part of ScienceQA-IMG
        where = f"{base / PROBLEMS} [{str(pid)!r}]"
        try:
            parsed = _problem(item)
            if str(pid) in seen:
                raise hf.Malformed(f"pid {pid} listed twice in {SPLITS_FILE}")
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        seen.add(str(pid))
        yield _record(str(pid), parsed, base / IMAGES / split / str(pid) / str(item["image"]), where)


def _parquet(parts: list[hf.Part]) -> Iterator[Record]:
    hf.require_columns(NAME, parts, ["question", "choices", "answer", "image"], "lmms-lab/ScienceQA")
    for n, row in enumerate(hf.rows(parts, ["question", "choices", "answer", "hint", "image"])):
        if not hf.has_image(row.values.get("image")):
            continue  # a text-only problem: not part of ScienceQA-IMG
        try:
            parsed = _problem(row.values)
        except hf.Malformed as exc:
            warn_malformed(NAME, row.where, str(exc))
            continue
        yield _record(f"row{n}", parsed, hf.image_ref(row.values["image"], row.where), row.where)


BENCHMARK = ScienceQA()
