"""Open-ended video QA (MSVD-QA, MSRVTT-QA, TGIF-QA): shared reading, answer matching and the judge hook.

Scoring. The published Video-LLaVA and DUET numbers come from a GPT judge (gpt-3.5-turbo answers "is the
prediction correct, and how good is it, 0-5" for each question), a service we do not have offline. duet
scores with two deterministic string matches on normalized text (lower case, punctuation and articles
removed, number words as digits):
- `exact`: the prediction equals the answer;
- `contains`: the answer appears in the prediction as whole words (what a lenient judge accepts for
  one-word ground truths such as "man" in "a man is cooking"); this is the headline.
Both are lower bounds of a judge's accuracy and are only comparable with each other, not with papers.
A user who has a judge plugs it in with an `AnswerJudge` (see `load_judge`): its accuracy then
becomes the headline and its mean score is reported too.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from duet_cli.benchmarks import hf
from duet_cli.benchmarks.base import Record, Score, warn_malformed
from duet_cli.errors import InputError, UsageError
from duet_cli.inputs.video import VIDEO_SUFFIXES

SUFFIX = "\nAnswer the question using a single word or phrase."
JUDGE_ENV = "DUET_VIDEOQA_JUDGE"  # "package.module:factory", a callable returning an AnswerJudge

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {word: str(n) for n, word in enumerate(_NUMBER_WORDS)}
_PUNCT = re.compile(r"[^\w\s]")


# --- matching ---------------------------------------------------------------------------------------


def normalize(text: str) -> list[str]:
    """Lower-cased words without punctuation or articles, number words as digits."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return [_NUMBERS.get(w, w) for w in words if w not in _ARTICLES]


def exact_match(prediction: str, answer: str) -> bool:
    return bool(normalize(answer)) and normalize(prediction) == normalize(answer)


def contains_answer(prediction: str, answer: str) -> bool:
    """The answer's words appear, in order and adjacent, among the prediction's words."""
    pred, ans = normalize(prediction), normalize(answer)
    if not ans:
        return False
    return any(pred[i : i + len(ans)] == ans for i in range(len(pred) - len(ans) + 1))


# --- the judge hook ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float  # 0-5 as in Video-ChatGPT's judge prompt; any scale the judge documents


class AnswerJudge(Protocol):
    """Decides whether a prediction answers a question correctly (e.g. by asking a GPT model)."""

    name: str

    def judge(self, question: str, answer: str, prediction: str) -> Verdict: ...


def load_judge(spec: str | None = None) -> AnswerJudge | None:
    """The judge named by `spec` or $DUET_VIDEOQA_JUDGE ("package.module:factory"), or None (default).

    The factory is imported (never evaluated from text) and called without arguments.
    """
    spec = spec if spec is not None else os.environ.get(JUDGE_ENV, "").strip()
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{JUDGE_ENV}={spec!r}: expected 'package.module:factory'")
    try:
        factory: Callable[[], AnswerJudge] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{JUDGE_ENV}={spec!r}: cannot import it ({exc})") from None
    return factory()


def score_videoqa(
    records: Sequence[Record], predictions: Sequence[str | None], judge: AnswerJudge | None = None
) -> Score:
    """Exact match and containment (percent), overall and per question type; the judge's when given."""
    rows = list(zip(records, predictions, strict=True))
    n = len(rows)

    def pct(hits: Sequence[bool]) -> float:
        return 100.0 * sum(hits) / len(hits) if hits else 0.0

    exact = [p is not None and exact_match(p, r.answers[0]) for r, p in rows]
    contains = [p is not None and contains_answer(p, r.answers[0]) for r, p in rows]
    metrics = {"exact": pct(exact), "contains": pct(contains)}
    by_type: dict[str, list[int]] = {}
    for i, (record, _) in enumerate(rows):
        if record.meta.get("type") is not None:
            by_type.setdefault(str(record.meta["type"]), []).append(i)
    for kind, idx in sorted(by_type.items()):
        metrics[f"{kind}/exact"] = pct([exact[i] for i in idx])
        metrics[f"{kind}/contains"] = pct([contains[i] for i in idx])
    if judge is None:
        return Score(headline=metrics["contains"], headline_name="contains", metrics=metrics, count=n)
    verdicts = [
        judge.judge(r.meta.get("raw_question", r.question), r.answers[0], p) if p is not None else None
        for r, p in rows
    ]
    metrics["judge/accuracy"] = pct([v is not None and v.correct for v in verdicts])
    metrics["judge/score"] = sum(v.score for v in verdicts if v is not None) / n if n else 0.0
    name = f"judge accuracy ({judge.name})"
    return Score(headline=metrics["judge/accuracy"], headline_name=name, metrics=metrics, count=n)


# --- reading ----------------------------------------------------------------------------------------


class VideoIndex:
    """Video files of some folders by stem (each folder listed once): 'video7010' -> .../video7010.mp4."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = [f for f in folders if f.is_dir()]
        self._by_stem: dict[str, Path] = {}
        for folder in reversed(self.folders):  # earlier folders win
            with os.scandir(folder) as entries:
                for entry in entries:
                    path = Path(entry.path)
                    if path.suffix.lower() in VIDEO_SUFFIXES:
                        self._by_stem[path.stem] = path

    def find(self, stem: str, default_suffix: str) -> Path:
        """The file for `stem`; when there is none, the path it would have (loading it then fails and
        the record scores as a failure, like an unreadable image)."""
        found = self._by_stem.get(stem)
        if found is not None:
            return found
        return (self.folders[0] if self.folders else Path(".")) / f"{stem}{default_suffix}"


def first_dir(base: Path, candidates: Sequence[str]) -> Path | None:
    return next((base / c for c in candidates if (base / c).is_dir()), None)


def video_record(rid: str, question: str, answer: str, video: Path, where: str, **meta: Any) -> Record:
    return Record(
        id=rid,
        question=f"{question}{SUFFIX}",
        images=[],
        answers=[answer],
        meta={"video": str(video), "raw_question": question, "where": where, **meta},
        videos=[video],
    )


def qa_pair_records(name: str, base: Path, videos: VideoIndex, default_suffix: str) -> Iterator[Record]:
    """Video-LLaVA's evaluation layout: test_q.json [{video_name, question, question_id}] and test_a.json
    [{answer, question_id, type?}], answers matched by question_id (by position when ids are absent)."""
    q_file, a_file = base / "test_q.json", base / "test_a.json"
    questions, answers = hf.read_json(name, q_file), hf.read_json(name, a_file)
    if not isinstance(questions, list) or not isinstance(answers, list):
        raise InputError(f"{name}: {q_file} and {a_file} must each hold a JSON list")
    by_id = {
        str(a["question_id"]): a for a in answers if isinstance(a, dict) and a.get("question_id") is not None
    }
    for i, item in enumerate(questions):
        where = f"{q_file}[{i}]"
        try:
            video_name = str(hf.field(item, "video_name", (str, int)))
            question = hf.field(item, "question", str)
            qid = str(item.get("question_id", i)) if isinstance(item, dict) else str(i)
            entry = by_id.get(qid) if by_id else (answers[i] if i < len(answers) else None)
            if entry is None:
                raise hf.Malformed(f"no answer for question_id {qid} in {a_file.name}")
            answer = str(hf.field(entry, "answer", (str, int)))
        except hf.Malformed as exc:
            warn_malformed(name, where, str(exc))
            continue
        video = videos.find(video_name, default_suffix)
        yield video_record(qid, question, answer, video, where, type=entry.get("type"))


def take(name: str, records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    """The first `limit` records, duplicates of an id skipped with a warning."""
    seen: set[str] = set()
    for record in records:
        if limit is not None and len(seen) >= limit:
            return
        if record.id in seen:
            warn_malformed(name, record.meta["where"], f"duplicate question id {record.id}")
            continue
        seen.add(record.id)
        yield record


def check_split(name: str, split: str | None) -> None:
    hf.parse_choices(name, split, ("test",), ["test"])


def missing_data(name: str, base: Path, expected: str) -> InputError:
    return InputError(f"{name}: no data at {base}; expected {expected}")
