"""Video input and video benchmarks without a model: uniform frame sampling, both decoders, every bad
file as one line (library and CLI, no model load, no FFmpeg noise), MSVD/MSRVTT/TGIF-QA loaders and
scoring, and the pluggable judge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_video import corrupt, frame_image, truncate, write_empty_stream, write_video

from duet_cli import cli
from duet_cli.benchmarks import videoqa
from duet_cli.benchmarks.base import MalformedRecordWarning, Record
from duet_cli.benchmarks.registry import get_benchmark
from duet_cli.errors import InputError
from duet_cli.inputs.video import available_backends, load_video, sample_indices

pytest.importorskip("av")
BACKENDS = available_backends()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    clip = write_video(root / "clip.mp4", 24)
    (root / "notes.mp4").write_text("not a video\n")
    (root / "empty.mp4").write_bytes(b"")
    (root / "folder.mp4").mkdir()
    return {
        "clip": clip,
        "avi": write_video(root / "clip.avi", 24),
        "short": write_video(root / "short.mp4", 5),
        "truncated": truncate(clip, root / "truncated.mp4"),
        "corrupt": corrupt(clip, root / "corrupt.mp4"),
        "zero": write_empty_stream(root / "zero.avi"),
        "empty": root / "empty.mp4",
        "notes": root / "notes.mp4",
        "folder": root / "folder.mp4",
        "missing": root / "missing.mp4",
    }


def test_sample_indices_are_uniform_and_include_both_ends() -> None:
    assert sample_indices(24, 8) == [0, 3, 6, 9, 13, 16, 19, 23]  # linspace(0, 23, 8) truncated
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(100, 1) == [0]
    assert sample_indices(2, 2) == [0, 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["clip", "avi"])
def test_frames_are_the_sampled_ones(videos: dict[str, Path], backend: str, kind: str) -> None:
    video = load_video(videos[kind], 8, backend=backend)
    assert video.indices == [0, 3, 6, 9, 13, 16, 19, 23] and video.total_frames == 24
    assert video.backend == backend and video.size == (64, 48) and video.fps == pytest.approx(8.0)
    for frame, index in zip(video.frames, video.indices):
        got = np.asarray(frame, dtype=np.float32)
        assert frame.mode == "RGB"
        assert np.abs(got - frame_image(index)).mean() < 12  # lossy codec, same picture
        assert np.abs(got - frame_image(index + 1)).mean() > np.abs(got - frame_image(index)).mean()


def test_animated_gif_loads_in_auto_mode(tmp_path: Path) -> None:
    """TGIF-QA ships GIFs; decord cannot measure them, so auto mode decodes them with PyAV."""
    from PIL import Image

    frames = [Image.fromarray(frame_image(i)) for i in range(12)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    video = load_video(gif, 4)
    assert video.indices == [0, 3, 7, 11] and video.total_frames == 12 and video.backend == "pyav"


def test_decoders_agree(videos: dict[str, Path]) -> None:
    if len(BACKENDS) < 2:
        pytest.skip("decord is not installed")
    a, b = (load_video(videos["clip"], 6, backend=name) for name in ("pyav", "decord"))
    assert a.indices == b.indices
    for x, y in zip(a.frames, b.frames):
        assert np.abs(np.asarray(x, dtype=np.float32) - np.asarray(y, dtype=np.float32)).mean() < 3


BAD = [
    ("missing", "video not found"),
    ("folder", "is a directory"),
    ("empty", "empty (0 bytes)"),
    ("notes", "unreadable, truncated or corrupt"),
    ("zero", "no frames (zero-length video)"),
    ("truncated", "truncated or corrupt: 5 of the 24 frames"),
    ("corrupt", "corrupt"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kind", "fragment"), BAD)
def test_bad_video_is_one_line(
    videos: dict[str, Path], capfd: pytest.CaptureFixture[str], backend: str, kind: str, fragment: str
) -> None:
    with pytest.raises(InputError) as info:
        load_video(videos[kind], 8, backend=backend)
    message = str(info.value)
    assert str(videos[kind]) in message and fragment in message and "\n" not in message, message
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # FFmpeg's own complaints never reach the terminal


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_frames_than_asked(videos: dict[str, Path], backend: str) -> None:
    with pytest.raises(InputError, match=r"has 5 frames, fewer than the 8 asked \(lower --frames\)"):
        load_video(videos["short"], 8, backend=backend)
    assert load_video(videos["short"], 5, backend=backend).indices == [0, 1, 2, 3, 4]


# -- the CLI --------------------------------------------------------------------------------------------


def run_main(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, str, str]:
    from duet_cli import api

    loads: list[Any] = []
    monkeypatch.setattr(api, "load_model", lambda *a, **k: loads.append(a) or pytest.fail("model loaded"))
    monkeypatch.setattr(sys, "argv", ["duet", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capfd.readouterr()
    assert not loads
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, ANSI.sub("", out), ANSI.sub("", err)


@pytest.mark.parametrize("command", ["infer", "visualize"])
@pytest.mark.parametrize(("kind", "fragment"), [BAD[2], BAD[5], BAD[6], BAD[4]])
def test_cli_bad_video_is_one_line_and_fails(
    videos: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    kind: str,
    fragment: str,
) -> None:
    argv = [command, "--video", str(videos[kind]), "-q", "What happens?"]
    if command == "visualize":
        argv += ["--out", str(tmp_path / "kept.png")]
    code, out, err = run_main(monkeypatch, capfd, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: video") and fragment in lines[0], err
    assert not (tmp_path / "kept.png").exists()


def test_console_script_corrupt_video(videos: dict[str, Path]) -> None:
    """The real executable: one line on stderr (decord's FFmpeg logs included in nothing), exit 1."""
    duet = Path(sys.executable).parent / "duet"
    proc = subprocess.run(
        [str(duet), "infer", "--video", str(videos["corrupt"]), "-q", "hi"],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "300", "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: video") and "corrupt" in lines[0], proc.stderr


def test_cli_usage_errors(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    videos: dict[str, Path],
    tmp_path: Path,
) -> None:
    code, _, err = run_main(
        monkeypatch,
        capfd,
        [
            "visualize",
            "--video",
            str(videos["clip"]),
            "-i",
            "x.png",
            "-q",
            "hi",
            "--out",
            str(tmp_path / "a.png"),
        ],
    )
    assert code == 2 and "not both" in err
    code, _, err = run_main(monkeypatch, capfd, ["infer", "--video", str(videos["clip"]), "-q", "<video> hi"])
    assert code == 1 and "placeholder <video>" in err


# -- benchmarks -----------------------------------------------------------------------------------------


def load(name: str, root: Path, limit: int | None = None) -> list[Record]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MalformedRecordWarning)
        return list(get_benchmark(name).load(root, limit=limit))


