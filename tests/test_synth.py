"""The offline `synth` benchmark: determinism, answers re-derived independently from scenes and pixels,
evidence patches, balance, scoring and speed."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from duet_cli.benchmarks.base import Record
from duet_cli.benchmarks.registry import get_benchmark
from duet_cli.benchmarks.synth import (
    BENCHMARK,
    SPLITS,
    SynthBenchmark,
    extract_choice,
    record_from_id,
    scene_for,
)
from duet_cli.benchmarks.synth_scene import COLORS, FONT, Scene, render
from duet_cli.errors import UsageError

PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross"}
MARGIN = 28


@pytest.fixture(scope="module")
def test_records() -> list[Record]:
    return list(BENCHMARK.load(None, "test"))


# --- an independent checker: answers re-derived from the scene list and the rendered pixels ---------------


def pixel_color(image: np.ndarray, obj: dict) -> str:
    """The named colour of an object, read off the image at a point inside it and clear of any glyph."""
    cx, cy = obj["x"] + obj["size"] // 2, obj["y"] + obj["size"] // 2
    y = obj["y"] + 3 if obj["glyph"] else cy  # a glyph sits at the centre; the top edge is clear
    rgb = tuple(int(v) for v in image[y, cx])
    names = [name for name, value in COLORS.items() if value == rgb]
    assert len(names) == 1, f"pixel {rgb} at ({cx}, {y}) is no palette colour"
    return names[0]


def read_glyph(image: np.ndarray, obj: dict, background: tuple) -> str:
    """Decode the glyph from the pixels: ink = neither the fill nor the background, matched to the font."""
    x, y, s = obj["x"], obj["y"], obj["size"]
    box = image[y : y + s, x : x + s].reshape(-1, 3)
    fill = np.array(COLORS[obj["color"]])
    ink = ~(box == fill).all(1) & ~(box == np.array(background)).all(1)
    ink = ink.reshape(s, s)
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert crop.shape[0] % 4 == 0 and crop.shape[1] % 4 == 0
    small = crop[::4, ::4]
    matches = []
    for ch, pattern in FONT.items():
        bits = np.array([[c == "#" for c in line] for line in pattern])
        r, c = np.nonzero(bits)
        if np.array_equal(bits[r.min() : r.max() + 1, c.min() : c.max() + 1], small):
            matches.append(ch)
    assert len(matches) == 1, matches
    return matches[0]


def center(obj: dict) -> tuple[float, float]:
    return obj["x"] + obj["size"] / 2, obj["y"] + obj["size"] / 2


def side(a: dict, b: dict, rel: str) -> float:
    (ax, ay), (bx, by) = center(a), center(b)
    return {"to the left of": bx - ax, "to the right of": ax - bx, "above": by - ay, "below": ay - by}[rel]


def size_word(obj: dict) -> str:
    s = obj["size"]
    return "small" if s <= 44 else "medium" if s <= 70 else "large"


def find(objs: list[dict], phrase: str, colors: list[str]) -> list[dict]:
    """Objects matching 'red circle', 'red object', 'circle' or 'small circle' (colours read from pixels)."""
    words = phrase.split()
    out = []
    for o, color in zip(objs, colors):
        if words[-1] not in ("object", o["shape"]):
            continue
        if len(words) == 2 and words[0] not in (color, size_word(o)):
            continue
        out.append(o)
    return out


def derive(scene: Scene, image: np.ndarray, question: str, choices: list[str] | None) -> str:
    """The answer to a question, computed without the generator's question code."""
    objs = scene.to_dict()["objects"]
    colors = [pixel_color(image, o) for o in objs]
    q = question.split("\n")[0]
    if m := re.fullmatch(r"How many (\w+) are there\?", q):
        if m[1] == "shapes":
            return str(len(objs))
        return str(sum(o["shape"] == PLURAL[m[1]] for o in objs))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", q):
        return "yes" if find(objs, f"{m[1]} {m[2]}", colors) else "no"
    if m := re.fullmatch(r"(?:What|Which) (letter|number) is written on the (\w+ \w+)\?", q):
        (target,) = find(objs, m[2], colors)
        value = read_glyph(image, target, scene.background)
        assert value.isdigit() == (m[1] == "number")
        return value
    if m := re.fullmatch(r"(?:What|Which) shape is the (\w+ object)\?", q):
        (target,) = find(objs, m[1], colors)
        return target["shape"]
    rels = "to the left of|to the right of|above|below"
    if m := re.fullmatch(rf"Is the (\w+ \w+) ({rels}) the (\w+ \w+)\?", q):
        (a,), (b,) = find(objs, m[1], colors), find(objs, m[3], colors)
        d = side(a, b, m[2])
        assert abs(d) >= MARGIN, "relation asked about nearly aligned centres"
        return "yes" if d > 0 else "no"
    if m := re.fullmatch(rf"What color is the shape ({rels}) the (\w+ \w+)\?", q):
        (b,) = find(objs, m[2], colors)
        hits = [o for o in objs if o is not b and side(o, b, m[1]) >= MARGIN]
        near = [o for o in objs if o is not b and abs(side(o, b, m[1])) < MARGIN]
        assert len(hits) == 1 and not near, "open relation is ambiguous"
        return colors[objs.index(hits[0])]
    if m := re.fullmatch(r"(?:What|Which) color is the ([\w ]+)\?", q):
        (target,) = find(objs, m[1], colors)
        return colors[objs.index(target)]
    raise AssertionError(f"unrecognised question {q!r}")


