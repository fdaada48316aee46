"""The two consoles: results go to stdout, status and errors to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line in a pipe


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
