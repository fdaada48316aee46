"""Training data: LLaVA instruction-tuning JSON/JSONL (validated up front) and the synth train stream.

A source is indexable (`len`, `[i]`) so the trainer can visit it in any seeded order; images are
decoded lazily, one micro-batch at a time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from duet_cli.errors import InputError
from duet_cli.inputs.userfiles import JSON_BYTES, read_text

IMAGE_TAG = "<image>"
SYNTH_IMAGES = 50_000  # `--data synth` (or synth-large) default: the nominal train split
SYNTH_NAMES = ("synth", "synth-large")  # `--data` values that are a synth train stream, not a file


@dataclass
class Conversation:
    """One training sample: an image and its (question, answer) turns, the image before turn 1."""

    id: str
    turns: list[tuple[str, str]]
    image: Callable[[], Image.Image]


class Source(Protocol):
    name: str

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Conversation: ...


@dataclass
class Problems:
    """What was skipped while reading (file + record index/line: why), for warnings or --strict."""

    malformed: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


# --- LLaVA JSON -------------------------------------------------------------------------------------


@dataclass
class LlavaJson:
    name: str
    records: list[tuple[str, Path, list[tuple[str, str]]]]  # (id, image path, turns)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Conversation:
        from duet_cli.inputs.media import load_image

        rid, path, turns = self.records[index]
        return Conversation(rid, turns, lambda: load_image(path))


def _turns(record: Any) -> list[tuple[str, str]]:
    """Validated (question, answer) pairs of one record, or ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    image = record.get("image")
    if image is None:
        raise ValueError("no 'image' (text-only records are not supported)")
    if not isinstance(image, str) or not image.strip():
        raise ValueError("'image' must be a non-empty string (a path relative to --image-folder)")
    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise ValueError("'conversations' must be a non-empty list")
    if len(convs) % 2:
        raise ValueError(f"'conversations' has {len(convs)} turns; it must end with a gpt turn")
    values = []
    for k, turn in enumerate(convs):
        want = "human" if k % 2 == 0 else "gpt"
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{k}] must be an object with 'from' and 'value'")
        if turn.get("from") != want:
            raise ValueError(f"conversations[{k}].from is {turn.get('from')!r}, expected {want!r}")
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"conversations[{k}].value must be a non-empty string")
        tags = value.count(IMAGE_TAG)
        if k == 0 and tags != 1:
            raise ValueError(f"conversations[0].value must contain {IMAGE_TAG} exactly once (has {tags})")
        if k > 0 and tags:
            raise ValueError(f"conversations[{k}].value contains {IMAGE_TAG}; only the first turn may")
        values.append(value.replace(IMAGE_TAG, "").strip() if k == 0 else value.strip())
    if not values[0]:
        raise ValueError("conversations[0] has no question besides the image tag")
    return list(zip(values[0::2], values[1::2]))


def _entries(path: Path) -> list[tuple[str, Any]]:
    """(where, record) pairs: 'file: record i' for a JSON list, 'file:line' for JSONL."""
    text = read_text(path, "training data", JSON_BYTES)  # regular files only, bounded before reading
    if path.suffix == ".jsonl":
        entries = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"{path}:{line_no}", json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as exc:
                why = getattr(exc, "msg", "nested too deeply")
                entries.append((f"{path}:{line_no}", _Bad(f"not valid JSON ({why})")))
        return entries
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]


@dataclass
class _Bad:
    reason: str


def read_llava_json(
    path: Path, image_folder: Path | None, *, strict: bool = False, limit: int | None = None
) -> tuple[LlavaJson, Problems]:
    """Every usable record of a LLaVA-format file; malformed records and missing images are skipped
    and listed in Problems (with `strict`, the first one raises InputError)."""
    folder = image_folder if image_folder is not None else path.parent
    problems = Problems()
    records: list[tuple[str, Path, list[tuple[str, str]]]] = []
    for where, rec in _entries(path):
        if limit is not None and len(records) >= limit:
            break
        try:
            if isinstance(rec, _Bad):
                raise ValueError(rec.reason)
            turns = _turns(rec)
        except ValueError as exc:
            if strict:
                raise InputError(f"{where}: {exc} (--strict)") from None
            problems.malformed.append(f"{where}: {exc}")
            continue
        rid = str(rec.get("id", where.rsplit(" ", 1)[-1]))
        image = folder / rec["image"]
        if not image.is_file():
            message = f"{where} (id {rid!r}): image not found: {image}"
            if strict:
                raise InputError(f"{message} (--strict)")
            problems.missing_images.append(message)
            continue
        records.append((rid, image, turns))
    if not records:
        first = (problems.malformed + problems.missing_images)[:1]
        why = f"; first problem: {first[0]}" if first else ""
        raise InputError(f"{path}: no usable training records{why}")
    return LlavaJson(str(path), records), problems


# --- synth ------------------------------------------------------------------------------------------


@dataclass
class SynthSource:
    """Image i of the train split of synth (or of the variant `name`, e.g. synth-large) with all its
    questions as one multi-turn conversation.

    The same turns, in the same seeded order, as `SynthBenchmark.conversations` (tested), but
    addressable by index so the trainer can shuffle.
    """

    images: int = SYNTH_IMAGES
    seed: int = 0
    split: str = "train"
    name: str = "synth"

    def __len__(self) -> int:
        return self.images

    def __getitem__(self, index: int) -> Conversation:
        from duet_cli.benchmarks.synth import VARIANTS, questions_for, render, scene_for, scene_key

        variant = VARIANTS[self.name]
        scene = scene_for(self.split, index, self.seed, variant)
        qas = questions_for(scene, self.split, index, self.seed, variant)
        turns = [(qa.prompt, qa.answer) for qa in qas]
        random.Random(scene_key(self.split, index, self.seed, variant) + ":order").shuffle(turns)
        return Conversation(f"{self.name}-{self.split}-{index:06d}", turns, lambda: render(scene))


def open_source(
    data: str, image_folder: Path | None, *, strict: bool = False, limit: int | None = None
) -> tuple[Source, Problems]:
    """`synth`, `synth-large` or a LLaVA JSON/JSONL file."""
    if data in SYNTH_NAMES:
        return SynthSource(images=limit or SYNTH_IMAGES, name=data), Problems()
    return read_llava_json(Path(data).expanduser(), image_folder, strict=strict, limit=limit)