def check_record(record: Record) -> None:
    meta = record.meta
    scene = scene_for(meta["split"], meta["image_index"])
    image = np.asarray(record.images[0])
    choices = meta.get("choices")
    derived = derive(scene, image, record.question, choices)
    if choices:
        assert len(set(choices)) == 4
        assert choices["ABCD".index(record.answers[0])] == derived, record.id
    else:
        assert record.answers == [derived], record.id


# --- tests ---------------------------------------------------------------------------------------------


def test_registry_and_contract() -> None:
    bench = get_benchmark("synth")
    assert bench is BENCHMARK and bench.name == "synth" and "--data" in bench.layout
    record = next(bench.load(None, None, 1))
    assert record.id == "synth-test-000000-q0"
    assert record.images[0].size == (336, 336) and record.images[0].mode == "RGB"
    with pytest.raises(UsageError, match="Did you mean: test"):
        next(bench.load(None, "tset"))


def test_sizes_and_limits(test_records: list[Record]) -> None:
    assert len(test_records) == 1000 and len({r.id for r in test_records}) == 1000
    assert sum(1 for _ in BENCHMARK.load(None, "val")) == 500
    assert [r.id for r in BENCHMARK.load(None, "test", limit=3)] == [r.id for r in test_records[:3]]
    assert sum(1 for _ in BENCHMARK.conversations("val", limit=SPLITS["val"] + 5)) == SPLITS["val"]
    assert sum(1 for _ in BENCHMARK.conversations("train", limit=7)) == 7


def test_determinism_bytes_and_records(test_records: list[Record]) -> None:
    again = list(SynthBenchmark().load(None, "test", limit=40))
    for a, b in zip(test_records[:40], again):
        assert (a.id, a.question, a.answers, a.meta) == (b.id, b.question, b.answers, b.meta)
        assert a.images[0].tobytes() == b.images[0].tobytes()
    # golden digest: identical bytes on every machine and Python/numpy/Pillow version
    digest = hashlib.sha256()
    for r in test_records[:20]:
        digest.update(r.images[0].tobytes() if r.id.endswith(("q0", "q2", "q4")) else b"")
        digest.update(f"{r.id}|{r.question}|{r.answers}|{r.meta['evidence_patches']}".encode())
    assert digest.hexdigest()[:16] == GOLDEN


GOLDEN = "999abc9d87f0f87e"


def test_splits_disjoint_and_seed_changes_data() -> None:
    def scenes(split: str, n: int, seed: int = 0) -> set[str]:
        return {repr(scene_for(split, i, seed)) for i in range(n)}

    train, val, test = scenes("train", 300), scenes("val", 250), scenes("test", 300)
    assert len(train) == 300 and len(val) == 250 and len(test) == 300
    assert not (train & val) and not (train & test) and not (val & test)
    assert not scenes("test", 50) & scenes("test", 50, seed=1)


def test_record_from_id_reproduces(test_records: list[Record]) -> None:
    for r in test_records[::97]:
        again = record_from_id(r.id)
        assert (again.question, again.answers, again.meta) == (r.question, r.answers, r.meta)
        assert again.images[0].tobytes() == r.images[0].tobytes()
    with pytest.raises(UsageError):
        record_from_id("synth-test-12-q9")


def test_answers_rederived_independently(test_records: list[Record]) -> None:
    for r in test_records[:400]:
        check_record(r)


