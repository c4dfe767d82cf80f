"""Masked CRC32C, the checksum of the TFRecord framing.

Uses the hardware-accelerated ``google-crc32c`` package (Apache-2.0); falls
back to the ``crc32c`` package when only that one is installed. Both run at
about 20 GB/s on SSE4.2 hardware, with the same per-call overhead (~0.12 us).

Examples
--------
>>> masked_crc32c(b"")
2726488792
>>> hex(crc32c(b"123456789"))
'0xe3069283'
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MASK_DELTA", "crc32c", "mask", "masked_crc32c"]

MASK_DELTA = 0xA282EAD8

_crc: Callable[[bytes], int]
try:
    from google_crc32c import value as _google_value

    _crc = _google_value
except ImportError:  # pragma: no cover - exercised only without google-crc32c
    from crc32c import crc32c as _crc32c_value

    _crc = _crc32c_value


def crc32c(data: bytes) -> int:
    """Plain CRC32C (Castagnoli) of ``data``."""
    return _crc(data)


def mask(crc: int) -> int:
    """Mask a CRC32C as TFRecord does (rotate right by 15 bits, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C of ``data``, as stored in TFRecord framing."""
    c = _crc(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF
