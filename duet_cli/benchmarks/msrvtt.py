"""MSRVTT-QA (test): open-ended questions on 2,990 MSR-VTT test videos; exact match and containment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from duet_cli.benchmarks import hf, videoqa
from duet_cli.benchmarks.base import Record, Score, warn_malformed
from duet_cli.benchmarks.msvd import _question_type
from duet_cli.errors import InputError

NAME = "msrvtt"
VIDEO_DIRS = ("videos/all", "videos", "video", "TestVideo")
EXPECTED = (
    "test_q.json + test_a.json + videos/all/ (Video-LLaVA's MSRVTT_Zero_Shot_QA), or test_qa.json + "
    "video/ (the MSRVTT-QA release, files video<video_id>.mp4)"
)


class MsrvttQA:
    name = NAME
    description = "MSRVTT-QA test: 72,821 open-ended questions on MSR-VTT videos; containment and exact match"
    layout = (
        "Either Video-LLaVA's evaluation folder MSRVTT_Zero_Shot_QA/: test_q.json "
        "([{video_name, question, question_id}]), test_a.json ([{answer, question_id}]) and videos/all/"
        "<video_name>.mp4; or the MSRVTT-QA release (github.com/xudejing/video-question-answering): "
        "test_qa.json ([{id, question, answer, video_id, category_id}]) and video/video<video_id>.mp4 "
        "(the MSR-VTT test videos; also accepted as videos/, videos/all/ or TestVideo/). Split: test. "
        "Published numbers use a GPT judge; duet reports containment (headline) and exact match, or a "
        f"judge's accuracy when ${videoqa.JUDGE_ENV} names one. Record ids are the question ids."
    )
    judge: videoqa.AnswerJudge | None = None

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        videoqa.check_split(NAME, split)
        base = hf.resolve_root(NAME, root)
        videos = videoqa.VideoIndex([base / d for d in VIDEO_DIRS])
        if (base / "test_q.json").is_file() and (base / "test_a.json").is_file():
            records = videoqa.qa_pair_records(NAME, base, videos, ".mp4")
        elif (base / "test_qa.json").is_file():
            records = _release(base, videos)
        else:
            raise videoqa.missing_data(NAME, base, EXPECTED)
        return videoqa.take(NAME, records, limit)

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        return videoqa.score_videoqa(records, predictions, self.judge or videoqa.load_judge())


def _release(base: Path, videos: videoqa.VideoIndex) -> Iterator[Record]:
    file = base / "test_qa.json"
    items = hf.read_json(NAME, file)
    if not isinstance(items, list):
        raise InputError(f"{NAME}: {file}: expected a JSON list")
    for i, item in enumerate(items):
        where = f"{file}[{i}]"
        try:
            qid = hf.field(item, "id", (int, str))
            question = hf.field(item, "question", str)
            answer = str(hf.field(item, "answer", (str, int)))
            video_id = hf.field(item, "video_id", (int, str))
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        video = videos.find(f"video{video_id}", ".mp4")
        yield videoqa.video_record(str(qid), question, answer, video, where, type=_question_type(question))


BENCHMARK = MsrvttQA()
