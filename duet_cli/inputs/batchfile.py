"""JSONL input for `duet infer --batch FILE`: one {"question", "image" | "images", "id"?} object a line.

Every problem is one InputError line naming the file and line; image files are checked by the loader.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError
from duet_cli.inputs import userfiles
from duet_cli.inputs.bounded import show


@dataclass(frozen=True)
class BatchItem:
    """One record: its images (relative paths resolved against the JSONL file's folder) and question."""

    images: list[Path]
    question: str
    line: int  # 1-based line number in the JSONL file
    id: str | None = None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _parse_record(obj: Any, base: Path, where: str) -> tuple[list[Path], str, str | None]:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {_type_name(obj)}")

    if "question" not in obj:
        raise InputError(f'{where}: missing "question"')
    question = obj["question"]
    if not isinstance(question, str):
        raise InputError(f'{where}: "question" must be a string, got {_type_name(question)}')
    if not question.strip():
        raise InputError(f'{where}: "question" is empty')

    if "image" in obj and "images" in obj:
        raise InputError(f'{where}: give either "image" or "images", not both')
    if "image" in obj:
        raw = [obj["image"]]
        if not isinstance(raw[0], str):
            raise InputError(f'{where}: "image" must be a string, got {_type_name(raw[0])}')
    elif "images" in obj:
        raw = obj["images"]
        if not isinstance(raw, list):
            raise InputError(f'{where}: "images" must be a list of strings, got {_type_name(raw)}')
        if not raw:
            raise InputError(f'{where}: "images" is empty')
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise InputError(f'{where}: "images"[{i}] must be a string, got {_type_name(item)}')
    else:
        raise InputError(f'{where}: missing "image" (or "images")')
    images: list[Path] = []
    for s in raw:
        if not s.strip():
            raise InputError(f"{where}: empty image path")
        if "\0" in s:
            raise InputError(f"{where}: image path {show(s)} contains a NUL character")
        p = Path(s).expanduser()
        images.append(p if p.is_absolute() else base / p)

    ident = obj.get("id")
    if ident is not None:
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise InputError(f'{where}: "id" must be a string or an integer, got {_type_name(ident)}')
        ident = str(ident)
    return images, question, ident


def read_batch(path: str | os.PathLike[str]) -> list[BatchItem]:
    """Parse a JSONL batch file; blank lines are skipped, an empty file is an error."""
    src = Path(path)
    name = str(path)
    if src.is_dir():
        raise InputError(f"{name}: is a folder, not a JSONL file")
    text = userfiles.read_text(src, "batch file", userfiles.JSON_BYTES)

    base = src.absolute().parent
    items: list[BatchItem] = []
    first_line_of_id: dict[str, int] = {}
    # split on newlines only: str.splitlines() would also split inside strings holding U+2028 and the like
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise InputError(f"{where}: JSON nested too deeply") from None
        images, question, ident = _parse_record(obj, base, where)
        if ident is not None:
            if ident in first_line_of_id:
                raise InputError(
                    f'{where}: duplicate "id" {show(ident)} (first on line {first_line_of_id[ident]})'
                )
            first_line_of_id[ident] = lineno
        items.append(BatchItem(images=images, question=question, line=lineno, id=ident))
    if not items:
        raise InputError(f"{name}: no records (the file is empty or has only blank lines)")
    return items
