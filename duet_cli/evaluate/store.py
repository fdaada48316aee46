"""Prediction files: one JSONL per (benchmark, profile), appended and flushed per batch, resumable.

A hard kill can leave a half-written last line; reading repairs the file by cutting it, so a rerun
appends after the last complete record and nothing is duplicated or lost. Any other unreadable line is
refused with its file and line: resume state we cannot read is never guessed at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError
from duet_cli.inputs.userfiles import JSON_BYTES, read_bytes

FRESH = "to start fresh, use another --out or delete that file"


def numbered_rows(path: Path, *, repair: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each complete row of a prediction file; a torn last line is cut off when
    `repair`; a line that is not a JSON object with a string `id` is an InputError naming file and line."""
    if not path.exists():
        return []
    data = read_bytes(path, "predictions file", JSON_BYTES)  # a FIFO or a huge file is refused, not read
    end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    if repair and end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    rows = []
    for number, line in enumerate(data[:end].split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, ValueError):
            raise InputError(f"{path}:{number}: not a JSON prediction row; {FRESH}") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise InputError(f"{path}:{number}: prediction row without a string 'id'; {FRESH}")
        bad = _bad_field(row)
        if bad is not None:
            raise InputError(f"{path}:{number}: prediction row with a malformed {bad!r} field; {FRESH}")
        rows.append((number, row))
    return rows


NUMBERS = ("visual_tokens_in", "unreduced_visual_tokens", "avg_visual_tokens", "prefill_ms")


def _bad_field(row: dict[str, Any]) -> str | None:
    """The first field scoring would trip over: answers are text or null, an answered row has numbers."""
    for key in ("prediction", "error"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return key
    if row.get("error") is None:
        for key in NUMBERS:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return key
    return None


def read_rows(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Complete rows of a prediction file (a torn last line is cut off when `repair`)."""
    return [row for _, row in numbered_rows(path, repair=repair)]


def has_rows(path: Path) -> bool:
    """Whether a prediction file holds anything at all (a torn line counts: it came from some run)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


class PredictionWriter:
    """Appends rows durably: each batch is flushed and fsynced before the next one starts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_rank_files(final: Path, parts: list[Path], order: list[str]) -> list[dict[str, Any]]:
    """Merge per-rank files into `final` in record order, then remove the parts. The last row of an id wins
    (parts after `final`): a failure retried by this run replaces the failure an earlier run recorded."""
    by_id: dict[str, dict[str, Any]] = {}
    for part in [final, *parts]:
        for row in read_rows(part):
            by_id[row["id"]] = row
    wanted = set(order)
    # rows of records outside this run (a smaller --limit) are kept at the end, not thrown away
    rows = [by_id[i] for i in order if i in by_id] + [r for i, r in by_id.items() if i not in wanted]
    tmp = final.with_name(final.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, final)
    for part in parts:
        part.unlink(missing_ok=True)
    return rows
