"""The DuetError family: every user-facing failure is one of these, rendered as one line by the CLI."""

from __future__ import annotations


class DuetError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(DuetError):
    """The command line itself is wrong (conflicting or missing options)."""

    exit_code = 2


class ProfileError(DuetError):
    """A reduction profile is malformed, or cannot be realised on the loaded model."""


class ModelNotFoundError(DuetError):
    """A model name, folder or hub id cannot be resolved or loaded."""


class InputError(DuetError):
    """An input file (image, JSONL batch) is missing, empty, corrupt or unsafe."""


class UnsupportedSetupError(DuetError):
    """A model set-up (quantization, static cache, assisted decoding, ...) that duet refuses up front."""


class HookError(DuetError):
    """A hook point was not found on the model, or a profile is already applied."""
