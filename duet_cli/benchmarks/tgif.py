"""TGIF-QA FrameQA (test): open-ended questions on animated GIFs; exact match and containment."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from duet_cli.benchmarks import hf, videoqa
from duet_cli.benchmarks.base import Record, Score, warn_malformed
from duet_cli.errors import InputError

NAME = "tgif"
VIDEO_DIRS = ("mp4", "gifs", "gif", "videos")
RELEASE = "Test_frameqa_question.csv"
TYPES = {"0": "object", "1": "number", "2": "color", "3": "location"}  # FrameQA's answer types
EXPECTED = (
    f"test_q.json + test_a.json + mp4/ (Video-LLaVA's TGIF_Zero_Shot_QA), or {RELEASE} + gifs/ "
    "(the TGIF-QA release)"
)


class TgifQA:
    name = NAME
    description = "TGIF-QA FrameQA test: 13,691 open-ended questions on GIFs; containment and exact match"
    layout = (
        "Either Video-LLaVA's evaluation folder TGIF_Zero_Shot_QA/: test_q.json "
        "([{video_name, question, question_id}]), test_a.json ([{answer, question_id}]) and mp4/"
        f"<video_name>.mp4; or the TGIF-QA release (github.com/YunseokJANG/tgif-qa): {RELEASE} "
        "(tab-separated, header gif_name question answer type vid_id key description) and gifs/"
        "<gif_name>.gif (from the TGIF release; mp4/ conversions are used when present). Split: test. "
        "Published numbers use a GPT judge; duet reports containment (headline) and exact match, per "
        f"answer type too, or a judge's accuracy when ${videoqa.JUDGE_ENV} names one. Record ids are "
        "the question ids (vid_id in the release)."
    )
    judge: videoqa.AnswerJudge | None = None

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        videoqa.check_split(NAME, split)
        base = hf.resolve_root(NAME, root)
        videos = videoqa.VideoIndex([base / d for d in VIDEO_DIRS])
        if (base / "test_q.json").is_file() and (base / "test_a.json").is_file():
            records = videoqa.qa_pair_records(NAME, base, videos, ".mp4")
        elif (base / RELEASE).is_file():
            records = _release(base, videos)
        else:
            raise videoqa.missing_data(NAME, base, EXPECTED)
        return videoqa.take(NAME, records, limit)

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        return videoqa.score_videoqa(records, predictions, self.judge or videoqa.load_judge())


def _release(base: Path, videos: videoqa.VideoIndex) -> Iterator[Record]:
    file = base / RELEASE
    text = hf.read_text(NAME, file)
    reader = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    needed = {"gif_name", "question", "answer"}
    if not needed <= set(reader.fieldnames or []):
        raise InputError(f"{NAME}: {file}: expected a tab-separated header with {', '.join(sorted(needed))}")
    for line, row in enumerate(reader, start=2):
        where = f"{file}:{line}"
        try:
            gif = hf.field(row, "gif_name", str)
            question = hf.field(row, "question", str)
            answer = hf.field(row, "answer", str)
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        qid = row.get("vid_id") or row.get("key") or str(line)
        kind = TYPES.get(str(row.get("type", "")).strip())
        yield videoqa.video_record(qid, question, answer, videos.find(gif, ".gif"), where, type=kind)


BENCHMARK = TgifQA()
