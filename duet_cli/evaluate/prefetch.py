"""Loads the eval loop's next batch on a background thread while the model answers the current one:
batches come back in order, at most `depth` finished ones wait (plus the one being loaded), and a
failure is re-raised in the caller's thread naming the record it came from.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")
THREAD_NAME = "duet-eval-prefetch"
_POLL_S = 0.05  # how often a blocked side looks at whether the other one has gone


class RecordLoadError(RuntimeError):
    """Loading a record failed for a reason that is not bad input (a bug, memory): named, not hidden."""


@dataclass
class _Failed:
    what: str  # "<benchmark> record <id>"
    error: BaseException


@dataclass
class _Done:
    pass


def _named(failed: _Failed) -> BaseException:
    """The error to raise in the caller's thread: a DuetError keeps its class (and exit code) with the
    record in front of its message; anything else becomes a RecordLoadError chained to the original."""
    from duet_cli.errors import DuetError

    exc = failed.error
    if isinstance(exc, DuetError):
        try:
            return type(exc)(f"{failed.what}: {exc}")
        except Exception:  # a subclass with another constructor: keep it as it is
            return exc
    if not isinstance(exc, Exception):  # SystemExit and the like go through as they are
        return exc
    return RecordLoadError(f"loading {failed.what} failed: {type(exc).__name__}: {exc}")


class Prefetcher(Generic[R, T]):
    """Iterate over `batches` with `load` applied to each record, loaded ahead on one thread.

    Use as a context manager; leaving it (normally, on an error, on Ctrl-C) stops the thread and joins
    it, so no thread outlives the block. `load` runs on the background thread: it must not touch what
    the caller's thread uses meanwhile."""

    def __init__(
        self,
        batches: Sequence[Sequence[R]],
        load: Callable[[R], T],
        *,
        name: Callable[[R], str],
        depth: int = 1,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._batches = batches
        self._load = load
        self._name = name
        self._queue: queue.Queue[list[T] | _Failed | _Done] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=THREAD_NAME, daemon=True)

    def __enter__(self) -> Iterator[list[T]]:
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop loading and wait for the thread (at most the record it is loading now)."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # make room, so a blocked put sees the stop
                while True:
                    self._queue.get_nowait()
            self._thread.join(_POLL_S)

    def _put(self, item: list[T] | _Failed | _Done) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        for batch in self._batches:
            loaded: list[T] = []
            for record in batch:
                if self._stop.is_set():
                    return
                try:
                    loaded.append(self._load(record))
                except BaseException as exc:  # handed to the caller's thread, which raises it
                    self._put(_Failed(self._name(record), exc))
                    return
            if not self._put(loaded):
                return
        self._put(_Done())

    def _consume(self) -> Iterator[list[T]]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"{THREAD_NAME} ended without a result") from None
                continue
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                named = _named(item)
                if named is item.error:
                    raise named
                raise named from item.error
            yield item
