"""Benchmark loaders on small fixtures in each benchmark's real format, scored end to end.

Local layouts live in tests/fixtures/benchmarks/<name>/; lmms-eval parquet folders are written here
with pyarrow. Known predictions give hand-computed scores.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from duet_cli.benchmarks.base import MalformedRecordWarning, Record
from duet_cli.benchmarks.registry import get_benchmark
from duet_cli.errors import InputError, UsageError
from duet_cli.inputs.media import load_image

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
MME_ROOT = FIXTURES / "mme" / "MME_Benchmark_release_version"
SHORT = "\nAnswer the question using a single word or phrase."


def load(name: str, root: Path, split: str | None = None, limit: int | None = None) -> list[Record]:
    """Load with malformed-record warnings turned into errors (a clean fixture must raise none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", MalformedRecordWarning)
        return list(get_benchmark(name).load(root, split=split, limit=limit))


def load_warned(name: str, root: Path, split: str | None = None) -> tuple[list[Record], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MalformedRecordWarning)
        records = list(get_benchmark(name).load(root, split=split))
    return records, [str(w.message) for w in caught if issubclass(w.category, MalformedRecordWarning)]


def assert_images_open(records: list[Record]) -> None:
    for record in records:
        for image in record.images:
            if isinstance(image, Image.Image):
                image.load()
            else:
                load_image(image)


def png(color: str = "red", size: tuple[int, int] = (4, 3)) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# --- TextVQA ----------------------------------------------------------------------------------------


def test_textvqa_local_end_to_end() -> None:
    bench = get_benchmark("textvqa")
    records = load("textvqa", FIXTURES / "textvqa")
    assert [r.id for r in records] == ["101", "102", "103"]
    assert records[0].question == (f"what brand is this?\nReference OCR token: COCA, COLA{SHORT}")
    assert records[2].question == f"what does the sign say?{SHORT}"
    assert records[0].images == [FIXTURES / "textvqa" / "train_images" / "img_a.jpg"]
    assert len(records[0].answers) == 10
    assert_images_open(records)
    # 101: "Coke" matches 6 -> 1.0; 102: "Two" -> "2" matches 2 ("2", "two") -> 0.6; 103: failed -> 0
    score = bench.score(records, ["Coke", "Two", None])
    assert score.headline == pytest.approx(100 * (1.0 + 0.6 + 0.0) / 3)
    assert score.headline_name == "accuracy" and score.count == 3


def test_textvqa_noocr_split_and_limit() -> None:
    records = load("textvqa", FIXTURES / "textvqa", split="val-noocr", limit=1)
    assert len(records) == 1
    assert "Reference OCR token" not in records[0].question


def test_textvqa_parquet(tmp_path: Path) -> None:
    rows = [
        {"question_id": 7, "question": "what is written?", "answers": ["stop"] * 10, "image": png(),
         "image_id": "i7", "ocr_tokens": ["STOP"]},
        {"question_id": 8, "question": "what color?", "answers": ["red"] * 2 + ["blue"] * 8,
         "image": png("blue"), "image_id": "i8", "ocr_tokens": []},
    ]  # fmt: skip
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", rows)
    records = load("textvqa", tmp_path)
    assert [r.id for r in records] == ["7", "8"]
    assert records[0].question == (f"what is written?\nReference OCR token: STOP{SHORT}")
    assert isinstance(records[0].images[0], Image.Image) and records[0].images[0].size == (4, 3)
    assert_images_open(records)
    score = get_benchmark("textvqa").score(records, ["STOP", "red"])  # 1.0 and 0.6
    assert score.headline == pytest.approx(80.0)


# --- POPE -------------------------------------------------------------------------------------------


def test_pope_local_end_to_end() -> None:
    bench = get_benchmark("pope")
    records = load("pope", FIXTURES / "pope")
    # round-robin over the splits
    assert [r.id for r in records] == [
        "adversarial/1", "popular/1", "random/1", "adversarial/2", "popular/2", "random/2", "adversarial/3",
    ]  # fmt: skip
    assert records[0].question == f"Is there a dog in the image?{SHORT}"
    assert records[0].answers == ["yes"] and records[0].meta["split"] == "adversarial"
    assert_images_open(records)
    preds = {
        "adversarial/1": "Yes",  # label yes: TP
        "adversarial/2": "Yes, there is",  # label no: FP
        "adversarial/3": "No",  # label yes: FN
        "popular/1": "yes",  # TP
        "popular/2": "no",  # TN
        "random/1": "There is no cat.",  # label no: TN
        "random/2": None,  # label yes, failed: FN
    }
    score = bench.score(records, [preds[r.id] for r in records])
    m = score.metrics
    assert m["adversarial/accuracy"] == pytest.approx(100 / 3)
    assert m["adversarial/precision"] == pytest.approx(50.0)
    assert m["adversarial/recall"] == pytest.approx(50.0)
    assert m["adversarial/f1"] == pytest.approx(50.0)
    assert m["adversarial/yes_ratio"] == pytest.approx(200 / 3)
    assert m["popular/f1"] == pytest.approx(100.0)
    assert m["random/accuracy"] == pytest.approx(50.0)
    assert m["random/f1"] == 0.0 and m["random/yes_ratio"] == 0.0
    assert score.headline_name == "f1"
    assert score.headline == pytest.approx((50 + 100 + 0) / 3)
    assert m["accuracy"] == pytest.approx((100 / 3 + 100 + 50) / 3)


def test_pope_split_and_limit() -> None:
    assert [r.id for r in load("pope", FIXTURES / "pope", limit=4)] == [
        "adversarial/1", "popular/1", "random/1", "adversarial/2",
    ]  # fmt: skip
    records = load("pope", FIXTURES / "pope", split="random,popular")
    assert [r.id for r in records] == ["popular/1", "random/1", "popular/2", "random/2"]
    with pytest.raises(UsageError, match="unknown split 'randm'"):
        load("pope", FIXTURES / "pope", split="randm")


def test_pope_parquet(tmp_path: Path) -> None:
    rows = [
        {"id": str(i), "question_id": str(q), "question": f"Is there a {obj} in the image?", "answer": ans,
         "image_source": "COCO_val2014_x", "image": png(), "category": cat}
        for i, (q, obj, ans, cat) in enumerate(
            [(1, "dog", "yes", "adversarial"), (2, "cat", "no", "adversarial"), (1, "car", "no", "popular"),
             (1, "kite", "yes", "random")]
        )
    ]  # fmt: skip
    write_parquet(tmp_path / "test-00000-of-00001.parquet", rows)
    records = load("pope", tmp_path)
    assert [r.id for r in records] == ["adversarial/1", "popular/1", "random/1", "adversarial/2"]
    assert_images_open(records)
    score = get_benchmark("pope").score(records, ["yes", "no", "yes", "no"])  # all right
    assert score.metrics["accuracy"] == pytest.approx(100.0)
    # popular has no "yes" question, so TP = 0 and its F1 is 0 even with every answer right
    assert score.headline == pytest.approx((100 + 0 + 100) / 3)


def test_pope_parquet_malformed_row(tmp_path: Path) -> None:
    rows = [
        {"question_id": "1", "question": "A dog?", "answer": "maybe", "category": "random", "image": png()},
        {"question_id": "2", "question": "A cat?", "answer": "no", "category": "random", "image": png()},
    ]
    write_parquet(tmp_path / "pope.parquet", rows)
    records, messages = load_warned("pope", tmp_path)
    assert [r.id for r in records] == ["random/2"]
    assert len(messages) == 1
    assert f"{tmp_path / 'pope.parquet'} row 0" in messages[0] and "maybe" in messages[0]


# --- GQA --------------------------------------------------------------------------------------------


def test_gqa_local_end_to_end() -> None:
    records = load("gqa", FIXTURES / "gqa")
    assert [r.id for r in records] == ["201", "202", "203"]
    assert records[0].question == "Is the sky blue?\nAnswer the question using a single word or phrase."
    assert records[2].images == [FIXTURES / "gqa" / "images" / "n2.jpg"]
    assert_images_open(records)
    score = get_benchmark("gqa").score(records, ["Yes.", "on the left", "The table"])  # right, wrong, right
    assert score.headline == pytest.approx(200 / 3)
    assert [r.id for r in load("gqa", FIXTURES / "gqa", limit=2)] == ["201", "202"]


def test_gqa_parquet_with_separate_image_table(tmp_path: Path) -> None:
    questions = [
        {"id": "q1", "imageId": "n1", "question": "Is it red?", "answer": "yes", "fullAnswer": "Yes."},
        {"id": "q2", "imageId": "n2", "question": "What is it?", "answer": "cup", "fullAnswer": "A cup."},
    ]
    images = [{"id": "n2", "image": png("blue", (5, 5))}, {"id": "n1", "image": png("red", (3, 3))}]
    write_parquet(tmp_path / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", questions)
    write_parquet(tmp_path / "testdev_balanced_images" / "testdev-00000-of-00001.parquet", images)
    records = load("gqa", tmp_path)
    assert [r.id for r in records] == ["q1", "q2"]
    sizes = [r.images[0].size for r in records]  # type: ignore[union-attr]
    assert sizes == [(3, 3), (5, 5)]
    score = get_benchmark("gqa").score(records, ["yes", "a cup."])
    assert score.headline == pytest.approx(100.0)


# --- ScienceQA --------------------------------------------------------------------------------------


def test_scienceqa_local_end_to_end() -> None:
    records = load("scienceqa", FIXTURES / "scienceqa")
    assert [r.id for r in records] == ["1", "3"]  # pid 2 has no image
    assert records[0].question == (
        "Context: Select the best answer.\nWhich property do these objects have in common?\n"
        "A. hard\nB. soft\nC. sticky\nAnswer with the option's letter from the given choices directly."
    )
    assert records[1].question.startswith("Which animal is shown?\nA. cat\n")  # no hint, no context line
    assert [r.answers for r in records] == [["B"], ["A"]]
    assert records[0].images == [FIXTURES / "scienceqa" / "images" / "test" / "1" / "image.png"]
    assert_images_open(records)
    score = get_benchmark("scienceqa").score(records, ["The answer is B.", "C"])
    assert score.headline == pytest.approx(50.0)
    train = load("scienceqa", FIXTURES / "scienceqa", split="train")
    assert [r.id for r in train] == ["4"]
    assert_images_open(train)


def test_scienceqa_parquet(tmp_path: Path) -> None:
    rows = [
        {"image": png(), "question": "Which is hard?", "choices": ["rock", "soft"], "answer": 0, "hint": ""},
        {"image": None, "question": "What is 2+2?", "choices": ["3", "4"], "answer": 1, "hint": ""},
        {
            "image": png(),
            "question": "Which is soft?",
            "choices": ["rock", "soft"],
            "answer": 1,
            "hint": "Hi.",
        },
    ]
    write_parquet(tmp_path / "ScienceQA-IMG" / "test-00000-of-00001.parquet", rows)
    records = load("scienceqa", tmp_path)
    assert [r.id for r in records] == ["row0", "row2"]
    assert records[1].question.startswith("Context: Hi.\nWhich is soft?\nA. rock\nB. soft\n")
    score = get_benchmark("scienceqa").score(records, ["A", "(A) rock"])
    assert score.headline == pytest.approx(50.0)


# --- MME --------------------------------------------------------------------------------------------

MME_SPLIT = "existence,artwork,code_reasoning"


def test_mme_local_end_to_end() -> None:
    records = load("mme", MME_ROOT, split=MME_SPLIT)
    # image by image, alternating between subtasks (canonical order: existence, artwork, code_reasoning)
    assert [r.id for r in records] == [
        "existence/e1.png/0", "existence/e1.png/1", "artwork/a1.jpg/0", "artwork/a1.jpg/1",
        "code_reasoning/c1.png/0", "code_reasoning/c1.png/1", "existence/e2.png/0", "existence/e2.png/1",
    ]  # fmt: skip
    assert records[0].question == "Is there a red square in this image? Please answer yes or no."
    assert records[2].images == [MME_ROOT / "artwork" / "images" / "a1.jpg"]
    assert [r.answers[0] for r in records] == ["yes", "no"] * 4
    assert_images_open(records)
    preds = {
        "existence/e1.png/0": "Yes",
        "existence/e1.png/1": "No",  # e1: both right
        "existence/e2.png/0": "yes",
        "existence/e2.png/1": "Yes, there is",  # e2: one right
        "artwork/a1.jpg/0": "No",
        "artwork/a1.jpg/1": "No",  # a1: one right
        "code_reasoning/c1.png/0": "Yes",
        "code_reasoning/c1.png/1": "no",  # c1: both right
    }
    score = get_benchmark("mme").score(records, [preds[r.id] for r in records])
    m = score.metrics
    assert m["existence/acc"] == pytest.approx(75.0) and m["existence/acc_plus"] == pytest.approx(50.0)
    assert m["artwork/score"] == pytest.approx(50.0)
    assert m["code_reasoning/score"] == pytest.approx(200.0)
    assert score.headline_name == "perception"
    assert score.headline == pytest.approx(125.0 + 50.0)
    assert m["cognition"] == pytest.approx(200.0)


def test_mme_split_groups_and_missing_subtasks() -> None:
    # the fixture has 3 of the 14 subtask folders: asking for the others names them
    with pytest.raises(InputError, match="no subtask folder count, position, color, posters"):
        get_benchmark("mme").load(MME_ROOT)
    with pytest.raises(InputError, match="no subtask folder commonsense_reasoning, numerical_calc"):
        get_benchmark("mme").load(MME_ROOT, split="cognition")
    records = load("mme", MME_ROOT.parent, split="Code_Reasoning")  # the release folder's parent works too
    assert [r.meta["subtask"] for r in records] == ["code_reasoning"] * 2
    with pytest.raises(UsageError, match="unknown split 'exist'"):
        get_benchmark("mme").load(MME_ROOT, split="exist")


def test_mme_listing_format(tmp_path: Path) -> None:
    folder = tmp_path / "OCR"
    folder.mkdir()
    for name in ("o1.png", "o2.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "OCR.txt").write_text(
        "o1.png\tIs the word in the image 'STOP'? Please answer yes or no.\tYes\n"
        "o1.png\tIs the word in the image 'GO'? Please answer yes or no.\tNo\n"
        "o2.png\tIs the word in the image 'EXIT'? Please answer yes or no.\tyes\n"
    )
    records = load("mme", tmp_path, split="ocr")
    assert [r.id for r in records] == ["OCR/o1.png/0", "OCR/o1.png/1", "OCR/o2.png/0"]
    assert_images_open(records)
    score = get_benchmark("mme").score(records, ["Yes", "Yes", "Yes"])  # acc 2/3, acc+ 1/2
    assert score.metrics["OCR/score"] == pytest.approx(200 / 3 + 50)


def test_mme_parquet(tmp_path: Path) -> None:
    rows = [
        {"question_id": "count/1.png", "question": "Are there two dogs? Please answer yes or no.",
         "answer": "Yes", "category": "count", "image": png()},
        {"question_id": "count/1.png", "question": "Are there three dogs? Please answer yes or no.",
         "answer": "No", "category": "count", "image": png()},
        {"question_id": "text_translation/9.png", "question": "Is it 'hello'? Please answer yes or no.",
         "answer": "Yes", "category": "text_translation", "image": png("blue")},
        {"question_id": "text_translation/9.png", "question": "Is it 'bye'? Please answer yes or no.",
         "answer": "No", "category": "text_translation", "image": png("blue")},
    ]  # fmt: skip
    write_parquet(tmp_path / "test-00000-of-00002.parquet", rows[:3])
    write_parquet(tmp_path / "test-00001-of-00002.parquet", rows[3:])
    records = load("mme", tmp_path)
    assert [r.id for r in records] == [
        "count/1.png/0", "count/1.png/1", "text_translation/9.png/0", "text_translation/9.png/1",
    ]  # fmt: skip
    assert_images_open(records)
    score = get_benchmark("mme").score(records, ["Yes", "No", "Yes", "Yes"])
    assert score.metrics["count/score"] == pytest.approx(200.0)
    assert score.metrics["text_translation/score"] == pytest.approx(50.0)
    assert score.headline == pytest.approx(200.0) and score.metrics["cognition"] == pytest.approx(50.0)
    assert [r.id for r in load("mme", tmp_path, limit=3)] == [
        "count/1.png/0", "count/1.png/1", "text_translation/9.png/0",
    ]  # fmt: skip


# --- missing data, malformed records ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("textvqa", "expected TextVQA_0.5.1_val.json and train_images/"),
        ("pope", "expected coco_pope_{adversarial,popular,random}.json and val2014/"),
        ("gqa", "expected testdev_balanced_questions.json and images/"),
        ("scienceqa", "expected problems.json, pid_splits.json and images/test/<pid>/image.png"),
        ("mme", "expected one folder per subtask"),
    ],
)
def test_missing_data_names_the_layout(tmp_path: Path, name: str, expected: str) -> None:
    empty = tmp_path / "nothing-here"
    with pytest.raises(InputError) as info:
        get_benchmark(name).load(empty)
    message = str(info.value)
    assert message.startswith(f"{name}: no data at {empty}; ")
    assert expected in message and "lmms-eval parquet" in message
    assert "\n" not in message
    assert get_benchmark(name).layout  # the long form, shown by the runner


