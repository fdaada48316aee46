"""The Record and Benchmark contracts every benchmark module implements."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

ImageRef = (
    str | Path | Image.Image
)  # a file to load with duet_cli.inputs.media.load_image, or an image in memory


@dataclass
class Record:
    """One question of a benchmark.

    `answers` holds the ground truth as the metric needs it (TextVQA: the 10 human answers; POPE: ["yes"]
    or ["no"]; ScienceQA: ["B"]; ...). `meta` carries what scoring groups by (POPE split, MME subtask
    and image id, question type, ...). `id` is unique within (benchmark, split) and stable across runs,
    so predictions can be resumed by id.
    """

    id: str
    question: str  # the full prompt text the model sees (instructions included)
    images: list[ImageRef]
    answers: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    videos: list[str | Path] = field(default_factory=list)  # video files (video benchmarks; --frames each)


@dataclass
class Score:
    """A benchmark's scores: `headline` is the number the paper-style summary averages."""

    headline: float
    headline_name: str
    metrics: dict[str, float]  # every number, flat, e.g. {"adversarial/f1": 85.1, ...}
    count: int  # records scored (failures included)


class Benchmark(Protocol):
    name: str
    description: str
    layout: str  # the expected local folder layout and where a user gets the data (shown on errors)

    def load(self, root: Path | None, split: str | None = None, limit: int | None = None) -> Iterator[Record]:
        """Records in a deterministic order; `root` None means the default location (or generated data)."""
        ...

    def score(self, records: Sequence[Record], predictions: Sequence[str | None]) -> Score:
        """Score predictions aligned with records; None = a failed record (e.g. unreadable image), wrong."""
        ...


class MalformedRecordWarning(UserWarning):
    """A record a loader skipped because it is malformed; the message names the file and line or index.

    Loaders never stop on one: they warn and go on. The runner counts them with
    `warnings.catch_warnings(record=True)` + `simplefilter("always", MalformedRecordWarning)`, or makes
    the first one fatal (`--strict`) with `simplefilter("error", MalformedRecordWarning)`.
    """


def warn_malformed(benchmark: str, where: str, reason: str) -> None:
    """Report one skipped record: "<benchmark>: skipped malformed record at <file>:<line>: <reason>"."""
    warnings.warn(
        MalformedRecordWarning(f"{benchmark}: skipped malformed record at {where}: {reason}"), stacklevel=2
    )
