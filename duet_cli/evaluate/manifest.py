"""What a predictions file was made under: `<stem>.manifest.json` beside it (model, profile hash, generation
settings), plus a digest of each record's input stored in its row, so a rerun into the same --out resumes
only under the same settings and data, and refuses anything else in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from duet_cli.benchmarks.base import Record
from duet_cli.errors import InputError
from duet_cli.inputs.userfiles import JSON_BYTES, read_text

FORMAT = 1
# every field a prediction depends on; benchmark and split are recorded for the reader, but the data a
# row was made from is checked per record (`record_digest`), so a larger --limit still resumes
COMPARED = (
    "format", "model", "profile_hash", "dtype", "max_new_tokens", "seed", "frames", "pixels",
    "chat_template", "image_aspect",
)  # fmt: skip
_SHOWN = 40  # characters of a value shown in a refusal


def manifest_path(predictions: Path) -> Path:
    return predictions.with_name(predictions.name.removesuffix(".jsonl") + ".manifest.json")


def model_identity(spec: str) -> str:
    """A model as a settings value: a catalog name or hub id as typed, a local folder by its real path
    (the same folder typed two ways is one model). Catalog names win over folders, as in resolve_model."""
    from duet_cli.catalog import list_cards

    spec = spec.strip()
    if spec in {card.name for card in list_cards()}:
        return spec
    folder = Path(spec).expanduser()
    try:
        return os.path.realpath(folder) if folder.is_dir() else spec
    except OSError:
        return spec


def expected(
    *,
    model: str,
    profile_name: str,
    profile_hash: str,
    dtype: str,
    max_new_tokens: int,
    seed: int,
    frames: int | None,
    pixels: tuple[int | None, int | None],
    benchmark: str,
    split: str | None,
    chat_template: str | None = None,
    image_aspect: str | None = None,
) -> dict[str, Any]:
    """The manifest a run with these settings writes (`frames` None when the benchmark has no video).

    `chat_template`: the --chat-template given (recorded by digest; None: the model's own, which the
    model identity covers); `image_aspect`: --image-aspect, else the catalog card's (None: the
    processor's crop), so predictions made under another aspect are never resumed into."""
    from duet_cli.inputs.chat_template import option_digest
    from duet_cli.inputs.image_aspect import declared_aspect

    return {
        "format": FORMAT,
        "model": model_identity(model),
        "profile": profile_name,
        "profile_hash": profile_hash,
        "dtype": dtype,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "frames": frames,
        "pixels": list(pixels),
        "chat_template": option_digest(chat_template),
        "image_aspect": declared_aspect(model, image_aspect),
        "benchmark": benchmark,
        "split": split,
    }


def record_digest(rec: Record) -> str:
    """16 hex digits over what a prediction is made from: the id, the prompt, the image and video refs
    (files by path, in-memory images by mode and size). Ground truth is left out: scoring reads it fresh."""
    images = [str(i) if isinstance(i, (str, os.PathLike)) else f"{i.mode} {i.size}" for i in rec.images]
    text = json.dumps([rec.id, rec.question, images, [str(v) for v in rec.videos]], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def read(path: Path) -> dict[str, Any] | None:
    """A manifest, or None when there is none; unreadable ones are refused naming the file."""
    if not path.exists():
        return None
    text = read_text(path, "predictions manifest", JSON_BYTES)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(
            f"{path}: not a JSON predictions manifest ({exc}); to start fresh, use another --out "
            "or delete it and its predictions file"
        ) from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a predictions manifest (expected a JSON object)")
    return doc


def check(predictions: Path, made: bool, want: dict[str, Any]) -> None:
    """Refuse to resume `predictions` (with `made` rows from some run) unless its manifest says they were
    made under `want`'s settings. Without rows there is nothing stale: the manifest is simply rewritten."""
    if not made:
        return
    found = read(manifest_path(predictions))
    fresh = f"to start fresh, use another --out or delete {predictions}"
    if found is None:
        raise InputError(
            f"{predictions} has no manifest ({manifest_path(predictions).name}), so the settings its "
            f"predictions were made under are unknown; {fresh}"
        )
    differ = [k for k in COMPARED if found.get(k) != want.get(k)]
    if differ:
        what = ", ".join(f"{k} {_show(found.get(k))} (now {_show(want.get(k))})" for k in differ)
        raise InputError(f"{predictions} was made with other settings: {what}; {fresh}")


def write(predictions: Path, want: dict[str, Any]) -> None:
    """Write the manifest atomically unless it already says exactly this (ranks may race: same bytes)."""
    path = manifest_path(predictions)
    text = json.dumps(want, indent=2, ensure_ascii=False) + "\n"
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
