"""Byte ranges: coalescing many small reads into few requests, and a seekable file over a store.

:func:`coalesce` merges ranges whose gap is small into one request (the bytes
in the gaps are read and thrown away: a request costs far more than a few
kilobytes on any object store). :class:`RangeReader` is a raw, seekable file
whose reads are :meth:`Store.read_range <tilestream.storage.Store.read_range>`
calls; :func:`open_ranges` wraps it in a buffered reader.

Examples
--------
>>> [(r.start, r.end, r.members) for r in coalesce([(0, 10), (12, 4), (1000, 5)], max_gap=8)]
[(0, 16, (0, 1)), (1000, 1005, (2,))]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_GAP",
    "DEFAULT_MAX_REQUEST",
    "RangeReader",
    "Request",
    "check_range",
    "coalesce",
    "open_ranges",
    "split_request",
]

#: Ranges closer than this are read in one request (bytes between them are discarded).
DEFAULT_MAX_GAP = 64 * 1024
#: A coalesced request grows to at most this many bytes (a single range may be larger).
DEFAULT_MAX_REQUEST = 16 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    """One request covering the ranges ``members`` (indices into the caller's list)."""

    start: int
    end: int
    members: tuple[int, ...]

    @property
    def size(self) -> int:
        """Bytes the request reads."""
        return self.end - self.start


def check_range(offset: int, size: int) -> None:
    """Refuse a negative offset or size (``ValueError``).

    >>> check_range(0, 0)
    >>> check_range(-1, 4)
    Traceback (most recent call last):
    ValueError: a byte range needs offset >= 0 and size >= 0, not (-1, 4)
    """
    if offset < 0 or size < 0:
        raise ValueError(f"a byte range needs offset >= 0 and size >= 0, not ({offset}, {size})")


def coalesce(
    ranges: Sequence[tuple[int, int]],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    max_request: int = DEFAULT_MAX_REQUEST,
) -> list[Request]:
    """Group ``(offset, size)`` ranges into requests, in offset order.

    Two ranges share a request when the gap between them is at most ``max_gap``
    and the request stays within ``max_request`` bytes. Overlapping and
    repeated ranges share one. Empty ranges get no request of their own.

    >>> [(r.start, r.end) for r in coalesce([(0, 4), (2, 4), (100, 0)], max_gap=0)]
    [(0, 6)]
    """
    order = sorted((r for r in range(len(ranges)) if ranges[r][1] > 0), key=lambda i: ranges[i])
    for offset, size in ranges:
        check_range(offset, size)
    out: list[Request] = []
    start = end = 0
    members: list[int] = []
    for i in order:
        offset, size = ranges[i]
        stop = offset + size
        if members and offset - end <= max_gap and max(end, stop) - start <= max_request:
            end = max(end, stop)
            members.append(i)
            continue
        if members:
            out.append(Request(start, end, tuple(members)))
        start, end, members = offset, stop, [i]
    if members:
        out.append(Request(start, end, tuple(members)))
    return out


def split_request(
    request: Request, data: bytes, ranges: Sequence[tuple[int, int]]
) -> dict[int, bytes]:
    """The bytes of each member range of ``request``, cut from the request's ``data``.

    ``data`` may be shorter than the request at the end of the object; each
    range then gets what there is.
    """
    out: dict[int, bytes] = {}
    view = memoryview(data)
    for i in request.members:
        offset, size = ranges[i]
        lo = offset - request.start
        out[i] = bytes(view[lo : lo + size])
    return out


class RangeReader(io.RawIOBase):
    """A read-only, seekable raw file whose reads are ranged reads of one object.

    Parameters
    ----------
    read_range
        ``read_range(offset, size) -> bytes`` (fewer bytes only at the end).
    size
        The object's size in bytes (fixed when the reader opens).
    name
        What the file is called (its URL), for ``repr`` and messages.
    """

    def __init__(self, read_range: Callable[[int, int], bytes], size: int, name: str) -> None:
        super().__init__()
        self._read = read_range
        self._size = size
        self._pos = 0
        self.name = name

    def __repr__(self) -> str:
        return f"<RangeReader {self.name!r} size={self._size}>"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        want = min(len(buffer), max(0, self._size - self._pos))
        if want == 0:
            return 0
        data = self._read(self._pos, want)
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        data = (
            self._read(self._pos, max(0, self._size - self._pos)) if self._pos < self._size else b""
        )
        self._pos += len(data)
        return data


def open_ranges(
    read_range: Callable[[int, int], bytes], size: int, name: str, *, buffer_size: int
) -> io.BufferedReader:
    """A buffered, seekable binary file over ``read_range`` (see :class:`RangeReader`)."""
    return io.BufferedReader(RangeReader(read_range, size, name), buffer_size=buffer_size)
