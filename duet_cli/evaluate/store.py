"""Prediction files: one JSONL per (benchmark, profile), appended and flushed per batch, resumable.

A hard kill can leave a half-written last line; reading repairs the file by cutting it, so a rerun
appends after the last complete record and nothing is duplicated or lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_rows(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Complete rows of a prediction file (a torn last line is cut off when `repair`)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    if repair and end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    rows = []
    for line in data[:end].splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


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
    """Merge per-rank files into `final` in record order (first row per id wins), then remove the parts."""
    by_id: dict[str, dict[str, Any]] = {}
    for part in [final, *parts]:
        for row in read_rows(part):
            by_id.setdefault(row["id"], row)
    rows = [by_id[i] for i in order if i in by_id]
    tmp = final.with_name(final.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, final)
    for part in parts:
        part.unlink(missing_ok=True)
    return rows
