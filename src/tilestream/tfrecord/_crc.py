"""Masked CRC32C, the checksum of the TFRecord framing: the one place the mask is computed.

``crc32c`` (the package, a hard dependency) checksums any buffer, a
memoryview of a memory map included, without copying it: the readers check
a record where it lies in the file's pages and copy it out afterwards, while
it is still in the CPU cache (``docs/benchmarks.md`` has the measurements).

Examples
--------
>>> masked_crc32c(b"")
2726488792
>>> hex(crc32c(b"123456789"))
'0xe3069283'
>>> crc32c(memoryview(b"__123456789")[2:]) == crc32c(b"123456789")
True
>>> mask(crc32c(b"abc")) == masked_crc32c(b"abc")
True
"""

from __future__ import annotations

from crc32c import crc32c

__all__ = ["MASK_DELTA", "crc32c", "mask", "masked_crc32c"]

MASK_DELTA = 0xA282EAD8


def mask(crc: int) -> int:
    """Mask a CRC32C as TFRecord does (rotate right by 15 bits, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C of ``data`` (any bytes-like object), as stored in TFRecord framing."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF
