"""POPE (COCO val2014): yes/no object-hallucination probes in three splits, scored per split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import ImageRef, Record, Score, warn_malformed
from duet_cli.benchmarks.metrics import YesNo, binary_metrics, parse_pope_answer
from duet_cli.errors import InputError

NAME = "pope"
SPLITS = ("adversarial", "popular", "random")
IMAGES = "val2014"
SUFFIX = "\nAnswer the question using a single word or phrase."
HUB = ("lmms-lab/POPE", None, "test")
EXPECTED = f"coco_pope_{{{','.join(SPLITS)}}}.json and {IMAGES}/ (github.com/RUCAIBox/POPE, cocodataset.org)"


def _file(split: str) -> str:
    return f"coco_pope_{split}.json"


class Pope:
    name = NAME
    description = "POPE (COCO): yes/no object existence in adversarial, popular and random splits; F1"
    layout = (
        "A folder with coco_pope_adversarial.json, coco_pope_popular.json and coco_pope_random.json "
        "(JSON lines {question_id, image, text, label: yes|no}; from github.com/RUCAIBox/POPE, "
        "output/coco/) and val2014/ holding the COCO 2014 val images the lines name "
        "(cocodataset.org, val2014.zip). Or an lmms-eval parquet folder (lmms-lab/POPE, test split; "
        "columns question_id, question, answer, category, image), or that hub id when online. "
        "Splits: adversarial, popular, random, comma-separated (default: all three). Records alternate "
        "between the splits (a1, p1, r1, a2, ...), so --limit samples each; ids are <split>/<question_id>."
    )

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        splits = hf.parse_choices(NAME, split, SPLITS, SPLITS)
        base = hf.resolve_root(NAME, root)
        if any((base / _file(s)).is_file() for s in SPLITS) and (base / IMAGES).is_dir():
            lacking = [_file(s) for s in splits if not (base / _file(s)).is_file()]
            if lacking:
                raise InputError(f"{NAME}: {', '.join(lacking)} not found in {base}; expected {EXPECTED}")
            records = hf.interleave([list(_local(base, s)) for s in splits])
            return iter(records[:limit] if limit is not None else records)
        parts = hf.open_dataset(NAME, base, lambda repo: [hf.hub_part(NAME, repo, *HUB[1:])])
        if parts is None:
            raise hf.missing(NAME, base, EXPECTED)
        return iter(_parquet(parts, splits, limit))

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        by_split: dict[str, tuple[list[YesNo | None], list[YesNo]]] = {}
        for record, pred in zip(records, predictions, strict=True):
            preds, labels = by_split.setdefault(record.meta["split"], ([], []))
            preds.append(parse_pope_answer(pred) if pred is not None else None)
            labels.append("yes" if record.answers[0] == "yes" else "no")
        metrics: dict[str, float] = {}
        for split in SPLITS:
            if split in by_split:
                for key, value in binary_metrics(*by_split[split]).items():
                    metrics[f"{split}/{key}"] = 100.0 * value
        present = [s for s in SPLITS if s in by_split]
        for key in ("accuracy", "f1"):
            metrics[key] = sum(metrics[f"{s}/{key}"] for s in present) / len(present) if present else 0.0
        return Score(headline=metrics["f1"], headline_name="f1", metrics=metrics, count=len(records))


def _record(split: str, qid: object, question: str, label: str, image: ImageRef, where: str) -> Record:
    return Record(
        id=f"{split}/{qid}",
        question=f"{question}{SUFFIX}",
        images=[image],
        answers=[label],
        meta={"split": split, "where": where},
    )


def _label(value: object) -> str:
    label = str(value).strip().lower()
    if label not in ("yes", "no"):
        raise hf.Malformed(f"label is {value!r}, expected yes or no")
    return label


def _local(base: Path, split: str) -> Iterator[Record]:
    file = base / _file(split)
    seen: set[str] = set()
    lines = hf.read_text(NAME, file).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            item = hf.parse_json_line(line)
            qid = hf.field(item, "question_id", (int, str))
            image = hf.field(item, "image", str)
            text = hf.field(item, "text", str)
            label = _label(hf.field(item, "label", str))
            if str(qid) in seen:
                raise hf.Malformed(f"duplicate question_id {qid}")
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        seen.add(str(qid))
        yield _record(split, qid, text, label, base / IMAGES / image, where)


def _parquet(parts: list[hf.Part], splits: list[str], limit: int | None) -> list[Record]:
    hf.require_columns(
        NAME, parts, ["question_id", "question", "answer", "category", "image"], "lmms-lab/POPE"
    )
    groups: dict[str, list[tuple[hf.Row, str, str]]] = {s: [] for s in splits}
    seen: set[str] = set()
    for row in hf.rows(parts, ["question_id", "question", "answer", "category"]):
        try:
            qid = hf.field(row.values, "question_id", (int, str))
            question = hf.field(row.values, "question", str)
            label = _label(hf.field(row.values, "answer", str))
            category = str(hf.field(row.values, "category", str)).strip().lower()
            if category not in SPLITS:
                raise hf.Malformed(f"category is {category!r}, expected one of {', '.join(SPLITS)}")
            if f"{category}/{qid}" in seen:
                raise hf.Malformed(f"duplicate question_id {qid} in {category}")
        except hf.Malformed as exc:
            warn_malformed(NAME, row.where, str(exc))
            continue
        seen.add(f"{category}/{qid}")
        if category in groups:
            groups[category].append((row, question, label))
    picked = hf.interleave([groups[s] for s in splits])
    picked = picked[:limit] if limit is not None else picked
    images = hf.images(parts, [row for row, _, _ in picked])
    return [
        _record(row.values["category"].strip().lower(), row.values["question_id"], q, label, image, row.where)
        for (row, q, label), image in zip(picked, images)
    ]


BENCHMARK = Pope()
