"""What stored tile bytes need besides their decoder, to give OpenSlide's pixels.

:func:`merge_jpeg_tables` makes an abbreviated TIFF JPEG tile a standalone
JPEG file (the page's ``JPEGTables`` merged in; an Adobe APP14 marker with
``transform=0`` when the tile is RGB-coded, as Aperio's are, so decoders do
not assume YCbCr). :func:`ycbcr_to_rgb` converts the YCbCr components of
Aperio's JPEG 2000 tiles (compression :data:`APERIO_JP2K_YCBCR`) to RGB with
the fixed-point tables libjpeg and OpenSlide use.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["APERIO_JP2K_YCBCR", "merge_jpeg_tables", "ycbcr_to_rgb"]

#: Aperio JPEG 2000 with YCbCr components (no colour transform in the codestream).
APERIO_JP2K_YCBCR = 33003


def _fix(value: float) -> int:
    return int(value * 65536 + 0.5)


# YCbCr -> RGB chroma contributions, as libjpeg's and OpenSlide's tables (16.16 fixed point).
_CHROMA = np.arange(256, dtype=np.int64) - 128
_R_CR = (_fix(1.40200) * _CHROMA + (1 << 15)) >> 16
_B_CB = (_fix(1.77200) * _CHROMA + (1 << 15)) >> 16
_G_CB = -_fix(0.34414) * _CHROMA + (1 << 15)
_G_CR = -_fix(0.71414) * _CHROMA


def ycbcr_to_rgb(ycc: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Full-range YCbCr to RGB exactly as OpenSlide converts Aperio 33003 tiles.

    Examples
    --------
    >>> import numpy as np
    >>> ycbcr_to_rgb(np.array([[[128, 128, 128], [76, 85, 255]]], np.uint8)).tolist()
    [[[128, 128, 128], [254, 0, 0]]]
    """
    y = ycc[..., 0].astype(np.int64)
    cb, cr = ycc[..., 1], ycc[..., 2]
    out = np.empty((*ycc.shape[:-1], 3), np.uint8)
    out[..., 0] = np.clip(y + _R_CR[cr], 0, 255)
    out[..., 1] = np.clip(y + ((_G_CB[cb] + _G_CR[cr]) >> 16), 0, 255)
    out[..., 2] = np.clip(y + _B_CB[cb], 0, 255)
    return out


def merge_jpeg_tables(tile: bytes, tables: bytes | None, *, rgb: bool) -> bytes:
    """A standalone JPEG from an abbreviated TIFF tile stream and its ``JPEGTables``.

    Parameters
    ----------
    tile
        The stored tile bytes (SOI ... EOI, possibly without quantisation and
        Huffman tables).
    tables
        The page's ``JPEGTables`` (SOI, DQT/DHT segments, EOI) or ``None``.
    rgb
        True when the tile is RGB-coded (TIFF photometric RGB); an Adobe APP14
        marker with ``transform=0`` is added so decoders do not assume YCbCr.

    Examples
    --------
    >>> tile = b"\\xff\\xd8" + b"\\xff\\xda\\x00\\x02" + b"\\xff\\xd9"
    >>> tables = b"\\xff\\xd8" + b"\\xff\\xdb\\x00\\x02" + b"\\xff\\xd9"
    >>> merge_jpeg_tables(tile, tables, rgb=False).hex()
    'ffd8ffdb0002ffda0002ffd9'
    """
    if tile[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    parts = [b"\xff\xd8"]
    if rgb:
        # APP14 "Adobe": version 100, flags0 0, flags1 0, transform 0 (no colour transform).
        parts.append(b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00")
    if tables:
        body = tables[2:]
        if body.endswith(b"\xff\xd9"):
            body = body[:-2]
        parts.append(body)
    parts.append(tile[2:])
    return b"".join(parts)