def write_qa_pair(root: Path, video_dir: str, suffix: str) -> None:
    """Video-LLaVA's evaluation layout: test_q.json, test_a.json and a folder of videos."""
    (root / video_dir).mkdir(parents=True)
    questions = [
        {"video_name": "v1", "question": "what is the man doing?", "question_id": "q1"},
        {"video_name": "v2", "question": "how many dogs are there?", "question_id": "q2"},
    ]
    answers = [{"answer": "two", "question_id": "q2", "type": 7}, {"answer": "cook", "question_id": "q1"}]
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps(answers))
    (root / video_dir / f"v1{suffix}").write_bytes(b"x")


@pytest.mark.parametrize(
    ("name", "video_dir", "suffix"),
    [("msvd", "videos", ".avi"), ("msrvtt", "videos/all", ".mp4"), ("tgif", "mp4", ".mp4")],
)
def test_video_llava_eval_layout(tmp_path: Path, name: str, video_dir: str, suffix: str) -> None:
    write_qa_pair(tmp_path, video_dir, suffix)
    records = load(name, tmp_path)
    assert [r.id for r in records] == ["q1", "q2"]
    assert [r.answers for r in records] == [["cook"], ["two"]]  # matched by question_id, not position
    assert records[0].question == "what is the man doing?" + videoqa.SUFFIX
    assert records[0].videos == [tmp_path / video_dir / f"v1{suffix}"] and records[0].images == []
    assert records[1].videos == [tmp_path / video_dir / f"v2{suffix}"]  # absent: scored as a failure
    assert records[1].meta["type"] == 7
    assert [r.id for r in load(name, tmp_path, limit=1)] == ["q1"]


