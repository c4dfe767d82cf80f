"""TFRecord framing: the bytes around each record, and compressed streams.

Each record is stored as::

    uint64 length (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

so a record takes ``length + 16`` bytes. A file may be compressed as a whole
with GZIP or ZLIB (TensorFlow's ``compression_type``); offsets are then
offsets in the uncompressed stream.

This module is the one place frames are checked. Over any buffer (``bytes``
fetched from anywhere, a memory map, a ``bytearray`` being filled, one
frame read by ``os.pread``):

- :func:`read_header` and :func:`check_payload` check one header and one
  payload at an offset; :func:`payload_of` checks one whole frame;
- :func:`iter_frames` walks the frames of a buffer, yielding payloads (or
  what a ``take`` callback makes of them), keeping count in a
  :class:`FrameCursor`; ``final=False`` stops quietly before a frame that
  is not complete yet, for callers that read the data in pieces.

Errors name the file, the record number and the byte offset of the record.

Examples
--------
>>> framed = frame(b"abc")
>>> len(framed), framed[:8]
(19, b'\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00')
>>> detect_compression(framed)
>>> import gzip
>>> detect_compression(gzip.compress(framed))
'gzip'
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from tilestream.errors import ConfigError, CorruptRecordError, TruncatedRecordError
from tilestream.tfrecord._crc import masked_crc32c

__all__ = [
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "OFFSETS",
    "Compression",
    "CompressionArg",
    "FrameCursor",
    "Source",
    "check_payload",
    "detect_compression",
    "footer",
    "frame",
    "header",
    "iter_frames",
    "normalize_compression",
    "open_stream",
    "payload_of",
    "read_header",
    "source_name",
    "truncation",
]

HEADER_SIZE = 12
FRAME_OVERHEAD = 16

Compression = Literal["gzip", "zlib"] | None
CompressionArg = Literal["auto", "gzip", "zlib", "GZIP", "ZLIB", ""] | None
Source = str | os.PathLike[str] | BinaryIO

_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEAD = struct.Struct("<QI")

LENGTH_CRC_MISMATCH = "length CRC mismatch (not a TFRecord file, or a corrupt header)"


def header(length: int) -> bytes:
    """The 12 bytes before a payload of ``length`` bytes: the length and its masked CRC."""
    head = _LEN.pack(length)
    return head + _CRC.pack(masked_crc32c(head))


def footer(payload: bytes | bytearray | memoryview) -> bytes:
    """The 4 bytes after ``payload``: its masked CRC."""
    return _CRC.pack(masked_crc32c(payload))


def frame(payload: bytes) -> bytes:
    """Frame one record (length, its CRC, payload, payload CRC).

    Examples
    --------
    >>> frame(b"")
    b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00)\\x03\\x98\\x07\\xd8\\xea\\x82\\xa2'
    """
    return b"".join((header(len(payload)), payload, footer(payload)))


def normalize_compression(compression: CompressionArg | str) -> Compression | Literal["auto"]:
    """Accept TensorFlow's spellings (``"GZIP"``, ``"ZLIB"``, ``""``) as well as ours.

    Examples
    --------
    >>> normalize_compression("GZIP"), normalize_compression(""), normalize_compression(None)
    ('gzip', None, None)
    """
    if compression is None or compression == "":
        return None
    if not isinstance(compression, str):
        raise ConfigError(f"compression must be a string or None, not {compression!r}")
    c = compression.lower()
    if c in ("auto", "gzip", "zlib"):
        return c  # type: ignore[return-value]
    if c == "none":
        return None
    raise ConfigError(f"compression must be 'auto', None, 'gzip' or 'zlib', not {compression!r}")


def detect_compression(head: bytes) -> Compression:
    """Guess the compression of a stream from its first bytes.

    An uncompressed TFRecord starts with a length whose masked CRC follows it;
    that is checked first, so a record length that happens to look like a
    ZLIB header is not misread.
    """
    if len(head) >= HEADER_SIZE and _CRC.unpack_from(head, 8)[0] == masked_crc32c(head[:8]):
        return None
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and (head[0] & 0x0F) == 8 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "zlib"
    return None


def source_name(source: Source) -> str | None:
    """The path of a source, for messages (``None`` for an anonymous stream)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


class _InflateReader:
    """``read(n)`` over a GZIP (possibly multi-member) or ZLIB byte stream.

    Data decompressed before a premature end is returned first; the
    ``EOFError`` comes with the next read, so every intact record is seen.
    """

    def __init__(self, raw: Callable[[int], bytes], wbits: int, chunk: int = 1 << 20) -> None:
        self._raw = raw
        self._wbits = wbits
        self._chunk = chunk
        self._d = zlib.decompressobj(wbits)
        self._in = b""

    def read(self, n: int) -> bytes:
        out: list[bytes] = []
        got = 0
        while got < n:
            if self._d.eof:
                rest = self._d.unused_data or self._raw(self._chunk)
                if not rest:
                    break  # clean end of the stream
                if self._wbits != 31:
                    raise zlib.error("unexpected data after the end of the ZLIB stream")
                self._d = zlib.decompressobj(self._wbits)  # next GZIP member
                self._in = rest
            if not self._in:
                self._in = self._raw(self._chunk)
                if not self._in:
                    if got:
                        break
                    raise EOFError("compressed stream ends before its end marker")
            data = self._d.decompress(self._in, n - got)
            self._in = self._d.unconsumed_tail
            if data:
                out.append(data)
                got += len(data)
        return b"".join(out)


class Stream:
    """A readable (uncompressed) byte stream of TFRecord data.

    Attributes
    ----------
    read
        ``read(n) -> bytes``: up to ``n`` bytes, fewer only at the end.
    size
        Bytes in the uncompressed stream when known cheaply (plain files), else ``None``.
    compression
        The compression that was decoded.
    path
        File name for messages.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        size: int | None,
        compression: Compression,
        path: str | None,
        close: Callable[[], None] | None = None,
        readinto: Callable[[memoryview], int | None] | None = None,
        prefix: bytes = b"",
    ) -> None:
        self.read = _prefixed(prefix, read) if prefix else read
        self.size = size
        self.compression = compression
        self.path = path
        self._close = close
        self._readinto = readinto
        self._prefix = prefix

    def readinto(self, view: memoryview) -> int:
        """Fill the start of ``view``; return the byte count (0 only at the end)."""
        if self._prefix:
            k = min(len(self._prefix), len(view))
            view[:k] = self._prefix[:k]
            self._prefix = self._prefix[k:]
            if self._prefix:
                return k
            self.read = self._read_after_prefix
            return k
        if self._readinto is not None:
            return self._readinto(view) or 0
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _read_after_prefix(self, n: int) -> bytes:  # pragma: no cover - read() after readinto()
        raise ConfigError("a Stream is read either with read() or with readinto(), not both")

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prefixed(prefix: bytes, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    state = {"prefix": prefix}

    def read_with_prefix(n: int) -> bytes:
        p = state["prefix"]
        if not p:
            return read(n)
        if len(p) >= n:
            state["prefix"] = p[n:]
            return p[:n]
        state["prefix"] = b""
        return p + read(n - len(p))

    return read_with_prefix


def open_stream(source: Source, compression: CompressionArg | str = "auto") -> Stream:
    """Open a path or binary file object as an uncompressed TFRecord byte stream.

    Parameters
    ----------
    source
        A path, or a binary file object positioned at the start of the data
        (it is not closed).
    compression
        ``"auto"`` (detect from the first bytes), ``None``, ``"gzip"`` or ``"zlib"``.

    Raises
    ------
    FileNotFoundError
        The path does not exist (the builtin error, as ``open`` raises it).
    """
    comp = normalize_compression(compression)
    path = source_name(source)
    owned = isinstance(source, (str, os.PathLike))
    if owned:
        fh: BinaryIO = open(Path(source), "rb", buffering=0)  # type: ignore[arg-type,assignment] # noqa: SIM115
    else:
        fh = source  # type: ignore[assignment]
        if isinstance(fh, io.TextIOBase):
            raise ConfigError("TFRecords must be read from a binary file object, not a text one")
    close = fh.close if owned else None
    try:
        raw_read: Callable[[int], bytes] = fh.read
        size: int | None = None
        if owned:
            st = os.fstat(fh.fileno())
            size = st.st_size if stat.S_ISREG(st.st_mode) else None  # a FIFO reports 0
        else:
            size = _remaining(fh)
        head = b""
        if comp == "auto":
            head = raw_read(HEADER_SIZE)
            comp = detect_compression(head)
        if comp is None:
            return Stream(
                raw_read,
                size=size,
                compression=None,
                path=path,
                close=close,
                readinto=getattr(fh, "readinto", None),
                prefix=head,
            )
        if head:
            raw_read = _prefixed(head, raw_read)
        wbits = 31 if comp == "gzip" else 15
        return Stream(
            _InflateReader(raw_read, wbits).read,
            size=None,
            compression=comp,
            path=path,
            close=close,
        )
    except BaseException:
        if close is not None:
            close()
        raise


def _remaining(fh: BinaryIO) -> int | None:
    """Bytes from the current position of a seekable file object to its end (else ``None``)."""
    try:
        if not fh.seekable():
            return None
        start = fh.tell()
        end = fh.seek(0, io.SEEK_END)
        fh.seek(start)
    except (OSError, ValueError, AttributeError):
        return None
    return max(end - start, 0)


def wrap_stream_error(
    exc: BaseException, *, path: str | None, record: int, offset: int
) -> CorruptRecordError:
    """Turn a decompression error into ours (truncated or corrupt)."""
    if isinstance(exc, EOFError):
        return TruncatedRecordError(
            f"compressed stream ends early ({exc})", path=path, record=record, offset=offset
        )
    return CorruptRecordError(
        f"compressed stream is corrupt ({type(exc).__name__}: {exc})",
        path=path,
        record=record,
        offset=offset,
    )


# --------------------------------------------------------------------------- checking frames


def read_header(
    buf: Any, pos: int, *, path: str | None = None, record: int | None = None, base: int = 0
) -> int:
    """The payload length declared by the header at ``buf[pos:pos + 12]``, its CRC checked.

    ``base`` is the stream offset of ``buf[0]`` (for the error's offset).

    Raises
    ------
    CorruptRecordError
        The length's CRC does not match.
    """
    length, lcrc = _HEAD.unpack_from(buf, pos)
    if lcrc != masked_crc32c(buf[pos : pos + 8]):
        raise CorruptRecordError(LENGTH_CRC_MISMATCH, path=path, record=record, offset=base + pos)
    return int(length)


def check_payload(
    buf: Any,
    start: int,
    stop: int,
    *,
    path: str | None = None,
    record: int | None = None,
    base: int = 0,
) -> None:
    """Check the payload ``buf[start:stop]`` against the CRC stored after it.

    Pass a ``memoryview`` to checksum the bytes where they lie (no copy).
    The error's offset is the record's start, ``base + start - 12`` (``base``
    the stream offset of ``buf[0]``).

    Raises
    ------
    CorruptRecordError
        The CRC does not match.
    """
    if _CRC.unpack_from(buf, stop)[0] != masked_crc32c(buf[start:stop]):
        raise CorruptRecordError(
            f"data CRC mismatch (record of {stop - start} bytes)",
            path=path,
            record=record,
            offset=base + start - HEADER_SIZE,
        )


def payload_of(
    data: bytes,
    *,
    path: str | None = None,
    record: int | None = None,
    offset: int = 0,
    verify: bool = True,
) -> bytes:
    """The payload of the one frame that starts ``data`` (as read at ``offset`` of a file).

    ``data`` may go on past the frame. With ``verify``, both CRCs are checked.

    Raises
    ------
    CorruptRecordError
        A CRC does not match.
    TruncatedRecordError
        ``data`` ends inside the frame.

    Examples
    --------
    >>> payload_of(frame(b"abc") + b"next")
    b'abc'
    >>> payload_of(frame(b"abc")[:-1], path="f", record=3, offset=40)
    Traceback (most recent call last):
    ...
    tilestream.errors.TruncatedRecordError: f: record 3 at byte 40: record declares 3 data bytes but the data ends 18 bytes after the record start
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise TruncatedRecordError(
            f"file ends inside a record header ({size} of 12 bytes present)",
            path=path,
            record=record,
            offset=offset,
        )
    length, lcrc = _HEAD.unpack_from(data)
    if verify and lcrc != masked_crc32c(data[:8]):
        raise CorruptRecordError(LENGTH_CRC_MISMATCH, path=path, record=record, offset=offset)
    stop = HEADER_SIZE + length
    if stop + 4 > size:
        raise TruncatedRecordError(
            f"record declares {length} data bytes but the data ends {size} bytes after the "
            "record start",
            path=path,
            record=record,
            offset=offset,
        )
    payload = data[HEADER_SIZE:stop]
    if verify and _CRC.unpack_from(data, stop)[0] != masked_crc32c(payload):
        raise CorruptRecordError(
            f"data CRC mismatch (record of {length} bytes)",
            path=path,
            record=record,
            offset=offset,
        )
    return payload


class FrameCursor:
    """How far a walk over frames got: ``offset`` (stream offset after the last whole frame) and ``record`` (whole frames so far)."""

    __slots__ = ("offset", "record")

    def __init__(self, offset: int = 0, record: int = 0) -> None:
        self.offset = offset
        self.record = record


#: ``take`` of :func:`iter_frames` that yields each frame's stream offset.
OFFSETS: Callable[[int, int, int, int], Any] = lambda start, stop, record, offset: offset  # noqa: E731

Take = Callable[[int, int, int, int], Any]


def iter_frames(
    buf: Any,
    cursor: FrameCursor,
    *,
    pos: int = 0,
    end: int | None = None,
    base: int = 0,
    path: str | None = None,
    verify: bool = True,
    check_header: bool | None = None,
    final: bool = True,
    take: Take | None = None,
) -> Iterator[Any]:
    """Walk the frames of ``buf[pos:end]``, checking them.

    Parameters
    ----------
    buf
        ``bytes``, ``bytearray``, a memory map or a ``memoryview``: data CRCs
        are computed in place, each payload copied right after (still in cache).
    cursor
        Updated after every frame (``record`` counts on, ``offset`` is after the frame).
    base
        The stream offset of ``buf[0]`` (for offsets in errors and the cursor).
    verify
        Check data CRCs (and, unless ``check_header`` says otherwise, length CRCs).
    final
        ``buf`` holds the end of the stream: a frame cut short raises
        :class:`~tilestream.errors.TruncatedRecordError`; with ``False`` the
        walk stops before it (at ``cursor.offset - base``).
    take
        ``None`` yields payloads as ``bytes``, :data:`OFFSETS` frame offsets, any
        other ``take(start, stop, record, offset)`` what it returns for each frame.

    Examples
    --------
    >>> cursor = FrameCursor()
    >>> list(iter_frames(frame(b"a") + frame(b"bc"), cursor)), cursor.record, cursor.offset
    ([b'a', b'bc'], 2, 35)
    >>> list(iter_frames(frame(b"a") + frame(b"bc"), FrameCursor(), take=OFFSETS))
    [0, 17]
    """
    check_head = verify if check_header is None else check_header
    size = len(buf) if end is None else end
    n = cursor.record
    unpack = _HEAD.unpack_from
    unpack32 = _CRC.unpack_from
    masked = masked_crc32c
    as_bytes = isinstance(buf, bytearray)
    with memoryview(buf) as view:
        while pos + HEADER_SIZE <= size:
            length, lcrc = unpack(buf, pos)
            if check_head and lcrc != masked(view[pos : pos + 8]):
                raise CorruptRecordError(
                    LENGTH_CRC_MISMATCH, path=path, record=n, offset=base + pos
                )
            start = pos + HEADER_SIZE
            stop = start + length
            if stop + 4 > size:
                break
            if verify and unpack32(buf, stop)[0] != masked(view[start:stop]):
                raise CorruptRecordError(
                    f"data CRC mismatch (record of {length} bytes)",
                    path=path,
                    record=n,
                    offset=base + pos,
                )
            if take is None:
                item = bytes(view[start:stop]) if as_bytes else buf[start:stop]
            elif take is OFFSETS:
                item = base + pos
            else:
                item = take(start, stop, n, base + pos)
            pos = stop + 4
            n += 1
            cursor.record = n
            cursor.offset = base + pos
            yield item
    if final and pos < size:
        raise truncation(buf, pos, size, base=base, path=path, record=n)


def truncation(
    buf: Any, pos: int, size: int, *, base: int, path: str | None, record: int
) -> TruncatedRecordError:
    """The error for a stream that ends (at ``size``) inside the frame starting at ``buf[pos]``."""
    if pos + HEADER_SIZE > size:
        return TruncatedRecordError(
            f"file ends inside a record header ({size - pos} of 12 bytes present)",
            path=path,
            record=record,
            offset=base + pos,
        )
    length = _LEN.unpack_from(buf, pos)[0]
    return TruncatedRecordError(
        f"record declares {length} data bytes but the file ends "
        f"{size - pos} bytes after the record start",
        path=path,
        record=record,
        offset=base + pos,
    )
