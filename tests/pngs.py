"""Hand-built PNG files for the image-guard tests: a header that claims any size over almost no data."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height 1-bit pixels, with almost no data behind it (263 bytes or so)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path
