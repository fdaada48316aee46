"""Reading benchmark data for the loaders: lmms-eval parquet folders and hub datasets, plus JSON helpers.

A benchmark root that holds `*.parquet` files (at any depth, e.g. the `data/` folder of a downloaded
lmms-eval dataset repo) is read with pyarrow; a root that does not exist locally but looks like a hub id
("lmms-lab/POPE") is loaded with `datasets` (if installed; offline it must be in the local cache).
Each benchmark module maps the lmms-eval column names to Records; see its `layout` text.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from duet_cli.benchmarks.base import ImageRef
from duet_cli.errors import InputError, UsageError
from duet_cli.inputs import userfiles

T = TypeVar("T")
_BATCH = 64  # rows per parquet read: images stream through memory a batch at a time
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PARQUET_HINT = "or pass a folder of lmms-eval parquet files"


class Malformed(Exception):
    """Raised by the field checks below; the loader turns it into one MalformedRecordWarning."""


# --- local files ------------------------------------------------------------------------------------


def resolve_root(name: str, root: Path | None) -> Path:
    """`root`, or the default location when None: $DUET_DATA/<name> (default ~/.cache/duet/data/<name>)."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("DUET_DATA") or "~/.cache/duet/data"
    return Path(base).expanduser() / name


def missing(name: str, root: Path, expected: str) -> InputError:
    """The one-line missing-data error: where we looked and what should be there."""
    return InputError(f"{name}: no data at {root}; expected {expected}; {PARQUET_HINT}")


def read_text(name: str, path: Path) -> str:
    """A local annotation file as text (a regular file of at most JSON_BYTES), or one InputError line."""
    try:
        return userfiles.read_text(path, "annotation file", userfiles.JSON_BYTES)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


