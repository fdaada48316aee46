"""Benchmark metrics as their official evaluation scripts define them: pure functions on strings.

Each function's docstring names the definition it follows and any deliberate deviation from it.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable, Sequence
from typing import Literal

YesNo = Literal["yes", "no"]

# --- VQA answer normalization (TextVQA) -------------------------------------------------------------

# Punctuation the VQA evaluation handles word-wise; the apostrophe, colon and period are not in it (the
# period has its own rule below, the apostrophe belongs to contractions).
_VQA_PUNCT = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The reference script means "a period not between digits"; as written it removes every period that is
# not followed by a digit ("3.5" and ".5" keep theirs, "end." and "e.g." lose theirs). We do the same.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Contractions as people type them without apostrophes. Forms whose apostrophe-less spelling is itself
# an English word ("its", "lets", "id", "ill", "well", "were", "wed", "shed", "hell", "shell") are left
# out, so "its" and "it's" stay different answers.
_CONTRACTIONS_TEXT = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
    "haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am "
    "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't "
    "she'd've she's should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's "
    "someone'd someone'd've someone'll someone's something'd something'd've something'll that's "
    "there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've "
    "we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've "
    "who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll "
    "y'all'd've you'd you'd've you'll you're you've"
)


def _contraction_table(forms: Iterable[str]) -> dict[str, str]:
    """Every spelling of each contraction with some (or all) of its apostrophes dropped -> the full form."""
    table: dict[str, str] = {}
    for full in forms:
        positions = [i for i, ch in enumerate(full) if ch == "'"]
        for r in range(1, len(positions) + 1):
            for dropped in itertools.combinations(positions, r):
                table["".join(ch for i, ch in enumerate(full) if i not in dropped)] = full
    return table


_CONTRACTIONS = _contraction_table(_CONTRACTIONS_TEXT.split())


def _vqa_punctuation(text: str) -> str:
    # A mark touching a space is deleted, otherwise it separates words ("red/blue" -> "red blue"); when the
    # answer holds a digit-comma-digit ("1,000") every mark is deleted, so numbers keep together.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _VQA_PUNCT:
        if delete_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def _vqa_digits_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def normalize_vqa_answer(text: str) -> str:
    """The VQA answer normalization (VQA evaluation, `vqaEval.py`: processPunctuation + processDigitArticle).

    1. newlines and tabs become spaces, the ends are stripped;
    2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: deleted where it touches a space or when
       the answer contains digit,digit ("1,000" -> "1000"), otherwise replaced by a space;
       a period is deleted unless a digit follows it ("3.5" kept, "end." -> "end");
    3. lowercase; number words zero..ten (and "none") -> digits; articles a/an/the dropped;
       apostrophe-less contractions restored ("dont" -> "don't").
    Deviation: the reference table writes a few contractions with a capital I ("I'm"); ours is lowercase,
    so "im" and "i'm" match each other.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digits_articles(_vqa_punctuation(text))


def vqa_accuracy(prediction: str | None, answers: Sequence[str]) -> float:
    """VQA accuracy in [0, 1]: mean over the leave-one-out subsets of the human answers of min(#matches/3, 1).

    Definition: VQA (Antol et al. 2015) and its evaluation script, as used by TextVQA: for each of the 10
    annotators, count how many of the *other* 9 answers equal the normalized prediction, take
    min(count / 3, 1), and average the 10 values. Both prediction and human answers are normalized with
    `normalize_vqa_answer` (as lmms-eval and the EvalAI TextVQA evaluator do; the raw TextVQA answers are
    not pre-normalized). With a single human answer this reduces to exact match. None (a failed record)
    scores 0.
    """
    if prediction is None or not answers:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    if len(gts) == 1:
        return float(gts[0] == pred)
    matches = sum(g == pred for g in gts)
    # Leaving out a matching answer leaves matches-1; leaving out another leaves all matches.
    total = sum(min(1.0, (matches - (g == pred)) / 3.0) for g in gts)
    return total / len(gts)


# --- POPE -------------------------------------------------------------------------------------------


def parse_pope_answer(text: str) -> YesNo:
    """POPE's yes/no rule (POPE `evaluate.py`, also LLaVA's `eval_pope.py`).

    Keep the text before the first period, delete commas, split into words: if a word is "no" or "not"
    the answer is "no", otherwise "yes" (an empty answer counts as "yes", as in the reference).
    Deviation: words are compared lowercased and split on any whitespace (the reference splits on spaces
    and checks "No", "no", "not" only).
    """
    first = text.split(".", 1)[0]
    words = {w.lower() for w in first.replace(",", "").split()}
    return "no" if words & {"no", "not"} else "yes"


