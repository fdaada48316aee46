"""Video loading: `--frames` frames sampled uniformly, every bad file turned into one InputError line.

PyAV reads the container first: it finds the video stream, counts the frames that are really there
(demuxing packets, no decoding) and compares them with what the header declares, so a zero-length,
truncated or corrupt file is refused before any frame is decoded. The sampled frames are then decoded
with decord when it is installed (fast seeking), else with PyAV; what decord cannot decode (animated
GIFs, for one) falls back to PyAV. decord's FFmpeg prints its complaints straight to file descriptor
2; they are captured and turned into the error line instead. PyAV refuses a sampled frame whose
decoding logged an FFmpeg error (damage elsewhere in the file is no reason to refuse the clip).
Frame indices follow Video-LLaVA: `linspace(0, total - 1, frames)` truncated to integers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from duet_cli.errors import InputError, UnsupportedSetupError, UsageError
from duet_cli.inputs import userfiles
from duet_cli.inputs.bounded import show

BACKENDS = ("auto", "pyav", "decord")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
# FFmpeg log lines that mean the data is damaged (warnings such as deprecated pixel formats do not)
_DAMAGE = re.compile(r"error|damaged|corrupt|partial file|truncat|invalid|missing", re.IGNORECASE)
_SHORTFALL = 0.9  # fewer frames than this share of what the header declares: truncated


@dataclass
class Video:
    """Frames sampled from one video file, as RGB images, with where they came from."""

    path: str
    frames: list[Image.Image]
    indices: list[int]  # 0-based frame numbers in the file, ascending
    total_frames: int
    fps: float | None = None
    backend: str = "pyav"
    size: tuple[int, int] = field(default=(0, 0))  # (width, height) of the decoded frames


def sample_indices(total: int, count: int) -> list[int]:
    """`count` frame numbers spread uniformly over `total` frames, first and last included."""
    if count < 1:
        raise UsageError("--frames must be at least 1")
    if count == 1:
        return [0]
    return [(i * (total - 1)) // (count - 1) for i in range(count)]


def available_backends() -> list[str]:
    return [name for name, mod in (("pyav", "av"), ("decord", "decord")) if importlib.util.find_spec(mod)]


def _pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"video backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    have = available_backends()
    if not have:
        raise UnsupportedSetupError(
            "video input needs PyAV or decord, and neither is installed (pip install 'duet-cli[video]')"
        )
    if backend == "auto":
        return "decord" if "decord" in have else "pyav"
    if backend not in have:
        module = "av" if backend == "pyav" else "decord"
        raise UnsupportedSetupError(f"video backend {backend!r} needs the {module!r} package (not installed)")
    return backend


def _check_file(path: Path, name: str) -> None:
    """A regular file (a FIFO or device would block or never end inside FFmpeg), not empty, readable."""
    if "\0" in name:  # os.stat would raise ValueError
        raise InputError(f"video path {show(name)} contains a NUL character")
    try:
        if path.is_dir():
            raise InputError(f"video path is a directory, not a file: {name}")
        if userfiles.check_regular(path, "video", userfiles.VIDEO_BYTES) == 0:
            raise InputError(f"video file is empty (0 bytes): {name}")
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))  # readable; never blocks
    except PermissionError as exc:
        raise InputError(f"cannot read video {name}: permission denied") from exc
    except OSError as exc:
        raise InputError(f"cannot read video {name}: {exc.strerror or exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# PyAV: the container check (and decoding when decord is not used)


@dataclass
class _Probe:
    frames: int  # packets of the video stream that carry data
    declared: int  # frames the header promises (0 when it does not say)
    fps: float | None


def _declared_frames(stream: Any, container: Any) -> tuple[int, float | None]:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    if stream.frames:
        return int(stream.frames), fps
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000
    if seconds is None or fps is None:
        return 0, fps
    return round(seconds * fps), fps


def _probe(name: str, path: Path) -> _Probe:
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InputError(f"video {name} has no video stream")
            stream = container.streams.video[0]
            declared, fps = _declared_frames(stream, container)
            frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except InputError:
        raise
    except Exception as exc:  # av.FFmpegError and friends: unreadable, truncated or corrupt
        raise InputError(f"video {name} is unreadable, truncated or corrupt: {_first_line(exc)}") from exc
    _check_counts(name, frames, declared)
    return _Probe(frames=frames, declared=declared, fps=fps)


def _check_counts(name: str, frames: int, declared: int) -> None:
    if frames == 0:
        raise InputError(f"video {name} has no frames (zero-length video)")
    if declared and frames < _SHORTFALL * declared:
        raise InputError(
            f"video {name} is truncated or corrupt: {frames} of the {declared} frames its header declares"
        )


def _decode_pyav(name: str, path: Path, indices: list[int], total: int) -> list[Image.Image]:
    """Decode every frame (FFmpeg conceals damage silently), keep the sampled ones; a sampled frame
    whose decoding logged an FFmpeg error, or a stream that ends early, is refused as corrupt."""
    import av
    import av.logging

    wanted = set(indices)
    frames: dict[int, Image.Image] = {}
    decoded = 0
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs, av.open(str(path), metadata_errors="ignore") as src:
            seen = 0
            for i, frame in enumerate(src.decode(src.streams.video[0])):
                decoded = i + 1
                damage = [m for lvl, _, m in logs[seen:] if lvl <= av.logging.ERROR]
                seen = len(logs)
                if i in wanted:
                    if damage:
                        raise InputError(f"video {name} is corrupt: frame {i}: {damage[0].strip()[:200]}")
                    frames[i] = frame.to_image().convert("RGB")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"video {name} is corrupt: {_first_line(exc)} (after {decoded} frames)") from exc
    finally:
        av.logging.set_level(level)
    if decoded < total or any(i not in frames for i in indices):
        raise InputError(f"video {name} is corrupt: decoded {decoded} of its {total} frames")
    return [frames[i] for i in indices]


# ---------------------------------------------------------------------------------------------------------
# decord


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (FFmpeg logs); the lines land in the list."""
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _ffmpeg_detail(lines: list[str]) -> str | None:
    for line in lines:
        if _DAMAGE.search(line):
            return re.sub(r"^\[[^\]]*\]\s*", "", line)[:200]
    return None


