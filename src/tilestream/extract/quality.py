"""The quality a JPEG was encoded at, estimated from its quantisation tables.

Tiles passed through from a slide (see ``jpeg_passthrough``) keep the
scanner's JPEG encoding, not the ``quality`` of the config. Most scanners and
libraries (libjpeg, libjpeg-turbo, Pillow, OpenCV) scale the standard tables
of the JPEG specification (Annex K) with the IJG quality formula;
:func:`estimate_jpeg_quality` finds the quality whose scaled tables are
nearest to a file's, and returns ``None`` when no quality comes close (tables
of another design) or the data holds no tables.

Examples
--------
>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO()
>>> Image.new("RGB", (16, 16)).save(buf, format="JPEG", quality=70)
>>> estimate_jpeg_quality(buf.getvalue())
70
>>> estimate_jpeg_quality(b"not a jpeg") is None
True
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

__all__ = ["estimate_jpeg_quality", "ijg_table", "jpeg_quant_tables"]

# Annex K tables in zigzag order (the order DQT segments store them).
_LUMA = (16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22,
         24, 49, 35, 37, 29, 40, 58, 51, 61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68,
         87, 69, 55, 56, 80, 109, 81, 87, 95, 98, 103, 104, 103, 62, 77, 113, 121, 112,
         100, 120, 92, 101, 103, 99)  # fmt: skip
_CHROMA = (17, 18, 18, 24, 21, 24, 47, 26, 26, 47, 99, 66, 56, 66, 99) + (99,) * 49
_STANDARD = {0: np.array(_LUMA, dtype=np.int64), 1: np.array(_CHROMA, dtype=np.int64)}
#: The largest mean absolute difference per coefficient still called a match
#: (other encoders round the scaled tables slightly differently).
TOLERANCE = 1.0
_MAX_SCAN = 1 << 20


def ijg_table(table_id: int, quality: int) -> NDArray[np.int64]:
    """The standard table ``table_id`` (0 luminance, 1 chrominance) scaled to ``quality``.

    libjpeg's ``jpeg_quality_scaling`` with baseline clamping to 1..255.

    >>> ijg_table(0, 50)[:4].tolist(), ijg_table(0, 100)[:4].tolist()
    ([16, 11, 12, 14], [1, 1, 1, 1])
    """
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STANDARD[table_id] * scale + 50) // 100, 1, 255)


def jpeg_quant_tables(data: bytes) -> dict[int, NDArray[np.int64]]:
    """The quantisation tables (zigzag order) in the DQT segments before a JPEG's first scan.

    Empty when ``data`` is not a JPEG or holds no tables; stops at the first
    malformed segment, and reads at most the first MiB.
    """
    tables: dict[int, NDArray[np.int64]] = {}
    if data[:2] != b"\xff\xd8":
        return tables
    pos, end = 2, min(len(data), _MAX_SCAN)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if length < 2 or pos + 2 + length > len(data):
            break
        if marker == 0xDB:
            _parse_dqt(data[pos + 4 : pos + 2 + length], tables)
        pos += 2 + length
    return tables


def _parse_dqt(segment: bytes, tables: dict[int, NDArray[np.int64]]) -> None:
    i = 0
    while i < len(segment):
        precision, table_id = segment[i] >> 4, segment[i] & 0x0F
        width = 2 if precision else 1
        raw = segment[i + 1 : i + 1 + 64 * width]
        if len(raw) < 64 * width:
            return
        tables[table_id] = np.frombuffer(raw, dtype=">u2" if width == 2 else "u1").astype(np.int64)
        i += 1 + 64 * width


def estimate_jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) whose tables best match ``data``'s; ``None`` when none does.

    Both the luminance and, when present, the chrominance table are compared;
    among qualities that fit equally well (near 100 several give the same
    tables) the highest is returned.
    """
    tables = jpeg_quant_tables(data)
    if 0 not in tables:
        return None
    used = [t for t in (0, 1) if t in tables]
    best, best_err = None, float("inf")
    for quality in range(1, 101):
        err = sum(float(np.abs(tables[t] - ijg_table(t, quality)).mean()) for t in used) / len(used)
        if err <= best_err:
            best, best_err = quality, err
    return best if best_err <= TOLERANCE else None
