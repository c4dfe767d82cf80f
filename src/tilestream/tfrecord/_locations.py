"""Tile locations read from serialized Examples: ``loc_x``/``loc_y`` without decoding the rest.

:func:`record_location` is what indexes store: the compiled core's
``tile_location`` reads a tile-shaped record (the image skipped unread); anything else, or without the compiled core, goes through the
Python reader below, which walks only the map keys and the two values, so
it also works on a memory map without copying the image bytes. Both give
the same answer where the compiled one answers (checked by property tests).

Examples
--------
>>> from tilestream.tfrecord.example import serialized_record
>>> rec = serialized_record("s", bytes(1000), 256, -512)
>>> record_location(rec, 0, len(rec), "x", 0, 0)
(256, -512)
>>> record_location(b"not an example", 0, 14, "x", 0, 0) is None
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tilestream.tfrecord._core import native as _native
from tilestream.tfrecord._decode import parse_feature
from tilestream.tfrecord.wire import WireError, read_varint, skip_field

__all__ = ["record_location", "tile_location_fast"]

log = logging.getLogger(__name__)

#: The compiled ``tile_location(data)`` (``None`` without the compiled core): a
#: tile-shaped record's location, or ``None`` when :func:`record_location` must decide.
tile_location_fast: Callable[[Any], tuple[int, int] | None] | None = (
    None if _native is None else _native.tile_location
)


def record_location(
    buf: Any, start: int, end: int, path: str, record: int, offset: int
) -> tuple[int, int] | None:
    """``(loc_x, loc_y)`` of the Example in ``buf[start:end]``, or ``None`` when it has none.

    ``path``, ``record`` and ``offset`` only name the record in a debug log
    when it is not an Example.
    """
    native = _native
    if native is not None:
        with memoryview(buf) as whole, whole[start:end] as part:
            loc = native.tile_location(part)
        if loc is not None:
            return loc
    return _python_location(buf, start, end, path, record, offset)


def _python_location(
    buf: Any, start: int, end: int, path: str, record: int, offset: int
) -> tuple[int, int] | None:
    try:
        return _record_location(buf, start, end)
    except _SequenceExample:
        return None
    except (IndexError, WireError) as exc:
        log.debug("%s: record %d at byte %d is not an Example (%s)", path, record, offset, exc)
        return None


def _entry_int(buf: Any, pos: int, end: int) -> int | None:
    """The first value of a serialized int64 Feature (``None`` for any other kind)."""
    data = bytes(buf[pos:end])
    kind, values = parse_feature(data, 0, len(data))
    if kind != "int64_list" or values is None or len(values) == 0:
        return None
    return int(values[0])


def _record_location(buf: Any, start: int, end: int) -> tuple[int, int] | None:
    """``(loc_x, loc_y)`` of one record, reading only the map keys and those two values.

    Works on a memory map without copying the (large) image bytes.
    """
    found: dict[bytes, int | None] = {}
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        if tag == 0x12:
            raise _SequenceExample
        if tag != 0x0A:
            pos = skip_field(buf, pos, end, tag & 7)
            continue
        n, pos = read_varint(buf, pos, end)
        fend = pos + n
        while pos < fend:  # Features: map entries
            tag = buf[pos]
            if tag != 0x0A:
                tag, pos = read_varint(buf, pos, fend)
                pos = skip_field(buf, pos, fend, tag & 7)
                continue
            n = buf[pos + 1]
            pos += 2
            if n >= 0x80:
                n, pos = read_varint(buf, pos - 1, fend)
            eend = pos + n
            if eend > fend:
                raise WireError("map entry runs past its message")
            klen = buf[pos + 1] if pos + 1 < eend else 0x80
            if buf[pos] == 0x0A and klen < 0x80:  # usual layout: the key first
                key = buf[pos + 2 : pos + 2 + klen]
                if key != b"loc_x" and key != b"loc_y":
                    pos = eend  # skip the value (an image) unread
                    continue
            key = b""
            vpos = vend = -1
            while pos < eend:
                tag, pos = read_varint(buf, pos, eend)
                if tag in (0x0A, 0x12):
                    n, pos = read_varint(buf, pos, eend)
                    if tag == 0x0A:
                        key = bytes(buf[pos : pos + n]) if n <= 16 else b"?"
                    else:
                        vpos, vend = pos, pos + n
                    pos += n
                else:
                    pos = skip_field(buf, pos, eend, tag & 7)
            if key in (b"loc_x", b"loc_y") and vpos >= 0:
                found[key] = _entry_int(buf, vpos, vend)
            pos = eend
        pos = fend
    x, y = found.get(b"loc_x"), found.get(b"loc_y")
    if x is None or y is None:
        return None
    return x, y


class _SequenceExample(Exception):
    pass