def read_json(name: str, path: Path) -> Any:
    """Parse a JSON file; an unreadable or unparseable file is fatal (no record can be salvaged)."""
    text = read_text(name, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: {path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from exc
    except RecursionError:
        raise InputError(f"{name}: {path}: JSON nested too deeply") from None


def parse_json_line(line: str) -> Any:
    """One JSONL record, or Malformed (bad JSON, or nesting too deep to parse)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise Malformed(f"not valid JSON ({exc.msg})") from exc
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None


def field(record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """record[key] checked against `kind` (bool is never an int here), or Malformed naming the key."""
    if not isinstance(record, dict):
        raise Malformed(f"expected an object, got {type(record).__name__}")
    if key not in record or record[key] is None:
        raise Malformed(f"missing '{key}'")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise Malformed(f"'{key}' is {type(value).__name__}, expected {expected}")
    if isinstance(value, str) and not value.strip():
        raise Malformed(f"'{key}' is empty")
    return value


def string_list(record: Any, key: str) -> list[str]:
    """record[key] as a non-empty list of strings, or Malformed."""
    value = field(record, key, (list, tuple))
    if not value or not all(isinstance(v, str) for v in value):
        raise Malformed(f"'{key}' must be a non-empty list of strings")
    return list(value)


def interleave(groups: Sequence[Sequence[T]]) -> list[T]:
    """Round-robin over groups (g0[0], g1[0], ..., g0[1], ...), so a --limit samples every group."""
    out: list[T] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def parse_choices(name: str, split: str | None, allowed: Sequence[str], default: Sequence[str]) -> list[str]:
    """A comma-separated `split` resolved against `allowed` (case-insensitive, in `allowed`'s order), or
    `default` when None."""
    if split is None or not split.strip():
        return list(default)
    lookup = {a.lower(): a for a in allowed}
    picked: list[str] = []
    for part in split.split(","):
        key = part.strip().lower()
        if key not in lookup:
            raise UsageError(f"{name}: unknown split '{part.strip()}'. Available: {', '.join(allowed)}")
        picked.append(lookup[key])
    return [a for a in allowed if a in picked]  # canonical order, whatever order the user wrote


# --- parquet and hub --------------------------------------------------------------------------------


@dataclass
class Part:
    """One table of an lmms-eval dataset: a parquet file or a loaded hub split; read column by column."""

    label: str  # the file path or "hub:<repo>/<config>/<split>", used in messages
    columns: list[str]
    read: Callable[[list[str]], Any]  # column names -> pyarrow.Table (the whole part)
    batches: Callable[[list[str]], Iterator[Any]]  # column names -> pyarrow.RecordBatch stream


@dataclass
class Row:
    part: int
    index: int
    where: str  # "<file> row <index>", for malformed-record messages
    values: dict[str, Any]


def parquet_parts(root: Path) -> list[Part] | None:
    """The parquet files at `root` (a file, or a folder searched recursively, sorted), or None if none."""
    if root.is_file() and root.suffix == ".parquet":
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob("*.parquet"))
    else:
        return None
    if not files:
        return None
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InputError(
            f"reading parquet files needs pyarrow: pip install 'duet-cli[eval]' (found {files[0]})"
        ) from exc
    parts = []
    for file in files:
        try:
            columns = list(pq.read_schema(file).names)
        except Exception as exc:
            raise InputError(f"cannot read parquet file {file}: {str(exc).splitlines()[0]}") from exc

        def read(cols: list[str], file: Path = file) -> Any:
            return pq.read_table(file, columns=cols)

        def batches(cols: list[str], file: Path = file) -> Iterator[Any]:
            return pq.ParquetFile(file).iter_batches(batch_size=_BATCH, columns=cols)  # type: ignore[no-any-return]

        parts.append(Part(str(file), columns, read, batches))
    return parts


def is_hub_id(root: Path) -> bool:
    return not root.exists() and _HUB_ID.match(str(root)) is not None


def hub_part(name: str, repo: str, config: str | None, split: str) -> Part:
    """A hub dataset split via `datasets`; any failure (not installed, offline, not cached) is one line."""
    try:
        import datasets
    except ImportError as exc:
        raise InputError(
            f"{name}: {repo} is not a local folder, and loading a hub dataset needs `datasets` "
            "(pip install datasets); or download it and pass the folder of parquet files"
        ) from exc
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{name}: cannot load hub dataset {repo} ({detail}); offline it must already be in the "
            "Hugging Face cache, or pass a local folder of its parquet files"
        ) from exc
    table = getattr(ds.data, "table", ds.data)

    def batches(cols: list[str]) -> Iterator[Any]:
        return iter(table.select(cols).to_batches(max_chunksize=_BATCH))

    return Part(f"hub:{repo}/{config or 'default'}/{split}", list(table.column_names), table.select, batches)


def require_columns(name: str, parts: Sequence[Part], required: Sequence[str], what: str) -> None:
    """Refuse a table without the columns `what` needs: one line naming the file and the missing columns."""
    for part in parts:
        lacking = [c for c in required if c not in part.columns]
        if lacking:
            raise InputError(
                f"{name}: {part.label} has no column(s) {', '.join(lacking)}; expected {what} "
                f"(columns {', '.join(required)}); found {', '.join(part.columns) or 'none'}"
            )


def rows(parts: Sequence[Part], columns: Sequence[str]) -> Iterator[Row]:
    """Every row of every part, streamed in batches, with those of `columns` the part has (missing ones
    are absent keys). Ask for "image" only when every row's image is wanted; otherwise see `images`."""
    for p, part in enumerate(parts):
        present = [c for c in columns if c in part.columns]
        i = 0
        for batch in part.batches(present):
            for values in batch.to_pylist():
                yield Row(p, i, f"{part.label} row {i}", values)
                i += 1


def images(parts: Sequence[Part], picks: Sequence[Row], column: str = "image") -> list[ImageRef]:
    """The `column` image of each picked row, read one part at a time (only the rows asked for)."""
    out: dict[tuple[int, int], ImageRef] = {}
    by_part: dict[int, list[int]] = {}
    for row in picks:
        by_part.setdefault(row.part, []).append(row.index)
    for p, indices in by_part.items():
        values = parts[p].read([column]).column(column).take(indices).to_pylist()
        for i, value in zip(indices, values):
            out[(p, i)] = image_ref(value, f"{parts[p].label} row {i}")
    return [out[(r.part, r.index)] for r in picks]


def has_image(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value.get("bytes")) or bool(value.get("path"))
    return value is not None


def image_ref(value: Any, where: str) -> ImageRef:
    """An lmms-eval image cell ({"bytes", "path"}, raw bytes or a PIL image) as an ImageRef.

    Embedded bytes are opened lazily with PIL (pixels decode when the runner uses the image). Bytes PIL
    cannot even identify, or whose header claims a size `load_image` would refuse (a bomb, or 30000x2),
    become a reference string naming the row, which the runner's image loading reports as a failed
    record rather than a crash.
    """
    from PIL import Image

    from duet_cli.inputs.media import size_problem

    image = value if isinstance(value, Image.Image) else None
    data = value.get("bytes") if isinstance(value, dict) else value
    if image is None and isinstance(data, (bytes, bytearray)) and data:
        try:
            image = Image.open(io.BytesIO(data))
        except Exception:
            return f"{where} (embedded image is unreadable)"
    if image is not None:
        problem = size_problem(image.size)  # before anything decodes a bomb
        return image if problem is None else f"{where} (embedded image {problem})"
    path = value.get("path") if isinstance(value, dict) else None
    return path if isinstance(path, str) and path else f"{where} (no embedded image)"


def open_dataset(name: str, root: Path, hub: Callable[[str], list[Part]]) -> list[Part] | None:
    """The lmms-eval parts at `root`: parquet files there, or `hub(repo)` when root is a hub id; else None."""
    parts = parquet_parts(root)
    if parts is not None:
        return parts
    if is_hub_id(root):
        return hub(str(root))
    return None
