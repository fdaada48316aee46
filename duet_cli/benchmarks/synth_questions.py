"""Questions about a `synth` scene, one generator per type, each answer unambiguous by construction.

Referring expressions only name what is unique in the scene: colours always are (distinct per scene),
shapes and "size shape" phrases only when no other object matches. Spatial relations compare object
centres and are only asked when the centres differ by at least the scene geometry's `margin` pixels
on that axis (synth: 28, synth-large: 56).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from duet_cli.benchmarks.synth_scene import COLORS, DIGITS, LETTERS, PLURALS, SHAPES, SYNTH, Obj, Scene

TYPES = ("read", "exist", "attribute", "relation", "count", "choice")
MARGIN = SYNTH.margin  # synth's: 28 px, two patches; closer centres are never asked about
OPEN_SUFFIX = "\nAnswer the question using a single word or phrase."  # LLaVA-1.5's VQA/GQA/POPE suffix
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."  # LLaVA's ScienceQA
OPTION_LETTERS = "ABCD"

# relation phrase -> (axis, sign): A rel B holds when sign * (A - B) >= margin along the axis
RELATIONS = {"to the left of": ("x", -1), "to the right of": ("x", 1), "above": ("y", -1), "below": ("y", 1)}
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below"}
OPPOSITE["below"] = "above"


@dataclass(frozen=True)
class QA:
    """One question: `objects` are the indices (into scene.objects) of what the answer depends on."""

    type: str
    form: str
    question: str  # without the answer-format instruction
    answer: str
    objects: tuple[int, ...]
    choices: tuple[str, ...] = ()  # multiple choice: option texts in A-D order

    @property
    def prompt(self) -> str:
        """The full text the model sees."""
        if self.choices:
            options = "\n".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
            return f"{self.question}\n{options}{CHOICE_SUFFIX}"
        return self.question + OPEN_SUFFIX


def _name(o: Obj) -> str:
    return f"{o.color} {o.shape}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _glyph_kind(ch: str) -> str:
    return "letter" if ch in LETTERS else "number"


def describe_without_color(scene: Scene, i: int) -> str | None:
    """'circle' or 'small circle' when that picks out object i alone, else None."""
    o = scene.objects[i]
    if sum(p.shape == o.shape for p in scene.objects) == 1:
        return o.shape
    same = [p for p in scene.objects if p.shape == o.shape and p.size_class == o.size_class]
    return f"{o.size_class} {o.shape}" if len(same) == 1 else None


def _delta(a: Obj, b: Obj, axis: str) -> float:
    return a.cx - b.cx if axis == "x" else a.cy - b.cy


def holds(a: Obj, b: Obj, rel: str, margin: int = MARGIN) -> bool:
    axis, sign = RELATIONS[rel]
    return sign * _delta(a, b, axis) >= margin


def read(scene: Scene, rng: random.Random) -> QA:
    i = rng.choice([i for i, o in enumerate(scene.objects) if o.glyph])
    o = scene.objects[i]
    assert o.glyph is not None
    question = f"What {_glyph_kind(o.glyph)} is written on the {_name(o)}?"
    return QA("read", _glyph_kind(o.glyph), question, o.glyph, (i,))


def exist(scene: Scene, rng: random.Random, yes: bool) -> QA:
    objs = scene.objects
    evidence: tuple[int, ...]
    if yes:
        i = rng.randrange(len(objs))
        color, shape = objs[i].color, objs[i].shape
        form, evidence = "present", (i,)
    else:
        # Adversarial negatives (POPE-like): the colour or the shape asked about IS in the image.
        present = {(o.color, o.shape) for o in objs}
        colors, shapes = {o.color for o in objs}, {o.shape for o in objs}
        groups: dict[str, list[tuple[str, str]]] = {"binding": [], "color": [], "shape": []}
        for c in COLORS:
            for s in SHAPES:
                if (c, s) in present or (c not in colors and s not in shapes):
                    continue
                key = "binding" if c in colors and s in shapes else "color" if c in colors else "shape"
                groups[key].append((c, s))
        weights = {"binding": 2, "color": 1, "shape": 1}  # binding: both parts present, never together
        names = [k for k in groups if groups[k]]
        form = rng.choices(names, weights=[weights[k] for k in names])[0]
        color, shape = rng.choice(groups[form])
        evidence = tuple(i for i, o in enumerate(objs) if o.color == color or o.shape == shape)
    question = f"Is there {_article(color)} {color} {shape} in the image?"
    return QA("exist", form, question, "yes" if yes else "no", evidence)


def attribute(scene: Scene, rng: random.Random) -> QA:
    described = [(i, d) for i in range(len(scene.objects)) if (d := describe_without_color(scene, i))]
    if described and rng.random() < 0.5:
        i, desc = rng.choice(described)
        return QA("attribute", "color", f"What color is the {desc}?", scene.objects[i].color, (i,))
    i = rng.randrange(len(scene.objects))
    o = scene.objects[i]
    return QA("attribute", "shape", f"What shape is the {o.color} object?", o.shape, (i,))


def relation(scene: Scene, rng: random.Random, yes: bool, open_form: bool) -> QA:
    objs, margin = scene.objects, scene.geometry.margin
    # open form: "the shape REL the B" is asked only when exactly one object is clearly REL of B and
    # no other object's centre lies within the margin of B's on that axis
    open_items = []
    for j, b in enumerate(objs):
        for rel, (axis, _) in RELATIONS.items():
            others = [i for i in range(len(objs)) if i != j]
            hits = [i for i in others if holds(objs[i], b, rel, margin)]
            near = [i for i in others if abs(_delta(objs[i], b, axis)) < margin]
            if len(hits) == 1 and not near:
                open_items.append((hits[0], j, rel))
    if open_items and open_form:
        i, j, rel = rng.choice(open_items)
        question = f"What color is the shape {rel} the {_name(objs[j])}?"
        return QA("relation", "open", question, objs[i].color, (i, j))
    pairs = [
        (i, j, rel)
        for i in range(len(objs))
        for j in range(len(objs))
        for rel in RELATIONS
        if i != j and holds(objs[i], objs[j], rel, margin)
    ]  # never empty: two non-overlapping boxes' centres are > margin apart on some axis (Geometry checks)
    i, j, rel = rng.choice(pairs)
    asked = rel if yes else OPPOSITE[rel]
    question = f"Is the {_name(objs[i])} {asked} the {_name(objs[j])}?"
    return QA("relation", "yes/no", question, "yes" if yes else "no", (i, j))


def count(scene: Scene, rng: random.Random) -> QA:
    objs = scene.objects
    if rng.random() < 0.2:
        return QA("count", "total", "How many shapes are there?", str(len(objs)), tuple(range(len(objs))))
    present = sorted({o.shape for o in objs}, key=SHAPES.index)
    shape = rng.choice(present) if rng.random() < 0.85 else rng.choice(SHAPES)
    hits = tuple(i for i, o in enumerate(objs) if o.shape == shape)
    return QA("count", "shape", f"How many {PLURALS[shape]} are there?", str(len(hits)), hits)


def _options(rng: random.Random, correct: str, pool: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    options = [correct, *rng.sample([p for p in pool if p != correct], len(OPTION_LETTERS) - 1)]
    rng.shuffle(options)
    return tuple(options), OPTION_LETTERS[options.index(correct)]


def choice(scene: Scene, rng: random.Random) -> QA:
    objs = scene.objects
    described = [(i, d) for i in range(len(objs)) if (d := describe_without_color(scene, i))]
    forms = ["shape", "glyph"] + (["color"] if described else [])
    form = rng.choice(forms)
    if form == "color":
        i, desc = rng.choice(described)
        options, letter = _options(rng, objs[i].color, tuple(COLORS))
        question = f"Which color is the {desc}?"
    elif form == "shape":
        i = rng.randrange(len(objs))
        options, letter = _options(rng, objs[i].shape, SHAPES)
        question = f"Which shape is the {objs[i].color} object?"
    else:
        i = rng.choice([i for i, o in enumerate(objs) if o.glyph])
        glyph = objs[i].glyph
        assert glyph is not None
        options, letter = _options(rng, glyph, LETTERS if glyph in LETTERS else DIGITS)
        question = f"Which {_glyph_kind(glyph)} is written on the {_name(objs[i])}?"
    return QA("choice", form, question, letter, (i,), options)


def make_questions(scene: Scene, key: str, index: int) -> list[QA]:
    """One question per type, in TYPES order; question k draws from its own stream `{key}:q{k}`.

    Yes/no answers (and the relation form) come from bits of the image index rather than a coin, so they
    are balanced over consecutive images (also over every third image, as load() picks them), and the
    exist and relation answers of one image are independent of each other.
    """

    def rng(k: int) -> random.Random:
        return random.Random(f"{key}:q{k}")

    return [
        read(scene, rng(0)),
        exist(scene, rng(1), yes=index % 2 == 0),
        attribute(scene, rng(2)),
        relation(scene, rng(3), yes=(index // 2) % 2 == 0, open_form=(index // 4) % 2 == 1),
        count(scene, rng(4)),
        choice(scene, rng(5)),
    ]
