"""MME: yes/no questions in 14 subtasks (10 perception, 4 cognition), two per image; acc + acc+."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import ImageRef, Record, Score, warn_malformed
from duet_cli.benchmarks.metrics import MME_COGNITION, MME_PERCEPTION, mme_scores, parse_mme_answer
from duet_cli.errors import InputError

NAME = "mme"
SUBTASKS = MME_PERCEPTION + MME_COGNITION
HUB = ("lmms-lab/MME", None, "test")
RELEASE = "MME_Benchmark_release_version"
QA_DIR = "questions_answers_YN"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
EXPECTED = "one folder per subtask (existence/, OCR/, artwork/, ...) as in MME_Benchmark_release_version"

Question = tuple[str, ImageRef, str, str, str]  # image name, image, question, answer, where


class MME:
    name = NAME
    description = "MME: 2,374 yes/no questions, 14 subtasks; perception (max 2000) and cognition (max 800)"
    layout = (
        "The MME_Benchmark_release_version folder (from the MME authors, github.com/BradyFU/"
        "Awesome-Multimodal-Large-Language-Models, Evaluation section): one folder per subtask "
        f"({', '.join(SUBTASKS)}). A subtask folder holds either images/ and {QA_DIR}/, or the images "
        "and the .txt files side by side; each <image stem>.txt has one question per line, "
        "'question<TAB>Yes|No' (the questions end with 'Please answer yes or no.'). A .txt whose lines "
        "have three fields, 'image.png<TAB>question<TAB>Yes', lists questions for several images (the "
        "eval_tool layout). Or an lmms-eval parquet folder (lmms-lab/MME, test split; columns question_id "
        "(= '<subtask>/<image>'), question, answer, category, image), or that hub id when online. "
        "Split: subtask names and/or 'perception' / 'cognition', comma-separated (default: all 14). "
        "Records go image by image, alternating between subtasks, so --limit samples each; ids are "
        "<subtask>/<image>/<k>, k the question's index for that image."
    )

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        subtasks = _subtasks(split)
        base = hf.resolve_root(NAME, root)
        if (base / RELEASE).is_dir():  # the folder the release unpacks into, or its parent
            base = base / RELEASE
        folders = {p.name.lower(): p for p in base.iterdir() if p.is_dir()} if base.is_dir() else {}
        if any(s.lower() in folders for s in SUBTASKS):
            lacking = [s for s in subtasks if s.lower() not in folders]
            if lacking:
                raise InputError(
                    f"{NAME}: no subtask folder {', '.join(lacking)} in {base}; expected {EXPECTED}"
                )
            groups = [_local_subtask(folders[s.lower()], s) for s in subtasks]
            records = [r for image_group in hf.interleave(groups) for r in image_group]
            return iter(records[:limit] if limit is not None else records)
        parts = hf.open_dataset(NAME, base, lambda repo: [hf.hub_part(NAME, repo, *HUB[1:])])
        if parts is None:
            raise hf.missing(NAME, base, EXPECTED)
        return iter(_parquet(parts, subtasks, limit))

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        results = [
            (r.meta["subtask"], r.meta["image"], parse_mme_answer(p) == r.answers[0])
            for r, p in zip(records, predictions, strict=True)
        ]
        metrics = mme_scores(results)
        has_perception = any(r.meta["subtask"] in MME_PERCEPTION for r in records) or not records
        headline_name = "perception" if has_perception else "cognition"
        return Score(
            headline=metrics[headline_name], headline_name=headline_name, metrics=metrics, count=len(records)
        )


def _subtasks(split: str | None) -> list[str]:
    picked = hf.parse_choices(NAME, split, [*SUBTASKS, "perception", "cognition"], SUBTASKS)
    expanded: list[str] = []
    for choice in picked:
        group = {"perception": MME_PERCEPTION, "cognition": MME_COGNITION}.get(choice, (choice,))
        expanded.extend(s for s in group if s not in expanded)
    return [s for s in SUBTASKS if s in expanded]


def _records(subtask: str, questions: list[Question]) -> list[list[Record]]:
    """One list of records per image, in first-seen order; ids <subtask>/<image>/<k>."""
    by_image: dict[str, list[Record]] = {}
    for image_name, image, question, answer, where in questions:
        group = by_image.setdefault(image_name, [])
        group.append(
            Record(
                id=f"{subtask}/{image_name}/{len(group)}",
                question=question,
                images=[image],
                answers=[answer],
                meta={"subtask": subtask, "image": image_name, "where": where},
            )
        )
    return list(by_image.values())


def _answer(value: str) -> str:
    answer = value.strip().lower()
    if answer not in ("yes", "no"):
        raise hf.Malformed(f"answer is {value.strip()!r}, expected Yes or No")
    return answer


def _local_subtask(folder: Path, subtask: str) -> list[list[Record]]:
    qa_dir = folder / QA_DIR if (folder / QA_DIR).is_dir() else folder
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    by_stem = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    questions: list[Question] = []
    for txt in sorted(qa_dir.glob("*.txt")):
        try:
            lines = hf.read_text(NAME, txt).splitlines()
        except InputError as exc:
            warn_malformed(NAME, str(txt), f"unreadable ({exc})")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{txt}:{number}"
            fields = line.rstrip("\r\n").split("\t")
            try:
                if len(fields) == 3:
                    name, question, answer = fields[0].strip(), fields[1].strip(), _answer(fields[2])
                    image = image_dir / name
                elif len(fields) == 2:
                    question, answer = fields[0].strip(), _answer(fields[1])
                    if txt.stem not in by_stem:
                        raise hf.Malformed(f"no image named {txt.stem}.* in {image_dir}")
                    image = by_stem[txt.stem]
                    name = image.name
                else:
                    raise hf.Malformed(f"{len(fields)} tab-separated fields, expected question<TAB>answer")
                if not question:
                    raise hf.Malformed("empty question")
            except hf.Malformed as exc:
                warn_malformed(NAME, where, str(exc))
                continue
            questions.append((name, image, question, answer, where))
    return _records(subtask, questions)


def _parquet(parts: list[hf.Part], subtasks: list[str], limit: int | None) -> list[Record]:
    hf.require_columns(
        NAME, parts, ["question_id", "question", "answer", "category", "image"], "lmms-lab/MME"
    )
    canonical = {s.lower(): s for s in SUBTASKS}
    rows: dict[str, list[tuple[hf.Row, str, str, str]]] = {s: [] for s in subtasks}
    for row in hf.rows(parts, ["question_id", "question", "answer", "category"]):
        try:
            image_name = str(hf.field(row.values, "question_id", str)).rsplit("/", 1)[-1]
            question = str(hf.field(row.values, "question", str)).strip()
            answer = _answer(hf.field(row.values, "answer", str))
            category = str(hf.field(row.values, "category", str)).strip()
            if category.lower() not in canonical:
                raise hf.Malformed(f"category {category!r} is not an MME subtask")
        except hf.Malformed as exc:
            warn_malformed(NAME, row.where, str(exc))
            continue
        subtask = canonical[category.lower()]
        if subtask in rows:
            rows[subtask].append((row, image_name, question, answer))
    # Group by image without images first, so that --limit reads only the images it keeps.
    groups = [_records(s, [(n, "", q, a, r.where) for r, n, q, a in rows[s]]) for s in subtasks]
    by_where = {r.where: r for s in subtasks for r, _, _, _ in rows[s]}
    records = [r for image_group in hf.interleave(groups) for r in image_group]
    records = records[:limit] if limit is not None else records
    images = hf.images(parts, [by_where[r.meta["where"]] for r in records])
    for record, image in zip(records, images):
        record.images = [image]
    return records


BENCHMARK = MME()
