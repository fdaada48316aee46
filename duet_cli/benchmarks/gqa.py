"""GQA (testdev-balanced): compositional questions about real images, scored by exact match."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import ImageRef, Record, Score, warn_malformed
from duet_cli.benchmarks.metrics import gqa_match
from duet_cli.errors import InputError, UsageError

NAME = "gqa"
DEFAULT_SPLIT = "testdev_balanced"
IMAGES = "images"
SUFFIX = "\nAnswer the question using a single word or phrase."
HUB_REPO_CONFIGS = ("testdev_balanced_instructions", "testdev_balanced_images", "testdev")
EXPECTED = f"{DEFAULT_SPLIT}_questions.json and {IMAGES}/ (download from cs.stanford.edu/people/dorarad/gqa)"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class GQA:
    name = NAME
    description = "GQA testdev-balanced: 12,578 compositional questions on real images; exact match"
    layout = (
        "A folder with testdev_balanced_questions.json ({question_id: {imageId, question, answer, types, "
        "...}}, from questions1.2.zip) and images/<imageId>.jpg (images.zip), both from "
        "https://cs.stanford.edu/people/dorarad/gqa/download.html. Or an lmms-eval parquet folder "
        "(lmms-lab/GQA): rows with columns id, imageId, question, answer (testdev_balanced_instructions) "
        "plus the image table (testdev_balanced_images: columns id, image) in the same folder, joined on "
        "imageId = id; rows that carry their own image column need no image table. Or the hub id "
        "lmms-lab/GQA when online. Split: the question file's prefix, default testdev_balanced "
        "(<split>_questions.json). Records keep the file's order; ids are the question ids."
    )

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        name = (split or DEFAULT_SPLIT).strip()
        if not _SPLIT_NAME.match(name):
            raise UsageError(f"{NAME}: split '{split}' is not a question-file prefix such as {DEFAULT_SPLIT}")
        base = hf.resolve_root(NAME, root)
        file = base / f"{name}_questions.json"
        if file.is_file() and (base / IMAGES).is_dir():
            return _limited(_local(base, file), limit)
        parts = hf.open_dataset(NAME, base, _hub)
        if parts is None:
            raise hf.missing(NAME, base, EXPECTED.replace(DEFAULT_SPLIT, name))
        return iter(_parquet(parts, limit))

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        right = [gqa_match(p, r.answers[0]) for r, p in zip(records, predictions, strict=True)]
        acc = 100.0 * sum(right) / len(right) if right else 0.0
        return Score(headline=acc, headline_name="accuracy", metrics={"accuracy": acc}, count=len(right))


def _hub(repo: str) -> list[hf.Part]:
    questions, images, split = HUB_REPO_CONFIGS
    return [hf.hub_part(NAME, repo, questions, split), hf.hub_part(NAME, repo, images, split)]


def _limited(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    for count, record in enumerate(records):
        if limit is not None and count >= limit:
            return
        yield record


def _record(qid: str, question: str, answer: str, image_id: str, image: ImageRef, where: str) -> Record:
    return Record(
        id=qid,
        question=f"{question}{SUFFIX}",
        images=[image],
        answers=[answer],
        meta={"image_id": image_id, "where": where},
    )


def _local(base: Path, file: Path) -> Iterator[Record]:
    data = hf.read_json(NAME, file)
    if not isinstance(data, dict):
        raise InputError(f"{NAME}: {file}: expected an object mapping question ids to questions")
    for qid, item in data.items():
        where = f"{file} [{qid!r}]"
        try:
            image_id = hf.field(item, "imageId", str)
            question = hf.field(item, "question", str)
            answer = hf.field(item, "answer", str)
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        yield _record(str(qid), question, answer, image_id, base / IMAGES / f"{image_id}.jpg", where)


def _parquet(parts: list[hf.Part], limit: int | None) -> list[Record]:
    # A table with a question column holds questions; one with only id + image is the image table.
    questions = [p for p in parts if "question" in p.columns]
    image_tables = [p for p in parts if "question" not in p.columns and {"id", "image"} <= set(p.columns)]
    if not questions:
        raise InputError(
            f"{NAME}: no parquet file with a 'question' column among {', '.join(p.label for p in parts)}"
        )
    inline = all("image" in p.columns for p in questions)
    required = ["id", "question", "answer"] + (["image"] if inline else ["imageId"])
    hf.require_columns(NAME, questions, required, "lmms-lab/GQA testdev_balanced_instructions")
    if not inline and not image_tables:
        raise InputError(
            f"{NAME}: the question rows have no image column and no image table (columns id, image) was "
            "found next to them; add the testdev_balanced_images parquet files"
        )
    picked: list[tuple[hf.Row, str, str, str, str]] = []
    seen: set[str] = set()
    for row in hf.rows(questions, ["id", "imageId", "question", "answer"]):
        if limit is not None and len(picked) >= limit:
            break
        values: dict[str, Any] = row.values
        try:
            qid = str(hf.field(values, "id", (str, int)))
            question = hf.field(values, "question", str)
            answer = hf.field(values, "answer", str)
            image_id = str(values.get("imageId") or "")
            if not inline and not image_id:
                raise hf.Malformed("missing 'imageId'")
            if qid in seen:
                raise hf.Malformed(f"duplicate id {qid}")
        except hf.Malformed as exc:
            warn_malformed(NAME, row.where, str(exc))
            continue
        seen.add(qid)
        picked.append((row, qid, question, answer, image_id))
    if inline:
        images = hf.images(questions, [p[0] for p in picked])
    else:
        by_id = _images_by_id(image_tables, {p[4] for p in picked})
        images = [by_id.get(p[4], f"{NAME} image {p[4]} (not in the image table)") for p in picked]
    return [
        _record(qid, question, answer, image_id, image, row.where)
        for (row, qid, question, answer, image_id), image in zip(picked, images)
    ]


def _images_by_id(tables: list[hf.Part], wanted: set[str]) -> dict[str, ImageRef]:
    """The images of the wanted ids, streamed from the image table (only those are kept)."""
    found: dict[str, ImageRef] = {}
    for row in hf.rows(tables, ["id", "image"]):
        key = str(row.values.get("id"))
        if key in wanted and key not in found:
            found[key] = hf.image_ref(row.values.get("image"), row.where)
    return found


BENCHMARK = GQA()