@pytest.mark.parametrize("name", ["textvqa", "pope", "gqa", "scienceqa", "mme"])
def test_hub_id_offline_fails_in_one_line(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        list(get_benchmark(name).load(Path("lmms-lab/not-a-cached-dataset")))
    message = str(info.value)
    assert "lmms-lab/not-a-cached-dataset" in message and "\n" not in message


def test_textvqa_malformed_record_reported_with_index(tmp_path: Path) -> None:
    root = tmp_path / "textvqa"
    shutil.copytree(FIXTURES / "textvqa", root)
    file = root / "TextVQA_0.5.1_val.json"
    data = json.loads(file.read_text())
    del data["data"][1]["answers"]
    file.write_text(json.dumps(data))
    records, messages = load_warned("textvqa", root)
    assert [r.id for r in records] == ["101", "103"]
    assert messages == [f"textvqa: skipped malformed record at {file} data[1]: missing 'answers'"]
    with warnings.catch_warnings(), pytest.raises(MalformedRecordWarning, match=r"data\[1\]"):
        warnings.simplefilter("error", MalformedRecordWarning)  # what --strict does
        list(get_benchmark("textvqa").load(root))


def test_pope_malformed_lines_reported_with_line_numbers(tmp_path: Path) -> None:
    root = tmp_path / "pope"
    shutil.copytree(FIXTURES / "pope", root)
    file = root / "coco_pope_adversarial.json"
    lines = file.read_text().splitlines()
    lines[1] = lines[1][:-5]  # truncated JSON
    lines.append(json.dumps({"question_id": 9, "image": "x.jpg", "text": "Is there a cat?"}))  # no label
    lines.append(lines[0])  # duplicate id
    file.write_text("\n".join(lines) + "\n")
    records, messages = load_warned("pope", root, split="adversarial")
    assert [r.id for r in records] == ["adversarial/1", "adversarial/3"]
    assert [m.split(": ")[1] for m in messages] == [
        f"skipped malformed record at {file}:2",
        f"skipped malformed record at {file}:4",
        f"skipped malformed record at {file}:5",
    ]
    assert "not valid JSON" in messages[0] and "missing 'label'" in messages[1] and "duplicate" in messages[2]


def test_gqa_and_scienceqa_malformed_records(tmp_path: Path) -> None:
    root = tmp_path / "gqa"
    shutil.copytree(FIXTURES / "gqa", root)
    file = root / "testdev_balanced_questions.json"
    data = json.loads(file.read_text())
    data["202"]["answer"] = 3
    file.write_text(json.dumps(data))
    records, messages = load_warned("gqa", root)
    assert [r.id for r in records] == ["201", "203"]
    assert messages == [f"gqa: skipped malformed record at {file} ['202']: 'answer' is int, expected str"]

    root = tmp_path / "scienceqa"
    shutil.copytree(FIXTURES / "scienceqa", root)
    file = root / "problems.json"
    data = json.loads(file.read_text())
    data["3"]["answer"] = 7
    file.write_text(json.dumps(data))
    records, messages = load_warned("scienceqa", root)
    assert [r.id for r in records] == ["1"]
    assert len(messages) == 1 and f"{file} ['3']" in messages[0] and "answer index 7" in messages[0]


def test_mme_malformed_line_reported_with_line_number(tmp_path: Path) -> None:
    root = tmp_path / "mme"
    shutil.copytree(MME_ROOT, root)
    txt = root / "existence" / "e2.txt"
    txt.write_text("Is there a blue square? Please answer yes or no.\tMaybe\nno tab here\n")
    records, messages = load_warned("mme", root, split="existence")
    assert [r.id for r in records] == ["existence/e1.png/0", "existence/e1.png/1"]
    assert [m.split(": ")[1] for m in messages] == [
        f"skipped malformed record at {txt}:1",
        f"skipped malformed record at {txt}:2",
    ]


def test_invalid_json_file_is_fatal_with_position(tmp_path: Path) -> None:
    root = tmp_path / "gqa"
    shutil.copytree(FIXTURES / "gqa", root)
    (root / "testdev_balanced_questions.json").write_text('{"1": {"question": \n')
    with pytest.raises(InputError, match=r"testdev_balanced_questions.json:2:1: not valid JSON"):
        list(get_benchmark("gqa").load(root))


def test_parquet_without_expected_columns(tmp_path: Path) -> None:
    write_parquet(tmp_path / "x.parquet", [{"prompt": "hi", "image": png()}])
    with pytest.raises(InputError, match=r"has no column\(s\) question_id, question, answers"):
        list(get_benchmark("textvqa").load(tmp_path))


def test_unreadable_embedded_image_becomes_a_failing_reference(tmp_path: Path) -> None:
    junk = {"bytes": b"junk", "path": None}
    rows = [{"question_id": 1, "question": "q?", "answers": ["a"] * 10, "image": junk}]
    write_parquet(tmp_path / "t.parquet", rows)
    (record,) = load("textvqa", tmp_path)
    (image,) = record.images
    assert isinstance(image, str) and "t.parquet row 0" in image
    with pytest.raises(InputError):
        load_image(image)
