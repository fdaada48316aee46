"""The two consoles (results to stdout, status and errors to stderr) and plain JSON output that bypasses
Rich. A terminal width of 0 (`COLUMNS=0`, set by some CI shells and `docker exec` without a tty) falls
back to 80: Rich would otherwise render every line, error lines included, as nothing."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import MutableMapping
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from duet_cli.errors import InputError

FALLBACK_WIDTH = 80
FALLBACK_HEIGHT = 25


class _Console(Console):
    """A Rich console whose size is never zero: Rich takes `COLUMNS=0` literally, at construction."""

    @property
    def size(self) -> ConsoleDimensions:
        width, height = super().size
        return ConsoleDimensions(
            width if width > 0 else FALLBACK_WIDTH, height if height > 0 else FALLBACK_HEIGHT
        )

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = _Console(highlight=False, soft_wrap=False)
err = _Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line in a pipe


def sanitize_width_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Replace a terminal size in the environment that is not a positive whole number (`COLUMNS=0`)
    with 80 columns / 25 lines, so that consoles built later (Typer's help and usage errors) print too.
    Typer reads TERMINAL_WIDTH with int(), so a non-number there would crash it: it is removed."""
    env = os.environ if environ is None else environ
    for name, fallback in (("COLUMNS", FALLBACK_WIDTH), ("LINES", FALLBACK_HEIGHT), ("TERMINAL_WIDTH", None)):
        value = env.get(name)
        if value is None:
            continue
        try:
            ok = int(value) > 0
        except ValueError:
            ok = False
        if ok:
            continue
        if fallback is None:
            del env[name]
        else:
            env[name] = str(fallback)


def print_json(document: Any) -> None:
    """Print a JSON document to stdout as UTF-8 text, straight to the stream: no Rich, so no width,
    wrapping or markup can alter it. Every `--json` goes through here."""
    from duet_cli.reports.jsonio import to_json

    data = (to_json(document) + "\n").encode("utf-8")
    stream = sys.stdout
    try:
        stream.flush()  # anything printed before stays before
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            binary.write(data)
            binary.flush()
        else:  # a text-only stream (io.StringIO in library use)
            stream.write(data.decode("utf-8"))
            stream.flush()
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # the reader left (`| head`): Typer ends quietly
            raise
        raise stdout_failed(exc) from None


def stdout_failed(exc: OSError) -> InputError:
    """The one line for a write that standard output refused (`> file` on a full disk). Standard output
    is pointed at /dev/null first, so that Python's own flush at exit cannot fail a second time (with a
    traceback and exit status 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return InputError(f"cannot write standard output: {exc.strerror or exc}")


_version_checked = False


def prepare_transformers() -> None:
    """Before a command's heavy work (not at import): silence transformers' own progress bars and
    advisory warnings, and say once on stderr when its installed release is outside the tested range."""
    global _version_checked
    from transformers.utils import logging as hf_logging

    from duet_cli.compat import untested_version_message

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not _version_checked:
        _version_checked = True
        message = untested_version_message()
        if message is not None:
            err.print(f"[yellow]warning:[/] {escape(message)}")
