"""MSVD-QA (test): open-ended questions on 1,970 short YouTube clips; exact match and containment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from duet_cli.benchmarks import hf, videoqa
from duet_cli.benchmarks.base import Record, Score, warn_malformed
from duet_cli.errors import InputError

NAME = "msvd"
VIDEO_DIRS = ("videos", "YouTubeClips", "video")
EXPECTED = (
    "test_q.json + test_a.json + videos/ (Video-LLaVA's MSVD_Zero_Shot_QA), or test_qa.json + "
    "youtube_mapping.txt + YouTubeClips/ (the MSVD-QA release)"
)


class MsvdQA:
    name = NAME
    description = "MSVD-QA test: 13,157 open-ended questions on YouTube clips; containment and exact match"
    layout = (
        "Either Video-LLaVA's evaluation folder MSVD_Zero_Shot_QA/: test_q.json "
        "([{video_name, question, question_id}]), test_a.json ([{answer, question_id}]) and videos/"
        "<video_name>.avi; or the MSVD-QA release (github.com/xudejing/video-question-answering): "
        "test_qa.json ([{id, question, answer, video_id}]), youtube_mapping.txt ('<clip name> vid<N>' per "
        "line) and YouTubeClips/<clip name>.avi (the MSVD corpus, also accepted as video/). Split: test. "
        "Published numbers use a GPT judge; duet reports containment (headline) and exact match, or a "
        f"judge's accuracy when ${videoqa.JUDGE_ENV} names one. Record ids are the question ids."
    )
    judge: videoqa.AnswerJudge | None = None  # set, or name one in $DUET_VIDEOQA_JUDGE

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        videoqa.check_split(NAME, split)
        base = hf.resolve_root(NAME, root)
        videos = videoqa.VideoIndex([base / d for d in VIDEO_DIRS])
        if (base / "test_q.json").is_file() and (base / "test_a.json").is_file():
            records = videoqa.qa_pair_records(NAME, base, videos, ".avi")
        elif (base / "test_qa.json").is_file() and (base / "youtube_mapping.txt").is_file():
            records = _release(base, videos)
        else:
            raise videoqa.missing_data(NAME, base, EXPECTED)
        return videoqa.take(NAME, records, limit)

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        return videoqa.score_videoqa(records, predictions, self.judge or videoqa.load_judge())


def _mapping(file: Path) -> dict[str, str]:
    """youtube_mapping.txt: '<clip name> vid<N>' per line -> {'vid<N>': clip name}."""
    lines = hf.read_text(NAME, file).splitlines()
    mapping = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            mapping[parts[1]] = parts[0]
    return mapping


def _release(base: Path, videos: videoqa.VideoIndex) -> Iterator[Record]:
    file = base / "test_qa.json"
    items = hf.read_json(NAME, file)
    if not isinstance(items, list):
        raise InputError(f"{NAME}: {file}: expected a JSON list")
    clips = _mapping(base / "youtube_mapping.txt")
    for i, item in enumerate(items):
        where = f"{file}[{i}]"
        try:
            qid = hf.field(item, "id", (int, str))
            question = hf.field(item, "question", str)
            answer = str(hf.field(item, "answer", (str, int)))
            video_id = hf.field(item, "video_id", (int, str))
            clip = clips.get(f"vid{video_id}")
            if clip is None:
                raise hf.Malformed(f"video_id {video_id} is not in youtube_mapping.txt")
        except hf.Malformed as exc:
            warn_malformed(NAME, where, str(exc))
            continue
        video = videos.find(clip, ".avi")
        yield videoqa.video_record(str(qid), question, answer, video, where, type=_question_type(question))


def _question_type(question: str) -> str:
    """MSVD-QA groups questions by their wh-word (what, who, how, when, where)."""
    first = question.strip().split()[0].lower() if question.strip() else ""
    return first if first in ("what", "who", "how", "when", "where") else "other"


BENCHMARK = MsvdQA()
