"""One `duet eval` per --out folder: an exclusive flock on `OUT/.duet-eval.lock`, taken by the main rank for
the whole run (a launcher's other ranks share the folder under it) and released by the kernel if the process
dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from duet_cli.errors import InputError

LOCK_NAME = ".duet-eval.lock"


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold `out` for this process, or refuse in one line when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        raise InputError(f"cannot lock {out} for duet eval ({path}: {exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"cannot lock {out} for duet eval: {path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise InputError(
                f"another duet eval{pid} is already writing to {out}: wait for it to finish, or use "
                "another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the refusal line of whoever comes next
        yield
    finally:
        os.close(fd)
