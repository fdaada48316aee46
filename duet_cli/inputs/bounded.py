"""Bounded renderings for error messages: a user's value cut to a few dozen characters, and a list of
problems cut to a handful ("and 19,995 more"), so no input can make an error line huge or slow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

SHOW_CHARS = 60  # characters of a user's value an error message shows
MAX_ERRORS = 5  # problems an error line lists before "and N more"
_ELLIPSIS = "..."


class _Full(Exception):
    """Raised inside `show` once the budget is spent: the rest of the value is never rendered."""


def clip(text: str, limit: int = SHOW_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with '...' when longer."""
    head = text[: limit + 1]
    flat = head.encode("unicode_escape").decode("ascii") if not head.isprintable() else head
    return flat if len(flat) <= limit and len(text) <= limit else flat[: max(0, limit - 3)] + _ELLIPSIS


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """A value as the user wrote it in YAML or JSON (strings quoted, the rest as JSON), at most `limit`
    characters: only as much of a large or deeply nested value is rendered as the message shows."""
    if isinstance(value, str):
        return clip(repr(value[: limit + 1]), limit)
    parts: list[str] = []
    used = 0

    def emit(text: str) -> None:
        nonlocal used
        parts.append(text)
        used += len(text)
        if used > limit:
            raise _Full

    def walk(item: object) -> None:
        if isinstance(item, dict):
            emit("{")
            for i, (key, sub) in enumerate(item.items()):
                emit(", " if i else "")
                emit(_scalar(str(key) if isinstance(key, (str, int, float, bool)) else key, limit) + ": ")
                walk(sub)
            emit("}")
        elif isinstance(item, (list, tuple)):
            emit("[")
            for i, sub in enumerate(item):
                emit(", " if i else "")
                walk(sub)
            emit("]")
        else:
            emit(_scalar(item, limit))

    try:
        walk(value)
    except _Full:
        return clip("".join(parts)[: max(0, limit - 3)], limit) + _ELLIPSIS
    return clip("".join(parts), limit)


def _scalar(value: object, limit: int) -> str:
    if isinstance(value, str):
        return json.dumps(value[: limit + 1])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        # str() of a huge int is slow, and refused past 4300 digits
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return repr(value)[: limit + 1]


def error_list(errors: Sequence[str], limit: int = MAX_ERRORS) -> str:
    """The first `limit` errors joined by '; ', then '; and N more' when there are others."""
    shown = "; ".join(errors[:limit])
    rest = len(errors) - limit
    return f"{shown}; and {rest:,} more" if rest > 0 else shown
