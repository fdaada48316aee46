"""Output files: atomic writes (never a half-written file, never a replaced device, link or input),
early writability checks, JSON and provenance.

Import-light: no torch here; tensors and numpy scalars are recognised by their `.tolist()` / `.item()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import secrets
import stat
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from duet_cli.errors import InputError
from duet_cli.inputs.userfiles import (
    file_kind,  # the words input refusals use
    resolved,
    same_file,
)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _ensure_folder(folder: Path, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {target}: cannot create folder {folder}: {_reason(exc)}") from None


def _open_temp(folder: Path, name: str, target: Path) -> tuple[Path, int]:
    """A new, exclusively created file next to the target; mode 0o666 minus the umask, like open()."""
    for _ in range(100):
        candidate = folder / f".{name[:200]}.{secrets.token_hex(4)}.tmp"  # stays under NAME_MAX
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot write {target}: folder {folder}: {_reason(exc)}") from None
    raise InputError(f"cannot write {target}: cannot create a temporary file in {folder}")


def _real_target(target: Path) -> Path:
    """The file a write to `target` changes: a symlink is written through (its target is replaced, the
    link stays a link); a link loop is refused."""
    if not os.path.islink(target):
        return target
    real = resolved(target)
    if os.path.islink(real):  # realpath stops inside a loop
        raise InputError(f"cannot write {target}: it is a symbolic link loop")
    return real


def _existing_kind(target: Path, real: Path) -> os.stat_result | None:
    """The target's stat when it exists; InputError when it exists and is not a regular file (a device
    such as /dev/null, a FIFO, a socket, a folder): replacing one of those would destroy it."""
    try:
        st = os.stat(real)
    except OSError:  # absent, or a parent that is not a folder: the folder checks say which
        return None
    if not stat.S_ISREG(st.st_mode):
        name = f"{target} (a link to {real})" if real != target else str(target)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot write {name}: it is a folder")
        raise InputError(f"cannot write {name}: it is {file_kind(st.st_mode)}, not a regular file")
    return st


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and `os.replace`.

    On any failure the target is left as it was and the temporary file is removed; OS errors (a full
    disk, a file-size limit, a read-only mount) become one-line InputErrors naming `path`. Parent
    folders are created. Through a symlink, the link's target is replaced; a target that exists and
    is not a regular file is refused.
    """
    target = Path(path)
    real = _real_target(target)
    _existing_kind(target, real)
    folder = real.parent
    _ensure_folder(folder, target)
    tmp, fd = _open_temp(folder, real.name, target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        st = _existing_kind(target, real)  # again: it may have changed while we wrote
        if st is not None:  # keep the replaced file's permissions and, where allowed, its owner
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
            with contextlib.suppress(OSError):
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {target}: {_reason(exc)}") from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> None:
    """Fail early (InputError) when `path` could not be written: call it before any expensive work.

    Refused too: a `path` that is the same file as one of `inputs` (the command's input files; names
    that are not existing files are ignored), and an existing `path` that is not a regular file.
    Creates nothing that stays: it probes the nearest existing folder with a temporary file.
    """
    target = Path(path)
    real = _real_target(target)
    _existing_kind(target, real)
    for item in inputs:
        if item is not None and same_file(real, item):
            raise InputError(
                f"cannot write {target}: it is the input file {os.fspath(item)}; choose another output file"
            )
    existing = real.parent
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


def write_failure(what: str, path: str | os.PathLike[str], exc: BaseException) -> InputError | None:
    """The one line for a write the system refused (a full disk, a quota, a file-size limit, a read-only
    mount, a permission), or None when `exc` is something else (a bug: let it surface). safetensors
    reports its I/O errors as text in its own exception type, recognised here by name (no import)."""
    if isinstance(exc, OSError):
        reason = _reason(exc)
    elif type(exc).__name__ == "SafetensorError" and "I/O error: " in str(exc):
        reason = str(exc).rpartition("I/O error: ")[2]
    else:
        return None
    return InputError(f"cannot write {what} {os.fspath(path)}: {reason}")


def check_not_replacing(
    folders: Iterable[Path], inputs: Iterable[str | os.PathLike[str] | None], option: str = "--out"
) -> None:
    """Refuse when an input is (or lies inside) a folder that a command replaces wholesale (`duet train`
    swaps OUT/model in and prunes OUT/checkpoints): the user's files there would be deleted."""
    for folder in folders:
        real = resolved(folder)
        for item in inputs:
            if item is None or not os.path.exists(item):
                continue
            where = resolved(item)
            if where == real or real in where.parents:
                place = "is" if where == real else "lies inside"
                raise InputError(
                    f"{os.fspath(item)} {place} {folder}, which this run replaces: choose another {option}"
                )


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
