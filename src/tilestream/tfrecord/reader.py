"""Sequential reading of TFRecord files: raw payloads, or decoded Examples.

The reader pulls the file in large chunks and cuts records out of them, so
the per-record cost is a header unpack, two CRCs and one slice. Errors name
the file, the record number and its byte offset; a length field that points
beyond the end of the file is reported as truncation, never allocated.

An uncompressed file given by path is memory-mapped and, when the compiled
core ``tilestream.tfrecord._native`` is built (it is by a normal install with
a C compiler), read by its ``Scanner``: a native thread checks the CRCs ahead
of the consumer outside the GIL while the calling thread copies the records
out (and, for :func:`iter_examples`, decodes tile-shaped Examples in C). At
the first record the scanner cannot vouch for, the Python loop below takes
over from that record and reports it, so errors and truncation behave the
same with or without the compiled core.

Examples
--------
>>> import io
>>> from tilestream.tfrecord.framing import frame
>>> data = frame(b"one") + frame(b"two")
>>> list(iter_records(io.BytesIO(data)))
[b'one', b'two']
>>> it = iter_records(io.BytesIO(data[:-3]), allow_truncated=True)
>>> list(it), it.truncated_at
([b'one'], 19)
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

from tilestream.errors import CorruptRecordError, TruncatedRecordError
from tilestream.tfrecord._crc import BUFFER_CRC, _crc, _crc_buf
from tilestream.tfrecord._decode import parse_at, parse_example
from tilestream.tfrecord._fast import parse_fast
from tilestream.tfrecord.framing import (
    HEADER_SIZE,
    CompressionArg,
    Source,
    Stream,
    detect_compression,
    normalize_compression,
    open_stream,
    source_name,
    wrap_stream_error,
)

try:
    from tilestream.tfrecord import _native
except ImportError:  # pragma: no cover - exercised only where it could not be compiled
    _native = None  # type: ignore[assignment]

__all__ = ["RecordIterator", "iter_examples", "iter_records"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 4 << 20
_PIECE = 4 << 20  # a record larger than the buffer is read this much at a time
_HEAD = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_DELTA = 0xA282EAD8


class RecordIterator(Iterator[bytes]):
    """Iterator over the raw payloads of a TFRecord stream.

    Returned by :func:`iter_records`. Besides iterating, it tells how far it
    got: ``records`` read so far, ``offset`` (bytes consumed in the
    uncompressed stream) and, when a truncated file was read with
    ``allow_truncated=True``, ``truncated_at`` (offset of the incomplete
    record) and ``error`` (the :class:`~tilestream.errors.TruncatedRecordError`
    that was not raised).

    Attributes
    ----------
    path : str | None
    records : int
    offset : int
    truncated_at : int | None
    error : TruncatedRecordError | None
    """

    def __init__(
        self,
        source: Source,
        *,
        compression: CompressionArg | str = "auto",
        verify: bool = True,
        allow_truncated: bool = False,
        on_truncated: Callable[[TruncatedRecordError], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.path = source_name(source)
        self._n = 0
        self._offset = 0
        self._scan: Any = None  # the native Scanner while it is reading
        self.truncated_at: int | None = None
        self.error: TruncatedRecordError | None = None
        self._source = source
        self._compression = normalize_compression(compression)
        self._verify = verify
        self._allow_truncated = allow_truncated
        self._on_truncated = on_truncated
        self._chunk = max(int(chunk_size), 64)
        self._gen: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self._gen is None:
            self._gen = self._records()
        return self._gen

    def __next__(self) -> bytes:
        return next(iter(self))

    @property
    def records(self) -> int:
        """Records read so far."""
        scan = self._scan
        return self._n if scan is None else int(scan.records)

    @property
    def offset(self) -> int:
        """Bytes consumed so far in the uncompressed stream (the end of the last record read)."""
        scan = self._scan
        return self._offset if scan is None else int(scan.pos)

    def close(self) -> None:
        """Stop iterating and close the file (if this iterator opened it)."""
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RecordIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _truncated(self, message: str, record: int, offset: int) -> None:
        err = TruncatedRecordError(message, path=self.path, record=record, offset=offset)
        if not self._allow_truncated:
            raise err
        self.truncated_at = offset
        self.error = err
        log.warning("%s; read %d intact records before it", err, record)
        if self._on_truncated is not None:
            self._on_truncated(err)

    def _records(self) -> Iterator[bytes]:
        if isinstance(self._source, (str, os.PathLike)):
            mapped = _map_plain_file(self._source, self._compression)
            if mapped is not None:
                with mapped:
                    yield from self._frames_mapped(mapped)
                return
        try:
            stream = open_stream(self._source, self._compression)
        except (OSError, EOFError, zlib.error) as exc:
            if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            raise wrap_stream_error(exc, path=self.path, record=0, offset=0) from exc
        with stream:
            yield from self._frames(stream)

    def _native_scan(
        self, buf: mmap.mmap, **kw: Any
    ) -> Generator[Any, None, tuple[int, int] | None]:
        """Yield what a native scanner over ``buf`` yields, if one can read it.

        Returns where the Python loop must read on from: ``(offset, record)``
        (``(0, 0)`` without a scanner, the record it stopped at otherwise), or
        ``None`` when the scanner read to the end. While it runs, its counters
        are this iterator's.
        """
        scan = _scanner(buf, self._verify, **kw)
        if scan is None:
            return 0, 0
        self._scan = scan
        try:
            yield from scan
        finally:
            scan.close()
            self._scan = None
            self._n = scan.records
            self._offset = scan.pos
        return (scan.pos, scan.records) if scan.problem else None

    def _frames_mapped(self, buf: mmap.mmap) -> Iterator[bytes]:
        """The loop over a memory-mapped plain file: no refills, one copy per record.

        The native scanner reads up to the first record it cannot vouch for;
        the Python loop reads on from there. It computes the data CRC over the
        mapped bytes first and copies the payload out right after, while it
        is still in the CPU cache: the file's bytes come from memory once
        (copying first and checking the copy would stream them twice).
        """
        resume = yield from self._native_scan(buf)
        if resume is None:
            return
        pos, n = resume
        path = self.path
        verify = self._verify
        unpack = _HEAD.unpack_from
        unpack32 = _U32.unpack_from
        crc = _crc
        crc_view = _crc_buf
        in_place = BUFFER_CRC  # else _crc_buf copies: check the copy instead
        delta = _DELTA
        size = len(buf)
        with memoryview(buf) as view:
            while pos + 12 <= size:
                length, lcrc = unpack(buf, pos)
                if verify:
                    c = crc(buf[pos : pos + 8])
                    if lcrc != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
                        raise CorruptRecordError(
                            "length CRC mismatch (not a TFRecord file, or a corrupt header)",
                            path=path,
                            record=n,
                            offset=pos,
                        )
                start = pos + 12
                end = start + length + 4
                if end > size:
                    self._truncated(
                        f"record declares {length} data bytes but the file ends "
                        f"{size - pos} bytes after the record start",
                        n,
                        pos,
                    )
                    return
                if verify:
                    if in_place:
                        c = crc_view(view[start : end - 4])
                        data = buf[start : end - 4]
                    else:
                        data = buf[start : end - 4]
                        c = crc(data)
                    if unpack32(buf, end - 4)[0] != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
                        raise CorruptRecordError(
                            f"data CRC mismatch (record of {length} bytes)",
                            path=path,
                            record=n,
                            offset=pos,
                        )
                else:
                    data = buf[start : end - 4]
                n += 1
                pos = end
                self._n = n
                self._offset = end
                yield data
        if pos < size:
            self._truncated(
                f"file ends inside a record header ({size - pos} of 12 bytes present)", n, pos
            )

    def examples_mapped(self, buf: mmap.mmap, squeeze: bool) -> Iterator[dict[str, Any]]:
        """Decoded records of a memory-mapped plain file, checked and parsed in place.

        Tile-shaped records go through :func:`~tilestream.tfrecord._fast.parse_fast`
        (identical results); anything else, or a record it declines, through
        the generic parser, which also reports malformed records. The native
        scanner decodes tile-shaped records in C and calls the same parsers
        for the rest.
        """
        path = self.path

        def parse(start: int, stop: int, record: int, offset: int) -> dict[str, Any]:
            return parse_at(
                buf, start, stop, squeeze=squeeze, path=path, record=record, offset=offset
            )

        resume = yield from self._native_scan(buf, parse=parse, tiles=squeeze)
        if resume is None:
            return
        pos, n = resume
        verify = self._verify
        unpack = _HEAD.unpack_from
        unpack32 = _U32.unpack_from
        crc = _crc
        crc_view = _crc_buf
        fast = parse_fast if squeeze else None
        delta = _DELTA
        size = len(buf)
        with memoryview(buf) as view:
            while pos + 12 <= size:
                length, lcrc = unpack(buf, pos)
                if verify:
                    c = crc(buf[pos : pos + 8])
                    if lcrc != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
                        raise CorruptRecordError(
                            "length CRC mismatch (not a TFRecord file, or a corrupt header)",
                            path=path,
                            record=n,
                            offset=pos,
                        )
                start = pos + 12
                end = start + length + 4
                if end > size:
                    self._truncated(
                        f"record declares {length} data bytes but the file ends "
                        f"{size - pos} bytes after the record start",
                        n,
                        pos,
                    )
                    return
                stop = end - 4
                if verify:
                    c = crc_view(view[start:stop])
                    if unpack32(buf, stop)[0] != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
                        raise CorruptRecordError(
                            f"data CRC mismatch (record of {length} bytes)",
                            path=path,
                            record=n,
                            offset=pos,
                        )
                record = None
                if fast is not None and length:
                    try:
                        record = fast(buf, start, stop)
                    except IndexError:
                        record = None
                if record is None:
                    record = parse_at(
                        buf,
                        start,
                        stop,
                        squeeze=squeeze,
                        path=path,
                        record=n,
                        offset=pos,
                        fast=fast is None,  # tried above when set
                    )
                n += 1
                self._n = n
                self._offset = pos = end
                yield record
        if pos < size:
            self._truncated(
                f"file ends inside a record header ({size - pos} of 12 bytes present)", n, pos
            )

    def _large_record(
        self, stream: Stream, head: memoryview, total: int, record: int, offset: int
    ) -> bytes | None:
        """The payload of a record of ``total`` bytes (framing included) that starts with ``head``.

        Memory grows with the bytes the stream really yields, a piece at a
        time (a ``bytearray`` grows in place), and the data CRC is checked
        at the end: a length field that promises more than the stream holds
        costs what the stream holds, never what it promises. ``None`` when
        the stream ends first and truncation is allowed.
        """
        rec = bytearray(head)
        piece = bytearray(min(_PIECE, total))
        with memoryview(piece) as pv:
            while len(rec) < total:
                try:
                    got = stream.readinto(pv[: min(total - len(rec), _PIECE)])
                except EOFError as exc:
                    self._truncated(f"compressed stream ends early ({exc})", record, offset)
                    return None
                except (OSError, zlib.error) as exc:
                    raise wrap_stream_error(
                        exc, path=self.path, record=record, offset=offset
                    ) from exc
                if not got:
                    self._truncated(
                        f"file ends inside a record ({len(rec)} of {total} bytes present)",
                        record,
                        offset,
                    )
                    return None
                rec += pv[:got]
        del piece
        with memoryview(rec) as v:
            if self._verify:
                c = _crc_buf(v[12 : total - 4])
                if (
                    _U32.unpack_from(v, total - 4)[0]
                    != (((c >> 15) | (c << 17)) + _DELTA) & 0xFFFFFFFF
                ):
                    raise CorruptRecordError(
                        f"data CRC mismatch (record of {total - 16} bytes)",
                        path=self.path,
                        record=record,
                        offset=offset,
                    )
            return bytes(v[12 : total - 4])

    def _frames(self, stream: Stream) -> Iterator[bytes]:
        """The loop over a stream: one reused buffer, filled with ``readinto``."""
        path = self.path
        verify = self._verify
        size = stream.size
        fill = stream.readinto
        unpack = _HEAD.unpack_from
        unpack32 = _U32.unpack_from
        crc = _crc_buf
        delta = _DELTA
        buf = bytearray(self._chunk)
        view = memoryview(buf)
        have = 0  # bytes of data in buf
        pos = 0  # position in buf of the next record
        base = 0  # stream offset of buf[0]
        n = 0  # records yielded
        eof = False
        try:
            while True:
                # ---- fast path: whole records inside the buffer
                while pos + 12 <= have:
                    length, lcrc = unpack(buf, pos)
                    if verify:
                        c = crc(view[pos : pos + 8])
                        if lcrc != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
                            self._offset = base + pos
                            raise CorruptRecordError(
                                "length CRC mismatch (not a TFRecord file, or a corrupt header)",
                                path=path,
                                record=n,
                                offset=base + pos,
                            )
                    end = pos + 16 + length
                    if end > have:
                        break
                    data = bytes(view[pos + 12 : end - 4])
                    if verify:
                        c = crc(data)
                        if (
                            unpack32(buf, end - 4)[0]
                            != (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF
                        ):
                            self._offset = base + pos
                            raise CorruptRecordError(
                                f"data CRC mismatch (record of {length} bytes)",
                                path=path,
                                record=n,
                                offset=base + pos,
                            )
                    n += 1
                    pos = end
                    self._n = n
                    self._offset = base + end
                    yield data
                # ---- need more bytes: how many?
                avail = have - pos
                if avail >= 12:
                    length = unpack(buf, pos)[0]
                    need = 16 + length - avail
                    if size is not None and base + pos + 16 + length > size:
                        self._truncated(
                            f"record declares {length} data bytes but the file ends "
                            f"{size - (base + pos)} bytes after the record start",
                            n,
                            base + pos,
                        )
                        return
                else:
                    need = 12 - avail
                if eof:
                    if avail == 0:
                        return
                    what = "record header" if avail < 12 else "record"
                    self._truncated(
                        f"file ends inside a {what} ({avail} of {avail + need} bytes present)",
                        n,
                        base + pos,
                    )
                    return
                # ---- move the partial record to the front; grow only as data arrives
                if pos:
                    buf[:avail] = buf[pos:have]
                    base += pos
                    pos = 0
                    have = avail
                target = avail + need
                if target > len(buf):  # larger than the buffer: read on its own
                    large = self._large_record(stream, view[:have], 16 + length, n, base)
                    if large is None:
                        return
                    n += 1
                    base += 16 + length
                    have = 0
                    self._n = n
                    self._offset = base
                    yield large
                    continue
                # ---- refill
                while have < target:
                    if have == len(buf):
                        break  # grow first (next round)
                    try:
                        got = fill(view[have:])
                    except EOFError as exc:
                        self._truncated(f"compressed stream ends early ({exc})", n, base + pos)
                        return
                    except (OSError, zlib.error) as exc:
                        raise wrap_stream_error(
                            exc, path=path, record=n, offset=base + pos
                        ) from exc
                    if not got:
                        eof = True
                        break
                    have += got
        finally:
            view.release()


def _scanner(buf: mmap.mmap, verify: bool, **kw: Any) -> Any:
    """A native ``Scanner`` over ``buf``, or ``None`` to read it with the Python loop.

    Without hardware CRC32C (not x86-64, or no SSE4.2) the ``crc32c`` package
    checks faster than the compiled core's table code, so checked reads stay
    in Python there.
    """
    native = _native
    if native is None or (verify and not native.HARDWARE_CRC):
        return None
    return native.Scanner(buf, verify=verify, **kw)


def _map_plain_file(
    path: str | os.PathLike[str], compression: CompressionArg | str
) -> mmap.mmap | None:
    """Memory-map a non-empty, uncompressed TFRecord file; ``None`` for other files."""
    comp = normalize_compression(compression)
    if comp not in ("auto", None):
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a named pipe: opening it here would take the writer's data
    except OSError:
        return None  # open_stream raises the error
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER_SIZE:
            return None
        if comp == "auto" and detect_compression(f.read(HEADER_SIZE)) is not None:
            return None
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # e.g. a pipe or a special file
            return None


def iter_records(
    source: Source,
    *,
    compression: CompressionArg | str = "auto",
    verify: bool = True,
    allow_truncated: bool = False,
    on_truncated: Callable[[TruncatedRecordError], None] | None = None,
) -> RecordIterator:
    """Iterate over the raw payloads of a TFRecord file.

    Parameters
    ----------
    source
        A path or a binary file object (read from its current position, not closed).
    compression
        ``"auto"`` (default: detect GZIP/ZLIB from the first bytes), ``None``,
        ``"gzip"`` or ``"zlib"``.
    verify
        Check both CRCs of every record (default). Turning it off is faster
        but lets corrupt payloads through.
    allow_truncated
        When the file ends inside a record, stop after the last intact record
        instead of raising; a warning is logged and the iterator's
        ``truncated_at``/``error`` tell where it stopped.
    on_truncated
        Called with the :class:`~tilestream.errors.TruncatedRecordError` when
        ``allow_truncated`` swallows one.

    Returns
    -------
    RecordIterator
        An iterator of ``bytes`` payloads.

    Raises
    ------
    CorruptRecordError
        A CRC does not match, or the data is not a TFRecord stream.
    TruncatedRecordError
        The file ends inside a record (unless ``allow_truncated``).

    Examples
    --------
    >>> import io
    >>> from tilestream.tfrecord.framing import frame
    >>> bad = bytearray(frame(b"payload")); bad[14] ^= 1
    >>> list(iter_records(io.BytesIO(bytes(bad))))
    Traceback (most recent call last):
    ...
    tilestream.errors.CorruptRecordError: record 0 at byte 0: data CRC mismatch (record of 7 bytes)
    >>> list(iter_records(io.BytesIO(bytes(bad)), verify=False))
    [b'paxload']
    """
    return RecordIterator(
        source,
        compression=compression,
        verify=verify,
        allow_truncated=allow_truncated,
        on_truncated=on_truncated,
    )


def iter_examples(
    source: Source,
    *,
    compression: CompressionArg | str = "auto",
    verify: bool = True,
    squeeze: bool = True,
    allow_truncated: bool = False,
) -> Iterator[dict[str, Any]]:
    """Iterate over the records of a file decoded with :func:`parse_example`.

    Examples
    --------
    >>> import io
    >>> from tilestream.tfrecord.example import serialized_record
    >>> from tilestream.tfrecord.framing import frame
    >>> f = io.BytesIO(frame(serialized_record("s", b"img", 1, 2)))
    >>> [(r["slide"], r["loc_x"]) for r in iter_examples(f)]
    [(b's', 1)]
    """
    it = RecordIterator(
        source, compression=compression, verify=verify, allow_truncated=allow_truncated
    )
    if isinstance(source, (str, os.PathLike)):
        mapped = _map_plain_file(source, compression)
        if mapped is not None:
            with mapped:
                yield from it.examples_mapped(mapped, squeeze)
            return
    path = it.path
    for i, data in enumerate(it):
        yield parse_example(data, squeeze=squeeze, path=path, record=i)