def test_conversation_answers_rederived() -> None:
    for index, (image, turns) in enumerate(BENCHMARK.conversations("train", limit=40)):
        assert len(turns) == 6
        scene = scene_for("train", index)
        pixels = np.asarray(image)
        assert image.tobytes() == render(scene).tobytes()
        for question, answer in turns:
            choices = re.findall(r"^[ABCD]\. (.+)$", question, flags=re.MULTILINE) or None
            derived = derive(scene, pixels, question, choices)
            assert (choices["ABCD".index(answer)] if choices else answer) == derived


def test_evidence_patches(test_records: list[Record]) -> None:
    for r in test_records[:300]:
        patches = r.meta["evidence_patches"]
        assert all(1 <= p <= 576 for p in patches) and patches == sorted(set(patches))
        scene = scene_for(r.meta["split"], r.meta["image_index"])
        image = np.asarray(r.images[0])
        for i in r.meta["objects"]:
            o = scene.objects[i]
            cx, cy = o.x + o.size // 2, o.y + o.size // 2
            assert (cy // 14) * 24 + cx // 14 + 1 in patches
            # every pixel the object painted lies in an evidence patch
            box = image[o.y : o.y + o.size, o.x : o.x + o.size]
            ys, xs = np.nonzero((box != np.array(scene.background)).any(-1))
            painted = {((o.y + y) // 14) * 24 + (o.x + x) // 14 + 1 for y, x in zip(ys, xs)}
            assert painted <= set(patches)
        if r.meta["type"] == "read":
            assert set(r.meta["glyph_patches"]) <= set(patches) and len(r.meta["glyph_patches"]) <= 9


def test_type_and_yes_no_balance(test_records: list[Record]) -> None:
    types = [r.meta["type"] for r in test_records]
    for kind in ("read", "exist", "attribute", "relation", "count", "choice"):
        assert abs(types.count(kind) - len(types) / 6) <= 2
    for kind in ("exist", "relation", None):
        yes_no = [
            r.answers[0]
            for r in test_records
            if r.answers[0] in ("yes", "no") and (kind is None or r.meta["type"] == kind)
        ]
        assert abs(yes_no.count("yes") / len(yes_no) - 0.5) <= 0.10, kind
    forms = {(r.meta["type"], r.meta["form"]) for r in test_records}
    assert {("exist", "binding"), ("exist", "color"), ("exist", "shape"), ("relation", "open")} <= forms
    assert {("choice", "glyph"), ("choice", "color"), ("attribute", "color"), ("count", "total")} <= forms

    # fine detail: many answers hinge on a small object
    def only_small(r: Record) -> bool:
        objs = scene_for("test", r.meta["image_index"]).objects
        return bool(r.meta["objects"]) and all(objs[i].size <= 44 for i in r.meta["objects"])

    assert sum(map(only_small, test_records)) >= 250


def _record(kind: str, answer: str, choices: list[str] | None = None) -> Record:
    meta = {"type": kind, **({"choices": choices} if choices else {})}
    return Record(f"r{kind}{answer}", "q", [], [answer], meta)


def test_scoring_hand_computed() -> None:
    opts = ["red", "blue", "green", "yellow"]
    cases = [
        (_record("read", "K"), "k.", True),
        (_record("read", "7"), "seven", True),
        (_record("read", "7"), "1", False),
        (_record("exist", "yes"), "Yes, there is.", True),
        (_record("exist", "no"), "yes", False),
        (_record("attribute", "red"), "The red.", True),
        (_record("count", "2"), "two", True),
        (_record("count", "2"), None, False),
        (_record("choice", "B", opts), "(B)", True),
        (_record("choice", "B", opts), "blue", True),
        (_record("choice", "B", opts), "a red one", False),
        (_record("relation", "no"), "No", True),
    ]
    records = [c[0] for c in cases]
    score = BENCHMARK.score(records, [c[1] for c in cases])
    assert score.count == 12 and score.headline_name == "accuracy"
    assert score.headline == pytest.approx(100 * 8 / 12)
    assert score.metrics["read/acc"] == pytest.approx(200 / 3)
    assert score.metrics["exist/acc"] == 50.0 and score.metrics["exist/yes_ratio"] == 100.0
    assert score.metrics["count/acc"] == 50.0 and score.metrics["choice/acc"] == pytest.approx(200 / 3)
    assert score.metrics["failed"] == 1.0
    with pytest.raises(ValueError):
        BENCHMARK.score(records, [])


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("B. blue", "B"),
        ("The answer is B.", "B"),
        ("blue", "B"),
        ("a", "A"),
        ("a blue square", None),
        ("E", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text, ["red", "blue", "green", "yellow"]) == letter
