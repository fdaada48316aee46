"""Output files: atomic writes (never a half-written file), early writability checks, JSON and provenance.

Import-light: no torch here; tensors and numpy scalars are recognised by their `.tolist()` / `.item()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import secrets
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {folder}: {_reason(exc)}") from None


def _open_temp(folder: Path, name: str) -> tuple[Path, int]:
    """A new, exclusively created file next to the target; mode 0o666 minus the umask, like open()."""
    for _ in range(100):
        candidate = folder / f".{name[:200]}.{secrets.token_hex(4)}.tmp"  # stays under NAME_MAX
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot write to folder {folder}: {_reason(exc)}") from None
    raise InputError(f"cannot create a temporary file in {folder}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and `os.replace`.

    On any failure the target is left as it was and the temporary file is removed; OS errors
    become one-line InputErrors. Parent folders are created.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a folder")
    folder = target.parent
    _ensure_folder(folder)
    tmp, fd = _open_temp(folder, target.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {target}: {_reason(exc)}") from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail early (InputError) when `path` could not be written: call it before any expensive work.

    Creates nothing that stays: it probes the nearest existing folder with a temporary file.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a folder")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {target}: folder {existing} is not writable")
    probe = existing / f".duet-probe-{secrets.token_hex(4)}.tmp"
    try:
        # os.access can be wrong (read-only mounts, ACLs, root); creating a real file is not
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise InputError(f"cannot write {target}: folder {existing}: {_reason(exc)}") from None
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance(
    *,
    profile_name: str,
    profile_hash: str,
    profile: dict[str, Any],
    model: str,
    dtype: str,
    device: str,
    seed: int | None,
) -> dict[str, Any]:
    """Where a result came from: versions, platform, UTC time, and the run's profile, model and settings."""
    from duet_cli import __version__
    from duet_cli.compat import TESTED_RANGE

    return {
        "duet": __version__,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "transformers_tested": TESTED_RANGE,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile_name": profile_name,
        "profile_hash": profile_hash,
        "profile": profile,
        "model": model,
        "dtype": dtype,
        "device": device,
        "seed": seed,
    }


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        return to_dict() if callable(to_dict) else dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if callable(getattr(obj, "tolist", None)):  # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if callable(getattr(obj, "item", None)):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def to_json(obj: Any) -> str:
    """Pretty JSON (indent 2, keys in insertion order) that also takes dataclasses, paths and tensors."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=_default)
