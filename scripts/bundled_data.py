"""Training conversations for the bundled model's decoder: `synth` train scenes with dense supervision.

The `synth` questions alone give a from-scratch decoder nothing to start from: every type is built so
that no shallow cue answers it (adversarial negatives, unique referring expressions), so answering
needs the question and the image together, and neither half pays off without the other. Each image
here is one conversation that starts with answers that depend on the image alone:

  1. "What colors are in the image?"   every colour present, in the fixed order of `COLORS`;
  2. "What shapes are in the image?"   every shape present, in the fixed order of `SHAPES`;
  3. "Describe the shapes from left to right."  "<size> <color> <shape> [<glyph>], ..." per object;

then, shuffled (seeded per image), up to six simpler questions (colour and shape existence without
adversarial negatives, "what shape is the <color> object", "what color is the <shape>", the number
of shapes, reading a glyph) and the image's six `synth` questions exactly as the benchmark asks them.
Scenes come from the `synth` train stream, so the test split stays unseen. The last training phase
shuffles all the turns (`lists_first=False`): a model that only ever saw the colour list right after
the image answers every first question with a list.

`DenseSource` hands them to `duet train`'s library entry point (`train(cfg, source=...)`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from duet_cli.benchmarks.synth import FINE, Variant, questions_for, scene_for
from duet_cli.benchmarks.synth_questions import OPEN_SUFFIX
from duet_cli.benchmarks.synth_scene import COLORS, LETTERS, SHAPES, Scene, render
from duet_cli.training.data import SYNTH_IMAGES, Conversation

COLOR_NAMES = list(COLORS)


def lists(scene: Scene) -> list[tuple[str, str, str]]:
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    return [
        ("colors", "What colors are in the image?", " ".join(c for c in COLOR_NAMES if c in colors)),
        ("shapes", "What shapes are in the image?", " ".join(s for s in SHAPES if s in shapes)),
    ]


def caption(scene: Scene) -> tuple[str, str, str]:
    objs = sorted(scene.objects, key=lambda o: 2 * o.x + o.size)  # by centre x
    parts = [f"{o.size_class} {o.color} {o.shape}" + (f" {o.glyph}" if o.glyph else "") for o in objs]
    return ("caption", "Describe the shapes from left to right.", ", ".join(parts))


def simple_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """Up to six questions without adversarial negatives (type, question with the VQA suffix, answer)."""
    objs = scene.objects
    colors = [o.color for o in objs]
    shapes = [o.shape for o in objs]
    out = []
    if rng.random() < 0.5:
        out.append(("exist_color", f"Is there a {rng.choice(colors)} shape in the image?", "yes"))
    else:
        absent = rng.choice([c for c in COLOR_NAMES if c not in colors])  # <= 6 of 7 colours are used
        out.append(("exist_color", f"Is there a {absent} shape in the image?", "no"))
    o = rng.choice(objs)
    out.append(("shape_of", f"What shape is the {o.color} object?", o.shape))
    unique = [o for o in objs if shapes.count(o.shape) == 1]
    if unique:
        o = rng.choice(unique)
        out.append(("color_of", f"What color is the {o.shape}?", o.color))
    else:
        o = rng.choice(objs)
        out.append(("shape_of", f"What shape is the {o.color} object?", o.shape))
    out.append(("count", "How many shapes are there?", str(len(objs))))
    if rng.random() < 0.5:
        s = rng.choice(shapes)
    else:
        s = rng.choice([s for s in SHAPES if s not in shapes]) if len(set(shapes)) < 4 else rng.choice(shapes)
    out.append(("exist_shape", f"Is there a {s} in the image?", "yes" if s in shapes else "no"))
    glyphs = [o for o in objs if o.glyph is not None]
    if glyphs:
        o = rng.choice(glyphs)
        kind = "letter" if o.glyph in LETTERS else "number"
        out.append(("read", f"What {kind} is written on the {o.color} {o.shape}?", str(o.glyph)))
    return [(t, q + OPEN_SUFFIX, a) for t, q, a in out]


def conversation(
    index: int, split: str = "train", lists_first: bool = True, variant: Variant = FINE
) -> tuple[Scene, list[tuple[str, str, str]]]:
    """Scene `index` of the synth `split` and its turns (type, question, answer) in training order:
    the image-only answers first, or (`lists_first=False`) every turn shuffled, so that any question
    can be the one right after the image, as it is when a benchmark asks one question per image.
    `variant` picks the benchmark (synth or synth-large); synth's streams keep their old keys."""
    key = "dense" if variant is FINE else f"dense-{variant.name}"
    scene = scene_for(split, index, variant=variant)
    rest = simple_questions(scene, random.Random(f"{key}:{split}:{index}"))
    rest += [(qa.type, qa.prompt, qa.answer) for qa in questions_for(scene, split, index, variant=variant)]
    random.Random(f"{key}:{split}:{index}:order").shuffle(rest)
    turns = [*lists(scene), caption(scene), *rest]
    if not lists_first:
        random.Random(f"{key}:{split}:{index}:all").shuffle(turns)
    return scene, turns


@dataclass
class DenseSource:
    """The trainer's view (`duet_cli.training.data.Source`): conversation i as a `Conversation`."""

    images: int = SYNTH_IMAGES
    split: str = "train"
    lists_first: bool = True
    name: str = "synth-dense"
    variant: Variant = FINE

    def __len__(self) -> int:
        return self.images

    def __getitem__(self, index: int) -> Conversation:
        scene, turns = conversation(index, self.split, self.lists_first, self.variant)
        return Conversation(
            f"{self.name}-{self.split}-{index:06d}", [(q, a) for _, q, a in turns], lambda: render(scene)
        )
