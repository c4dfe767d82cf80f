"""Small TIFF files declaring far more than they hold, written byte by byte.

A classic TIFF is a header, one image file directory (IFD) and the stored
segments; nothing forces the declared image size, tile size or rows per strip
to agree with what the file holds. :func:`write_tiff` writes such files
(kilobytes on disk) for the tests of the memory bounds: a 10^6 x 10^6 px image
with 65,536 px JPEG tiles, a sparse image whose tiles were never written
(``TileByteCounts`` 0), strips with a huge ``RowsPerStrip``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import simplejpeg

__all__ = ["small_jpeg", "write_tiff"]

_SHORT, _LONG, _RATIONAL = 3, 4, 5
_JPEG, _NONE = 7, 1
_RGB, _YCBCR = 2, 6


def small_jpeg(side: int = 16, value: int = 120) -> bytes:
    """A complete JPEG of a ``side`` x ``side`` RGB square (YCbCr coded)."""
    pixels = np.full((side, side, 3), value, np.uint8)
    return bytes(simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB"))


def write_tiff(
    path: Path,
    *,
    width: int,
    height: int,
    tile: tuple[int, int] | None = None,
    rows_per_strip: int | None = None,
    segments: Mapping[int, bytes] | None = None,
    count: int | None = None,
    compression: int = _JPEG,
    mpp: float | None = 0.5,
) -> Path:
    """Write a one-page RGB TIFF whose declared geometry is taken at its word.

    Parameters
    ----------
    width, height
        Declared ``ImageWidth`` and ``ImageLength``.
    tile
        ``(TileWidth, TileLength)``; ``None`` for strips.
    rows_per_strip
        ``RowsPerStrip`` of a stripped image (default: the whole height).
    segments
        Stored bytes of some segments by index; every other segment is sparse
        (offset 0, byte count 0).
    count
        Number of segment entries; default the declared grid's.
    compression
        TIFF compression (7 JPEG, 1 none).
    mpp
        Microns per pixel written as a centimetre resolution, or ``None``.
    """
    segments = dict(segments or {})
    if tile is not None:
        cols, rows = -(-width // tile[0]), -(-height // tile[1])
    else:
        rps = rows_per_strip or height
        cols, rows = 1, -(-height // rps)
    n = cols * rows if count is None else count
    body = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets = [0] * n
    counts = [0] * n
    for index, data in sorted(segments.items()):
        offsets[index] = len(body)
        counts[index] = len(data)
        body += data
        if len(body) % 2:
            body += b"\x00"

    def array(kind: str, values: list[int]) -> int:
        start = len(body)
        body.extend(struct.pack(f"<{len(values)}{kind}", *values))
        if len(body) % 2:
            body.append(0)
        return start

    bits = array("H", [8, 8, 8])
    res = array("I", [round(1e4 / mpp), 1]) if mpp else 0
    entries: list[tuple[int, int, int, int]] = []  # tag, type, count, value-or-offset

    def segment_tags(offset_tag: int, count_tag: int) -> None:
        if n == 1:
            entries.append((offset_tag, _LONG, 1, offsets[0]))
            entries.append((count_tag, _LONG, 1, counts[0]))
        else:
            entries.append((offset_tag, _LONG, n, array("I", offsets)))
            entries.append((count_tag, _LONG, n, array("I", counts)))

    entries += [
        (256, _LONG, 1, width),
        (257, _LONG, 1, height),
        (258, _SHORT, 3, bits),
        (259, _SHORT, 1, compression),
        (262, _SHORT, 1, _YCBCR if compression == _JPEG else _RGB),
        (277, _SHORT, 1, 3),
        (284, _SHORT, 1, 1),
    ]
    if tile is None:
        entries.append((278, _LONG, 1, rows_per_strip or height))
        segment_tags(273, 279)
    else:
        entries += [(322, _LONG, 1, tile[0]), (323, _LONG, 1, tile[1])]
        segment_tags(324, 325)
    if mpp:
        entries += [(282, _RATIONAL, 1, res), (283, _RATIONAL, 1, res), (296, _SHORT, 1, 3)]
    entries.sort()
    ifd = len(body)
    body += struct.pack("<H", len(entries))
    for tag, kind, num, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == _SHORT and num == 1 else None
        body += struct.pack("<HHI", tag, kind, num) + (packed or struct.pack("<I", value))
    body += b"\x00\x00\x00\x00"
    body[4:8] = struct.pack("<I", ifd)
    path.write_bytes(bytes(body))
    return path
