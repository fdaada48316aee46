"""The offline `synth` benchmarks: seeded scenes of coloured shapes and glyphs, six question types that
mirror TextVQA, POPE, GQA and ScienceQA, scored by exact match. `synth` is the fine-detail scale,
`synth-large` the same generator at a scale a small tower can read. See docs/synth.md.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from duet_cli.benchmarks.base import Benchmark, Record, Score
from duet_cli.benchmarks.synth_questions import OPTION_LETTERS, QA, TYPES, make_questions
from duet_cli.benchmarks.synth_scene import (
    SYNTH,
    SYNTH_LARGE,
    Geometry,
    Scene,
    box_patches,
    generate_scene,
    object_patches,
    render,
)
from duet_cli.errors import UsageError

SPLITS = {"train": 50_000, "val": 250, "test": 500}  # images; the train stream may be read further
EVAL_QUESTIONS = 2  # records per image in load(): types rotate so each is 1/6 of a split
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Variant:
    """A synth benchmark: its name is the benchmark name, the id prefix and the root of its seed streams."""

    name: str
    geometry: Geometry
    description: str


FINE = Variant(
    "synth",
    SYNTH,
    "Offline, generated from a seed: shapes, colours and small glyphs at 336 px; read / exist / "
    "attribute / relation / count / choice questions; exact-match accuracy.",
)
LARGE = Variant(
    "synth-large",
    SYNTH_LARGE,
    "Offline, generated from a seed: synth's questions at a legible scale (objects >= 4 x 4 patches, "
    "glyphs at twice synth's size, 2-4 objects); exact-match accuracy.",
)
VARIANTS = {v.name: v for v in (FINE, LARGE)}
_ID = re.compile(rf"^({'|'.join(map(re.escape, VARIANTS))})-(train|val|test)-(\d+)-q(\d)$")


def scene_key(split: str, index: int, seed: int = DEFAULT_SEED, variant: Variant = FINE) -> str:
    """The string every random stream of one image derives from (random.Random hashes it with SHA-512)."""
    return f"{variant.name}:{seed}:{split}:{index}"


def scene_for(split: str, index: int, seed: int = DEFAULT_SEED, variant: Variant = FINE) -> Scene:
    return generate_scene(random.Random(scene_key(split, index, seed, variant)), variant.geometry)


def questions_for(
    scene: Scene, split: str, index: int, seed: int = DEFAULT_SEED, variant: Variant = FINE
) -> list[QA]:
    """All questions of an image, one per type in TYPES order (question k has id suffix -qk)."""
    return make_questions(scene, scene_key(split, index, seed, variant), index)


def eval_question_indices(index: int) -> list[int]:
    """Which of an image's questions load() yields: consecutive types, rotating from image to image."""
    return [(EVAL_QUESTIONS * index + j) % len(TYPES) for j in range(EVAL_QUESTIONS)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        close = difflib.get_close_matches(split, list(SPLITS), n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise UsageError(f"unknown synth split '{split}'.{hint} Available: {', '.join(SPLITS)}")


def make_record(
    split: str,
    index: int,
    k: int,
    scene: Scene,
    qa: QA,
    image: Image.Image,
    seed: int = DEFAULT_SEED,
    variant: Variant = FINE,
) -> Record:
    evidence = sorted({p for i in qa.objects for p in object_patches(scene.objects[i])})
    meta: dict[str, object] = {
        "type": qa.type,
        "form": qa.form,
        "split": split,
        "image_index": index,
        "question_index": k,
        "seed": seed,
        "objects": list(qa.objects),
        "evidence_patches": evidence,
    }
    if qa.type == "read":
        meta["glyph_patches"] = box_patches(*scene.objects[qa.objects[0]].glyph_box)
    if qa.choices:
        meta["choices"] = list(qa.choices)
    return Record(f"{variant.name}-{split}-{index:06d}-q{k}", qa.prompt, [image], [qa.answer], meta)


def record_from_id(record_id: str, seed: int = DEFAULT_SEED) -> Record:
    """Regenerate one record from its id, e.g. 'synth-test-000123-q2' (image 123 of test, question 2) or
    'synth-large-val-000007-q5'; the prefix names the variant."""
    match = _ID.match(record_id)
    if not match or int(match[4]) >= len(TYPES):
        raise UsageError(f"not a synth record id: '{record_id}' (expected e.g. synth-test-000123-q2)")
    variant, split, index, k = VARIANTS[match[1]], match[2], int(match[3]), int(match[4])
    scene = scene_for(split, index, seed, variant)
    qa = questions_for(scene, split, index, seed, variant)[k]
    return make_record(split, index, k, scene, qa, render(scene), seed, variant)


# --- scoring -------------------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, number words as digits."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def extract_choice(prediction: str, choices: Sequence[str]) -> str | None:
    """The option letter a prediction names: 'B', 'b', 'B.', '(B)', 'B. blue', 'The answer is B', 'blue'."""
    text = prediction.strip()
    letters = OPTION_LETTERS[: len(choices)]
    bare = text.strip(" .:)(*[]").upper()
    if len(bare) == 1 and bare in letters:
        return bare
    match = re.match(rf"^\(?([{letters}])(?:[.):]|\s|$)", text)  # uppercase only: 'a red' is no option
    if match:
        return match[1]
    match = re.search(rf"answer is:?\s*\(?([{letters}{letters.lower()}])\b", text, flags=re.IGNORECASE)
    if match:
        return match[1].upper()
    norm = normalize(text)
    hits = [letters[i] for i, c in enumerate(choices) if normalize(c) == norm]
    return hits[0] if len(hits) == 1 else None


def is_correct(record: Record, prediction: str | None) -> bool:
    if prediction is None:
        return False
    gold = record.answers[0]
    if record.meta.get("choices"):
        return extract_choice(prediction, record.meta["choices"]) == gold
    pred = normalize(prediction)
    if gold in ("yes", "no") and pred.split()[:1] in (["yes"], ["no"]):
        pred = pred.split()[0]  # "Yes, there is." counts as yes
    return pred == normalize(gold)


# --- the benchmark -------------------------------------------------------------------------------------


class SynthBenchmark:
    layout = "generated on the fly from a seed: no data needed, and `--data DIR` is ignored"

    def __init__(self, seed: int = DEFAULT_SEED, variant: Variant = FINE) -> None:
        self.seed, self.variant = seed, variant
        self.name, self.description = variant.name, variant.description

    def _images(self, split: str, limit: int | None) -> Iterator[tuple[int, Scene]]:
        _check_split(split)
        n = SPLITS[split] if limit is None else limit if split == "train" else min(limit, SPLITS[split])
        for index in range(n):
            yield index, scene_for(split, index, self.seed, self.variant)

    def load(
        self, root: Path | None = None, split: str | None = None, limit: int | None = None
    ) -> Iterator[Record]:
        """Records (EVAL_QUESTIONS per image, sharing one in-memory image); `root` is ignored."""
        split = split or "test"
        _check_split(split)
        emitted = 0
        for index, scene in self._images(split, None):
            image = render(scene)
            qas = questions_for(scene, split, index, self.seed, self.variant)
            for k in eval_question_indices(index):
                if limit is not None and emitted >= limit:
                    return
                yield make_record(split, index, k, scene, qas[k], image, self.seed, self.variant)
                emitted += 1

    def conversations(
        self, split: str = "train", limit: int | None = None, shuffle: bool = True
    ) -> Iterator[tuple[Image.Image, list[tuple[str, str]]]]:
        """(image, [(prompt, answer), ...]) with all six questions of each image, for multi-turn training.

        `limit` counts images and may exceed the train split's nominal 50,000 (the stream is unbounded).
        With `shuffle` the turn order is permuted per image (seeded), so no type sits at a fixed turn.
        """
        for index, scene in self._images(split, limit):
            qas = questions_for(scene, split, index, self.seed, self.variant)
            turns = [(qa.prompt, qa.answer) for qa in qas]
            if shuffle:
                random.Random(scene_key(split, index, self.seed, self.variant) + ":order").shuffle(turns)
            yield render(scene), turns

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        if len(records) != len(predictions):
            raise ValueError(f"{len(records)} records but {len(predictions)} predictions")
        right = [is_correct(r, p) for r, p in zip(records, predictions)]
        metrics: dict[str, float] = {}
        total = 100.0 * sum(right) / len(right) if right else 0.0
        metrics["accuracy"] = total
        for kind in TYPES:
            hits = [ok for r, ok in zip(records, right) if r.meta.get("type") == kind]
            if hits:
                metrics[f"{kind}/acc"] = 100.0 * sum(hits) / len(hits)
                metrics[f"{kind}/count"] = float(len(hits))
        exist = [normalize(p or "") for r, p in zip(records, predictions) if r.meta.get("type") == "exist"]
        if exist:
            metrics["exist/yes_ratio"] = 100.0 * sum(p.startswith("yes") for p in exist) / len(exist)
        metrics["failed"] = float(sum(p is None for p in predictions))
        return Score(headline=total, headline_name="accuracy", metrics=metrics, count=len(records))


BENCHMARK = SynthBenchmark()
LARGE_BENCHMARK = SynthBenchmark(variant=LARGE)  # the registry's `synth-large`
_conforms: Benchmark = BENCHMARK  # mypy checks the class against the protocol