def _decode_decord(
    name: str, path: Path, count: int, probe: _Probe | None
) -> tuple[list[Image.Image], list[int], int, float | None]:
    import decord

    failure: Exception | None = None
    with _native_stderr() as log:  # the lines are in `log` once the block has closed
        try:
            reader = decord.VideoReader(str(path), num_threads=1)
            total = len(reader)
            fps = float(reader.get_avg_fps()) if total else None
            if probe is None:
                _check_counts(name, total, 0)
            if total < count:
                raise _TooFew(total)
            indices = sample_indices(total, count)
            batch = reader.get_batch(indices).asnumpy()
        except (InputError, _TooFew):
            raise
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError
            failure = exc
    damage = _ffmpeg_detail(log)
    if failure is not None:
        detail = damage or _decord_detail(failure)
        raise InputError(f"video {name} is unreadable, truncated or corrupt: {detail}") from failure
    if damage is not None:
        raise InputError(f"video {name} is corrupt: {damage}")
    frames = [Image.fromarray(array).convert("RGB") for array in batch]
    return frames, indices, total, fps


def _decord_detail(exc: Exception) -> str:
    """decord's message without its '[hh:mm:ss] /src/file.cc:123: ' prefixes."""
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", _first_line(exc)).strip()[:200]


class _TooFew(Exception):
    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.total = total


def _too_few(name: str, total: int, count: int) -> InputError:
    return InputError(
        f"video {name} has {total} frame{'s' if total != 1 else ''}, fewer than the {count} asked "
        "(lower --frames)"
    )


# ---------------------------------------------------------------------------------------------------------


def load_video(path: str | os.PathLike[str], frames: int = 8, *, backend: str = "auto") -> Video:
    """Sample `frames` frames uniformly from a video file, or raise InputError with one line naming it."""
    name = str(path)
    if frames < 1:
        raise UsageError("--frames must be at least 1")
    chosen = _pick_backend(backend)
    file = Path(path).expanduser()
    _check_file(file, name)
    probe = _probe(name, file) if "pyav" in available_backends() else None
    if chosen == "decord":
        try:
            images, indices, total, fps = _decode_decord(name, file, frames, probe)
            if probe is not None:
                fps = probe.fps or fps
            return Video(name, images, indices, total, fps, chosen, images[0].size)
        except _TooFew as exc:
            raise _too_few(name, exc.total, frames) from None
        except InputError:
            # what PyAV read but decord cannot decode (animated GIFs, for one) falls back to PyAV, whose
            # own checks then decide; an explicitly chosen decord reports its failure as it is
            if backend != "auto" or probe is None:
                raise
            chosen = "pyav"
    assert probe is not None
    total, fps = probe.frames, probe.fps
    if total < frames:
        raise _too_few(name, total, frames)
    indices = sample_indices(total, frames)
    images = _decode_pyav(name, file, indices, total)
    return Video(name, images, indices, total, fps, chosen, images[0].size)


def looks_like_video(path: str | os.PathLike[str]) -> bool:
    """Whether a file name has a video (or animated GIF) suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