def binary_metrics(predictions: Sequence[YesNo | None], labels: Sequence[YesNo]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio in [0, 1], "yes" being the positive class (POPE).

    precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2PR/(P+R), accuracy = (TP+TN)/N,
    yes_ratio = (TP+FP)/N. A failed prediction (None) counts as the wrong answer (a "no" on a "yes"
    question, a "yes" on a "no" one). A ratio whose denominator is 0 is 0.
    """
    tp = fp = tn = fn = 0
    for pred, label in zip(predictions, labels, strict=True):
        if pred is None:
            pred = "no" if label == "yes" else "yes"
        if pred == "yes" and label == "yes":
            tp += 1
        elif pred == "yes":
            fp += 1
        elif label == "no":
            tn += 1
        else:
            fn += 1
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
    }


# --- GQA --------------------------------------------------------------------------------------------

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_gqa_answer(text: str) -> str:
    """GQA answer normalization: lmms-eval's exact_match with ignore_case and ignore_punctuation.

    Lowercase, delete every ASCII punctuation character, then (beyond lmms-eval) drop the articles
    a/an/the and collapse whitespace. GQA's gold answers are bare words without articles, so the extra
    steps only forgive "The table." for "table".
    """
    words = text.lower().translate(_PUNCT_TABLE).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def gqa_match(prediction: str | None, answer: str) -> bool:
    """GQA exact match (the official GQA accuracy) after `normalize_gqa_answer` on both sides."""
    return prediction is not None and normalize_gqa_answer(prediction) == normalize_gqa_answer(answer)


# --- ScienceQA --------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"\banswer(?:\s+is)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_BARE = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_LEADING = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)])\s")


def extract_choice_letter(text: str | None, num_choices: int) -> str | None:
    """The option letter a prediction names, or None (ScienceQA letter accuracy, as in LLaVA's eval).

    Rules, first match wins, the letter must be one of the first `num_choices` letters:
    1. "The answer is B" / "Answer: (B)" / "answer is B." (phrase in any case; the letter must be a
       capital, so "the answer is a cat" names no option);
    2. the whole prediction is a letter, optionally in parentheses or followed by . : or ) ("B", "b",
       "(B)", "B.");
    3. the prediction starts with an option label then a space: "B. text", "B) text", "B: text", "(B) text".
    """
    if text is None:
        return None
    t = text.strip()
    valid = string.ascii_uppercase[:num_choices]
    m = _ANSWER_IS.search(t)
    if m and m.group(1).isupper() and m.group(1) in valid:
        return m.group(1)
    m = _BARE.match(t)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    m = _LEADING.match(t)
    if m:
        letter = m.group(1) or m.group(2)
        if letter in valid:
            return letter
    return None


# --- MME --------------------------------------------------------------------------------------------

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse_mme_answer(text: str | None) -> Literal["yes", "no", "other"]:
    """MME's yes/no rule (MME `eval_tool/calculation.py`, `parse_pred_ans`; lmms-eval uses the same).

    Lowercase (and strip); "yes" or "no" as the whole answer is taken as is; otherwise look at the first 4
    characters: "yes" in them -> yes, else "no" in them -> no, else "other" (always wrong).
    """
    if text is None:
        return "other"
    t = text.strip().lower()
    if t in ("yes", "no"):
        return t  # type: ignore[return-value]
    prefix = t[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_scores(results: Sequence[tuple[str, str, bool]]) -> dict[str, float]:
    """MME scores from (subtask, image, correct) per question (MME paper and `calculation.py`).

    Per subtask: acc = % of questions right; acc_plus = % of images whose questions (two per image in MME)
    are all right; score = acc + acc_plus (max 200). perception = sum of the scores of the 10 perception
    subtasks, cognition = sum over the 4 cognition subtasks (max 2000 and 800); a subtask with no
    questions scored contributes nothing. Keys: "<subtask>/acc", "<subtask>/acc_plus",
    "<subtask>/score", "perception", "cognition".
    """
    questions: dict[str, list[bool]] = {}
    images: dict[str, dict[str, bool]] = {}
    for subtask, image, correct in results:
        questions.setdefault(subtask, []).append(correct)
        per_image = images.setdefault(subtask, {})
        per_image[image] = per_image.get(image, True) and correct
    out: dict[str, float] = {}
    for subtask, marks in questions.items():
        acc = 100.0 * sum(marks) / len(marks)
        acc_plus = 100.0 * sum(images[subtask].values()) / len(images[subtask])
        out[f"{subtask}/acc"] = acc
        out[f"{subtask}/acc_plus"] = acc_plus
        out[f"{subtask}/score"] = acc + acc_plus
    out["perception"] = sum(out.get(f"{s}/score", 0.0) for s in MME_PERCEPTION)
    out["cognition"] = sum(out.get(f"{s}/score", 0.0) for s in MME_COGNITION)
    return out