def test_msvd_release_layout(tmp_path: Path) -> None:
    (tmp_path / "YouTubeClips").mkdir()
    (tmp_path / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi").write_bytes(b"x")
    (tmp_path / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nabc_1_2 vid2\n")
    items = [
        {"answer": "man", "id": 30933, "question": "who is slicing a tomato?", "video_id": 1},
        {"answer": "dog", "id": 30934, "question": "what runs?", "video_id": 3},
    ]
    (tmp_path / "test_qa.json").write_text(json.dumps(items))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MalformedRecordWarning)
        records = list(get_benchmark("msvd").load(tmp_path))
    assert [r.id for r in records] == ["30933"]
    assert records[0].videos == [tmp_path / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi"]
    assert records[0].meta["type"] == "who"
    (message,) = [str(w.message) for w in caught]
    where = f"{tmp_path / 'test_qa.json'}[1]"
    assert message == f"msvd: skipped malformed record at {where}: video_id 3 is not in youtube_mapping.txt"


def test_msrvtt_release_layout(tmp_path: Path) -> None:
    (tmp_path / "video").mkdir()
    items = [{"answer": "cook", "category_id": 3, "id": 7, "question": "what is he doing?", "video_id": 7010}]
    (tmp_path / "test_qa.json").write_text(json.dumps(items))
    (record,) = load("msrvtt", tmp_path)
    assert record.id == "7" and record.videos == [tmp_path / "video" / "video7010.mp4"]


def test_tgif_release_layout(tmp_path: Path) -> None:
    (tmp_path / "gifs").mkdir()
    header = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\n"
    rows = [
        "tumblr_a\twhat is the color of the shirt ?\tblack\t2\tFRAMEQA4460\t87751\ta black shirt .\n",
        "tumblr_b\thow many men are dancing ?\ttwo\t1\tFRAMEQA4461\t87752\ttwo men dance .\n",
    ]
    (tmp_path / "Test_frameqa_question.csv").write_text(header + "".join(rows))
    records = load("tgif", tmp_path)
    assert [r.id for r in records] == ["FRAMEQA4460", "FRAMEQA4461"]
    assert [r.meta["type"] for r in records] == ["color", "number"]
    assert records[0].videos == [tmp_path / "gifs" / "tumblr_a.gif"]


@pytest.mark.parametrize("name", ["msvd", "msrvtt", "tgif"])
def test_missing_data_names_the_layout(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError) as info:
        get_benchmark(name).load(tmp_path / "nothing")
    message = str(info.value)
    assert message.startswith(f"{name}: no data at {tmp_path / 'nothing'}; expected ") and "\n" not in message
    assert "test_q.json" in message and get_benchmark(name).layout


def test_matching_on_hand_worked_cases() -> None:
    assert videoqa.normalize("The Man, is cooking!") == ["man", "is", "cooking"]
    assert videoqa.exact_match("Two.", "2") and videoqa.exact_match("a dog", "dog")
    assert not videoqa.exact_match("a man is cooking", "man")
    assert videoqa.contains_answer("A man is cooking.", "man")
    assert videoqa.contains_answer("there are two dogs", "2")
    assert not videoqa.contains_answer("a woman is cooking", "man")  # whole words only
    assert not videoqa.contains_answer("", "man") and not videoqa.contains_answer("man", "")


def _records() -> list[Record]:
    return [
        Record("1", "who cooks?", [], ["man"], {"type": "who", "raw_question": "who cooks?"}),
        Record("2", "what runs?", [], ["dog"], {"type": "what"}),
        Record("3", "how many?", [], ["two"], {"type": "how"}),
        Record("4", "who sings?", [], ["woman"], {"type": "who"}),
    ]


def test_scores_and_the_pluggable_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    predictions = ["man", "a dog is running", "3", None]
    monkeypatch.delenv(videoqa.JUDGE_ENV, raising=False)
    score = get_benchmark("msvd").score(_records(), predictions)
    # exact: record 1 only (1/4); contains: records 1 and 2 (2/4); record 4 failed (None)
    assert (score.headline, score.headline_name, score.count) == (50.0, "contains", 4)
    assert score.metrics["exact"] == 25.0 and score.metrics["who/contains"] == 50.0
    assert score.metrics["what/exact"] == 0.0 and score.metrics["what/contains"] == 100.0

    class Judge:
        name = "fake"

        def judge(self, question: str, answer: str, prediction: str) -> videoqa.Verdict:
            return videoqa.Verdict(correct=prediction != "3", score=4.0 if prediction != "3" else 1.0)

    module = types.ModuleType("duet_test_judge")
    module.make = Judge  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "duet_test_judge", module)
    monkeypatch.setenv(videoqa.JUDGE_ENV, "duet_test_judge:make")
    judged = get_benchmark("tgif").score(_records(), predictions)
    assert judged.headline_name == "judge accuracy (fake)" and judged.headline == 50.0
    assert judged.metrics["judge/score"] == (4 + 4 + 1 + 0) / 4 and judged.metrics["contains"] == 50.0
    monkeypatch.setenv(videoqa.JUDGE_ENV, "no-colon")
    with pytest.raises(Exception, match=r"package\.module:factory"):
        videoqa.load_judge()
