"""The two consoles: results go to stdout, status and errors to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line in a pipe


def quiet_transformers() -> None:
    """Silence transformers' own progress bars and advisory warnings in CLI output (not at import)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
