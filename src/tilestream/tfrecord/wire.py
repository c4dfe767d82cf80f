"""The protobuf wire format of ``tf.train.Example``: varints, fields, and encoded messages.

The one place the wire format is read and written by hand: the Example
decoder and encoder (:mod:`.example`), the tile fast path, the location
scan of the indexes, and fixed-schema writers (the object-detection
records of :mod:`tilestream.detection.schema`) all build on these.

Reading: :func:`read_varint` and :func:`skip_field` take a buffer (``bytes``,
an ``mmap``, a ``memoryview``), a position and the end of the enclosing
message, and return the new position; malformed bytes raise
:class:`WireError` (a :class:`~tilestream.errors.CorruptRecordError`).

Writing: :func:`encode_varint`, :func:`length_delimited`, and the messages of
an Example: :func:`map_entry` (one ``Features`` entry) and the three kinds
of ``Feature`` (:func:`bytes_feature`, :func:`float_feature`,
:func:`int64_feature`).

Examples
--------
>>> encode_varint(300)
b'\\xac\\x02'
>>> read_varint(b"\\xac\\x02", 0, 2)
(300, 2)
>>> skip_field(b"\\x08\\x96\\x01\\x10", 1, 4, 0)  # a varint field's value
3
>>> read_varint(b"\\x80", 0, 1)
Traceback (most recent call last):
...
tilestream.tfrecord.wire.WireError: varint runs past the end of its message at payload byte 1
>>> map_entry(b"n", int64_feature([7]))
b'\\n\\n\\n\\x01n\\x12\\x05\\x1a\\x03\\n\\x01\\x07'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tilestream.errors import CorruptRecordError

__all__ = [
    "VARINT1",
    "WireError",
    "bytes_feature",
    "encode_varint",
    "float_feature",
    "int64_feature",
    "int64_packed_feature",
    "length_delimited",
    "map_entry",
    "read_varint",
    "skip_field",
]

#: The one-byte varints, ``VARINT1[n] == encode_varint(n)`` for ``n < 128``.
VARINT1: list[bytes] = [bytes((i,)) for i in range(128)]

_M64 = (1 << 64) - 1


class WireError(CorruptRecordError):
    """Malformed protobuf bytes.

    Raised without a file name by the primitives here; a reader re-raises
    it as a :class:`~tilestream.errors.CorruptRecordError` naming the file,
    the record and its offset.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


# --------------------------------------------------------------------------- reading


def read_varint(data: Any, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``data[pos]``: ``(value, position after it)``.

    Raises
    ------
    WireError
        The varint runs past ``end`` or is longer than 10 bytes.
    """
    if pos + 3 <= end:  # unrolled: lengths up to 2 MiB
        b = data[pos]
        if b < 0x80:
            return b, pos + 1
        c = data[pos + 1]
        if c < 0x80:
            return (b & 0x7F) | (c << 7), pos + 2
        d = data[pos + 2]
        if d < 0x80:
            return (b & 0x7F) | ((c & 0x7F) << 7) | (d << 14), pos + 3
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"varint runs past the end of its message at payload byte {pos}")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at payload byte {pos}")


def skip_field(data: Any, pos: int, end: int, wire: int) -> int:
    """Skip a field's value (its tag already read, of wire type ``wire``); the new position.

    Raises
    ------
    WireError
        An invalid wire type, or a value running past ``end``.
    """
    if wire == 0:
        _, pos = read_varint(data, pos, end)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = read_varint(data, pos, end)
        pos += n
    elif wire == 5:
        pos += 4
    else:
        raise WireError(f"invalid wire type {wire} at payload byte {pos}")
    if pos > end:
        raise WireError("field runs past the end of its message")
    return pos


# --------------------------------------------------------------------------- writing


def encode_varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative ``n``.

    A negative int64 is encoded as its 64-bit two's complement
    (``n & (2**64 - 1)``), as protobuf does.

    >>> encode_varint(1), encode_varint(-1) == b"\\xff" * 9 + b"\\x01"
    (b'\\x01', True)
    """
    if n < 0x80:
        if n >= 0:
            return VARINT1[n]
        n &= _M64
    elif n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    elif n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the varint length of ``payload``, ``payload``.

    >>> length_delimited(b"\\x0a", b"abc")
    b'\\n\\x03abc'
    """
    return tag + encode_varint(len(payload)) + payload


_KEY_HEADS: dict[bytes, bytes] = {}


def map_entry(key: bytes, feature: bytes) -> bytes:
    """One entry of a ``Features`` map (field 1 of ``Features``): ``key`` and its encoded Feature."""
    head = _KEY_HEADS.get(key)
    if head is None:
        head = b"\x0a" + encode_varint(len(key)) + key + b"\x12"
        if len(_KEY_HEADS) < 4096:
            _KEY_HEADS[key] = head
    body = head + encode_varint(len(feature)) + feature
    return b"\x0a" + encode_varint(len(body)) + body


def bytes_feature(values: Sequence[bytes]) -> bytes:
    """A ``Feature`` holding a ``BytesList`` of ``values``."""
    return length_delimited(
        b"\x0a", b"".join([b"\x0a" + encode_varint(len(v)) + v for v in values])
    )


def float_feature(packed: bytes) -> bytes:
    """A ``Feature`` holding a ``FloatList`` whose values are ``packed`` (little-endian float32)."""
    return length_delimited(b"\x12", length_delimited(b"\x0a", packed) if packed else b"")


def int64_feature(values: Sequence[int]) -> bytes:
    """A ``Feature`` holding an ``Int64List`` of ``values`` (packed; negatives as 10 bytes)."""
    if all(type(v) is int and 0 <= v < 0x80 for v in values):
        packed = bytes(values)  # the usual case: one byte per value
    else:
        packed = b"".join([encode_varint(int(v) & _M64) for v in values])
    return int64_packed_feature(packed)


def int64_packed_feature(packed: bytes) -> bytes:
    """A ``Feature`` holding an ``Int64List`` whose packed varints are ``packed``."""
    return length_delimited(b"\x1a", length_delimited(b"\x0a", packed) if packed else b"")
