"""Where the shipped data lives: `models/` and `profiles/` in a checkout, or inside the installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_root() -> Path:
    """Folder holding `models/` and `profiles/`: the wheel's `_data` copy, else the source checkout."""
    packaged = _PKG / "_data"
    if (packaged / "profiles").is_dir():
        return packaged
    return _PKG.parent


def models_dir() -> Path:
    return data_root() / "models"


def profiles_dir() -> Path:
    return data_root() / "profiles"
