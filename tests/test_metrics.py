"""Benchmark metrics against hand-worked cases from their official definitions."""

from __future__ import annotations

import pytest

from duet_cli.benchmarks.metrics import (
    binary_metrics,
    extract_choice_letter,
    gqa_match,
    mme_scores,
    normalize_gqa_answer,
    normalize_vqa_answer,
    parse_mme_answer,
    parse_pope_answer,
    vqa_accuracy,
)

# --- VQA accuracy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        # 1 match: leaving it out leaves 0 (x1); leaving out any of the 9 others leaves 1 -> 1/3 (x9).
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        # 2 matches: leaving one of them out leaves 1 -> 1/3 (x2); otherwise 2 -> 2/3 (x8).
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        # 3 matches: leaving one out leaves 2 -> 2/3 (x3); otherwise 3 -> 1 (x7).
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        # 4 matches: at least 3 remain in every subset.
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matches: int, expected: float) -> None:
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_hand_values() -> None:
    assert vqa_accuracy("x", ["x", "x"] + ["y"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("x", ["x"] * 3 + ["y"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("x", ["x"] + ["y"] * 9) == pytest.approx(0.3)


def test_vqa_accuracy_normalizes_both_sides() -> None:
    # "Two" -> "2"; the human answers "two", "2", "2." all normalize to "2": 3 matches -> 0.9
    answers = ["two", "2", "2."] + ["3"] * 7
    assert vqa_accuracy("Two", answers) == pytest.approx(0.9)
    assert vqa_accuracy("A Dog.", ["dog"] * 10) == 1.0


def test_vqa_accuracy_failed_and_single_answer() -> None:
    assert vqa_accuracy(None, ["a"] * 10) == 0.0
    assert vqa_accuracy("stop", ["Stop"]) == 1.0
    assert vqa_accuracy("go", ["stop"]) == 0.0


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("two dogs", "2 dogs"),
        ("a dog", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("it's", "it's"),
        ("its", "its"),  # "its" is a word, never rewritten to "it's"
        ("im", "i'm"),
        ("couldntve", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("end.", "end"),  # a period before no digit goes
        ("e.g.", "eg"),
        ("1,000", "1000"),  # digit,digit: marks deleted, the number stays whole
        ("red, blue", "red blue"),  # a mark next to a space is deleted
        ("red/blue", "red blue"),  # a mark between letters becomes a space
        ("Coca-Cola!", "coca cola"),
        ("yes!", "yes"),
        ("  hello\tworld\n", "hello world"),
        ("What's up?", "what's up"),
    ],
)
def test_normalize_vqa_answer(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


def test_its_and_it_s_stay_different() -> None:
    assert vqa_accuracy("its", ["it's"] * 10) == 0.0


# --- POPE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"),
        ("yes, there is a dog.", "yes"),
        ("No", "no"),
        ("No, there is not.", "no"),
        ("There is no dog.", "no"),
        ("I do not see a dog", "no"),
        ("Not sure", "no"),
        ("NO", "no"),  # deviation: words compared lowercased
        ("There is a dog. No other animals.", "yes"),  # only the first sentence counts
        ("Nothing like that", "yes"),  # "nothing" is not the word "no"
        ("", "yes"),
    ],
)
def test_parse_pope_answer(text: str, parsed: str) -> None:
    assert parse_pope_answer(text) == parsed


def test_pope_confusion_matrix() -> None:
    labels = ["yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no"]
    raw: list[str | None] = [
        "Yes, there is a dog.",  # TP
        "Yes",  # TP
        "No, there is not.",  # FN
        "There is a cat in the image.",  # TP
        "No.",  # TN
        "I do not see one",  # TN
        "Yes",  # FP
        None,  # failed on a "no" question: counted as the wrong answer, FP
        "no",  # TN
        "There is no. Yes",  # TN (first sentence only)
    ]
    preds = [parse_pope_answer(t) if t is not None else None for t in raw]
    m = binary_metrics(preds, labels)  # type: ignore[arg-type]
    # TP=3 FP=2 TN=4 FN=1
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))  # 0.6667
    assert m["yes_ratio"] == pytest.approx(5 / 10)


def test_binary_metrics_empty_denominators() -> None:
    m = binary_metrics(["no", "no"], ["no", "yes"])
    assert m == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}


# --- GQA --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "match"),
    [
        ("Yes.", "yes", True),
        ("The table", "table", True),
        ("left", "left", True),
        ("T-shirt", "t-shirt", True),
        ("on the left", "left", False),
        ("tables", "table", False),
        (None, "yes", False),
    ],
)
def test_gqa_match(pred: str | None, gold: str, match: bool) -> None:
    assert gqa_match(pred, gold) is match


def test_normalize_gqa_answer() -> None:
    assert normalize_gqa_answer("  The  Red, car!  ") == "red car"


# --- ScienceQA --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        (" C\n", "C"),
        ("The answer is B.", "B"),
        ("The answer is (C)", "C"),
        ("Answer: A", "A"),
        ("B. soft", "B"),
        ("(B) soft", "B"),
        ("D) fish", "D"),
        ("E", None),  # only 4 options
        ("The answer is a cat", None),  # lowercase 'a' after the phrase is a word, not an option
        ("a cat", None),
        ("soft", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_choice_letter(text: str | None, letter: str | None) -> None:
    assert extract_choice_letter(text, 4) == letter


# --- MME --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes, it is.", "yes"),
        ("No, it is not.", "no"),
        ("Not at all", "no"),  # "no" within the first four characters
        ("The answer is yes", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_parse_mme_answer(text: str | None, parsed: str) -> None:
    assert parse_mme_answer(text) == parsed


def test_mme_acc_plus_with_image_pairs() -> None:
    results = [
        ("existence", "1.png", True),
        ("existence", "1.png", True),  # image 1: both right
        ("existence", "2.png", True),
        ("existence", "2.png", False),  # image 2: one right
        ("existence", "3.png", False),
        ("existence", "3.png", False),  # image 3: none right
        ("count", "1.png", True),
        ("count", "1.png", True),
        ("count", "2.png", True),
        ("count", "2.png", True),
        ("code_reasoning", "1.png", True),
        ("code_reasoning", "1.png", False),
    ]
    s = mme_scores(results)
    # existence: acc 3/6 = 50, acc+ 1/3 = 33.33, score 83.33
    assert s["existence/acc"] == pytest.approx(50.0)
    assert s["existence/acc_plus"] == pytest.approx(100 / 3)
    assert s["existence/score"] == pytest.approx(50 + 100 / 3)
    assert s["count/score"] == pytest.approx(200.0)
    assert s["code_reasoning/acc"] == pytest.approx(50.0)
    assert s["code_reasoning/acc_plus"] == pytest.approx(0.0)
    assert s["perception"] == pytest.approx(50 + 100 / 3 + 200)
    assert s["cognition"] == pytest.approx(50.0)
