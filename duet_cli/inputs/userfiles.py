"""Reading files a user hands us: regular files only, bounded in size before a byte is read.

A FIFO, a device (`/dev/zero`), a socket or a folder is refused in one line rather than blocking or
eating memory; a file over its kind's cap is refused by size. The descriptor is opened non-blocking and
checked again with fstat, so a path swapped for a FIFO between the check and the read cannot hang us.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from duet_cli.errors import DuetError, InputError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# caps per kind of file (bytes); generous for real use, far below what would hurt
PROFILE_BYTES = 256 * KiB  # a shipped profile is ~1 KiB
JSON_BYTES = 256 * MiB  # batch files, message lists, benchmark annotations, training JSON
IMAGE_BYTES = 256 * MiB  # an encoded image (the pixel count is checked separately)
VIDEO_BYTES = 16 * GiB  # a video file: read packet by packet, never whole (hours of HD fit)


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(what: str, name: str, mode: int, error: type[DuetError]) -> DuetError:
    return error(f"{what} {name} is {file_kind(mode)}: give a regular file")


def check_regular(
    path: str | os.PathLike[str], what: str, limit: int, *, error: type[DuetError] = InputError
) -> int:
    """The size of `path` after checking that it exists, is a regular file (links followed) and is at
    most `limit` bytes; otherwise `error` with one line naming the file. Reads nothing."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise error(f"{what} not found: {name}") from None
    except PermissionError:
        raise error(f"cannot read {what} {name}: permission denied") from None
    except OSError as exc:
        raise error(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(what, name, st.st_mode, error)
    if st.st_size > limit:
        raise error(
            f"{what} {name} is {_size_text(st.st_size)}, over the {_size_text(limit)} limit for a {what}"
        )
    return st.st_size


def read_bytes(
    path: str | os.PathLike[str], what: str, limit: int, *, error: type[DuetError] = InputError
) -> bytes:
    """The whole content of a regular file of at most `limit` bytes, or `error` in one line."""
    name = os.fspath(path)
    check_regular(name, what, limit, error=error)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise error(f"cannot read {what} {name}: permission denied") from None
    except OSError as exc:
        raise error(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the check
            raise _refuse(what, name, st.st_mode, error)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(8 * MiB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read
                raise error(f"{what} {name} is over the {_size_text(limit)} limit for a {what}")
    except OSError as exc:
        raise error(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(
    path: str | os.PathLike[str], what: str, limit: int, *, error: type[DuetError] = InputError
) -> str:
    """`read_bytes` decoded as UTF-8 (a BOM is dropped), or `error` naming the file."""
    data = read_bytes(path, what, limit, error=error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {os.fspath(path)} is not UTF-8 text (byte {exc.start})") from None


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same existing file (links and hard links followed)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def resolved(path: str | os.PathLike[str]) -> Path:
    """`path` with every symlink followed (the file a write through it would change)."""
    return Path(os.path.realpath(os.fspath(path)))
