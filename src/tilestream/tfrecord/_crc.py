"""Masked CRC32C, the checksum of the TFRecord framing: the one place the mask is computed.

``crc32c`` (the package, a hard dependency) checksums any buffer, a
memoryview of a memory map included, without copying it: the readers check
a record where it lies in the file's pages and copy it out afterwards, while
it is still in the CPU cache (``docs/benchmarks.md`` has the measurements).

:func:`masked_crc32c` is the compiled core's where it is built with hardware
CRC32C (checksum and mask in one call, the same values); else the Python
function here, on the ``crc32c`` package.

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

from collections.abc import Callable
from typing import Any

from crc32c import crc32c

from tilestream.tfrecord._core import native

__all__ = ["MASK_DELTA", "crc32c", "mask", "masked_crc32c", "masked_crc32c_py"]

MASK_DELTA = 0xA282EAD8


def mask(crc: int) -> int:
    """Mask a CRC32C as TFRecord does (rotate right by 15 bits, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c_py(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C of ``data`` (any bytes-like object), as stored in TFRecord framing."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


#: The masked CRC32C of a bytes-like object, as stored in TFRecord framing.
masked_crc32c: Callable[[Any], int] = (
    native.masked_crc32c if native is not None and native.HARDWARE_CRC else masked_crc32c_py
)
