"""TFRecord framing: the bytes around each record, and compressed streams.

Each record is stored as::

    uint64 length (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

so a record takes ``length + 16`` bytes. A file may be compressed as a whole
with GZIP or ZLIB (TensorFlow's ``compression_type``); offsets are then
offsets in the uncompressed stream.

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
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

from tilestream.errors import ConfigError, CorruptRecordError, TruncatedRecordError
from tilestream.tfrecord._crc import masked_crc32c

__all__ = [
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "Compression",
    "CompressionArg",
    "Source",
    "detect_compression",
    "frame",
    "normalize_compression",
    "open_stream",
    "source_name",
]

HEADER_SIZE = 12
FRAME_OVERHEAD = 16

Compression = Literal["gzip", "zlib"] | None
CompressionArg = Literal["auto", "gzip", "zlib", "GZIP", "ZLIB", ""] | None
Source = str | os.PathLike[str] | BinaryIO

_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def frame(payload: bytes) -> bytes:
    """Frame one record (length, its CRC, payload, payload CRC).

    Examples
    --------
    >>> frame(b"")
    b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00)\\x03\\x98\\x07\\xd8\\xea\\x82\\xa2'
    """
    header = _LEN.pack(len(payload))
    return b"".join(
        (header, _CRC.pack(masked_crc32c(header)), payload, _CRC.pack(masked_crc32c(payload)))
    )


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
