"""TextVQA (val): reading text in images, scored with VQA accuracy over the 10 human answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import Record, Score, warn_malformed
from duet_cli.benchmarks.metrics import vqa_accuracy
from duet_cli.errors import InputError

NAME = "textvqa"
QUESTIONS = "TextVQA_0.5.1_val.json"
OCR = "TextVQA_Rosetta_OCR_v0.2_val.json"
IMAGES = "train_images"  # TextVQA's val images ship in train_val_images.zip, folder train_images/
SUFFIX = "\nAnswer the question using a single word or phrase."
SPLITS = ("val", "val-noocr")
HUB = ("lmms-lab/textvqa", None, "validation")
EXPECTED = f"{QUESTIONS} and {IMAGES}/ (download from textvqa.org/dataset)"


def prompt(question: str, ocr_tokens: Sequence[str] | None) -> str:
    """LLaVA's TextVQA prompt: the question, the OCR tokens when given, the short-answer instruction."""
    ocr = f"\nReference OCR token: {', '.join(ocr_tokens)}" if ocr_tokens else ""
    return f"{question}{ocr}{SUFFIX}"


class TextVQA:
    name = NAME
    description = "TextVQA val: 5,000 questions about text in images; VQA accuracy (10 human answers)"
    layout = (
        f"A folder with {QUESTIONS} "
        "({'data': [{question_id, question, image_id, answers: [10 strings], ...}]}) "
        f"and {IMAGES}/<image_id>.jpg (from train_val_images.zip), both from https://textvqa.org/dataset; "
        f"optionally {OCR} ({{'data': [{{image_id, ocr_tokens: [...]}}]}}), whose tokens are then added to "
        "the prompt as 'Reference OCR token: a, b, c' (LLaVA's protocol). Or an lmms-eval parquet folder "
        "(lmms-lab/textvqa, validation split; columns question_id, question, answers, image, and "
        "ocr_tokens used when present), or that hub id when online. Splits: val (default; OCR tokens "
        "when available), val-noocr (never). Record ids are the question ids."
    )

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        use_ocr = hf.parse_choices(NAME, split, SPLITS, ["val"]) == ["val"]
        base = hf.resolve_root(NAME, root)
        if (base / QUESTIONS).is_file() and (base / IMAGES).is_dir():
            records = _local(base, use_ocr)
        else:
            parts = hf.open_dataset(NAME, base, lambda repo: [hf.hub_part(NAME, repo, *HUB[1:])])
            if parts is None:
                raise hf.missing(NAME, base, EXPECTED)
            records = _parquet(parts, use_ocr)
        return _take(records, limit)

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        accs = [vqa_accuracy(p, r.answers) for r, p in zip(records, predictions, strict=True)]
        acc = 100.0 * sum(accs) / len(accs) if accs else 0.0
        return Score(headline=acc, headline_name="accuracy", metrics={"accuracy": acc}, count=len(accs))


def _take(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    seen: set[str] = set()
    for record in records:
        if limit is not None and len(seen) >= limit:
            return
        if record.id in seen:
            warn_malformed(NAME, record.meta["where"], f"duplicate question_id {record.id}")
            continue
        seen.add(record.id)
        yield record


def _ocr_tokens(base: Path) -> dict[str, list[str]]:
    file = base / OCR
    data = hf.read_json(NAME, file)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{NAME}: {file}: expected an object with a 'data' list")
    tokens: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        try:
            image_id = hf.field(entry, "image_id", str)
            values = hf.field(entry, "ocr_tokens", list)
        except hf.Malformed as exc:
            warn_malformed(NAME, f"{file} data[{i}]", str(exc))
            continue
        tokens[image_id] = [str(t) for t in values]
    return tokens


def _local(base: Path, use_ocr: bool) -> Iterator[Record]:
    file = base / QUESTIONS
    data = hf.read_json(NAME, file)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise InputError(f"{NAME}: {file}: expected an object with a 'data' list")
    ocr = _ocr_tokens(base) if use_ocr and (base / OCR).is_file() else None
    for i, item in enumerate(items):
        where = f"{file} data[{i}]"
        try:
            qid = hf.field(item, "question_id", (int, str))
            question = hf.field(item, "question", str)
            image_id = hf.field(item, "image_id", str)
            answers = hf.string_list(item, "answers")
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        tokens = ocr.get(image_id) if ocr is not None else None
        yield Record(
            id=str(qid),
            question=prompt(question, tokens),
            images=[base / IMAGES / f"{image_id}.jpg"],
            answers=answers,
            meta={"image_id": image_id, "ocr": ocr is not None, "where": where},
        )


def _parquet(parts: list[hf.Part], use_ocr: bool) -> Iterator[Record]:
    hf.require_columns(NAME, parts, ["question_id", "question", "answers", "image"], "lmms-lab/textvqa")
    columns = ["question_id", "question", "answers", "image_id", "ocr_tokens", "image"]
    for row in hf.rows(parts, columns):
        values: dict[str, Any] = row.values
        try:
            qid = hf.field(values, "question_id", (int, str))
            question = hf.field(values, "question", str)
            answers = hf.string_list(values, "answers")
            if not hf.has_image(values.get("image")):
                raise hf.Malformed("no image")
        except hf.Malformed as exc:
            warn_malformed(NAME, row.where, str(exc))
            continue
        tokens = values.get("ocr_tokens") if use_ocr else None
        yield Record(
            id=str(qid),
            question=prompt(question, [str(t) for t in tokens] if tokens else None),
            images=[hf.image_ref(values["image"], row.where)],
            answers=answers,
            meta={"image_id": values.get("image_id"), "ocr": tokens is not None, "where": row.where},
        )


BENCHMARK = TextVQA()
