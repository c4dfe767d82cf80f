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
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, BinaryIO, cast

from tilestream.errors import TruncatedRecordError
from tilestream.tfrecord._core import native as _native
from tilestream.tfrecord._decode import TILES, parse_at, parse_example
from tilestream.tfrecord.framing import (
    HEADER_SIZE,
    CompressionArg,
    FrameCursor,
    Source,
    Stream,
    Take,
    check_payload,
    detect_compression,
    iter_frames,
    normalize_compression,
    open_stream,
    source_name,
    truncation,
    wrap_stream_error,
)
from tilestream.tfrecord.remote import RemoteObject, local_path, remote_name

__all__ = ["RecordIterator", "iter_examples", "iter_records"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 4 << 20
_PIECE = 4 << 20  # a record larger than the buffer is read this much at a time


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
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._remote: RemoteObject | None = None
        source = local_path(source)
        if remote_name(source) is not None:
            self._remote = RemoteObject.open(source, storage_options)  # type: ignore[arg-type]
        self.path = self._remote.url if self._remote is not None else source_name(source)
        self._cursor = FrameCursor()
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
        return self._cursor.record if scan is None else int(scan.records)

    @property
    def offset(self) -> int:
        """Bytes consumed so far in the uncompressed stream (the end of the last record read)."""
        scan = self._scan
        return self._cursor.offset if scan is None else int(scan.pos)

    def close(self) -> None:
        """Stop iterating and close the file (if this iterator opened it)."""
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RecordIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _truncated(self, err: TruncatedRecordError) -> None:
        """Raise ``err``, or (``allow_truncated``) note it and end the iteration quietly."""
        if not self._allow_truncated:
            raise err
        self.truncated_at = err.offset
        self.error = err
        log.warning("%s; read %d intact records before it", err, err.record)
        if self._on_truncated is not None:
            self._on_truncated(err)

    def _records(self) -> Iterator[bytes]:
        if self._remote is not None:
            with self._remote.reader() as raw:
                # The object's size is known (its stat): a record declaring more bytes than
                # are left fails before reading, as for a local file.
                yield from self._stream_records(cast(BinaryIO, raw), size=self._remote.size)
            return
        if isinstance(self._source, (str, os.PathLike)):
            mapped = _map_plain_file(self._source, self._compression)
            if mapped is not None:
                with mapped:
                    yield from self._frames_mapped(mapped)
                return
        yield from self._stream_records(self._source)

    def _stream_records(self, source: Source, *, size: int | None = None) -> Iterator[bytes]:
        try:
            stream = open_stream(source, self._compression)
        except (OSError, EOFError, zlib.error) as exc:
            if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            raise wrap_stream_error(exc, path=self.path, record=0, offset=0) from exc
        if size is not None and stream.size is None and stream.compression is None:
            stream.size = size
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
            self._cursor.record = scan.records
            self._cursor.offset = scan.pos
        return (scan.pos, scan.records) if scan.problem else None

    def _frames_mapped(self, buf: mmap.mmap) -> Iterator[bytes]:
        """The records of a memory-mapped plain file: no refills, one copy per record.

        The native scanner reads up to the first record it cannot vouch for;
        the Python loop reads on from there, checking each data CRC over the
        mapped bytes and copying the payload out right after, while it is
        still in the CPU cache.
        """
        resume = yield from self._native_scan(buf)
        if resume is None:
            return
        try:  # (inline, not through a helper generator: one level less per record)
            yield from iter_frames(
                buf, self._cursor, pos=resume[0], path=self.path, verify=self._verify
            )
        except TruncatedRecordError as err:
            self._truncated(err)

    def examples_mapped(self, buf: mmap.mmap, squeeze: bool) -> Iterator[dict[str, Any]]:
        """Decoded records of a memory-mapped plain file, checked and parsed in place.

        Tile-shaped records go through the tile strategy of the Example parser
        (identical results); anything else, or a record it declines, through
        the generic parser, which also reports malformed records. The native
        scanner decodes tile-shaped records in C and calls the same parser
        for the rest.
        """
        parse = _parser(buf, squeeze, self.path)
        resume = yield from self._native_scan(buf, parse=parse, tiles=squeeze)
        if resume is None:
            return
        try:
            yield from iter_frames(
                buf, self._cursor, pos=resume[0], path=self.path, verify=self._verify, take=parse
            )
        except TruncatedRecordError as err:
            self._truncated(err)

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
                got = self._fill(stream, pv[: min(total - len(rec), _PIECE)], record, offset)
                if got is None:
                    return None
                if not got:
                    self._truncated(
                        TruncatedRecordError(
                            f"file ends inside a record ({len(rec)} of {total} bytes present)",
                            path=self.path,
                            record=record,
                            offset=offset,
                        )
                    )
                    return None
                rec += pv[:got]
        del piece
        with memoryview(rec) as v:
            if self._verify:
                check_payload(v, 12, total - 4, path=self.path, record=record, base=offset)
            return bytes(v[12 : total - 4])

    def _fill(self, stream: Stream, into: memoryview, record: int, offset: int) -> int | None:
        """Read into ``into``: the byte count (0 at the end), ``None`` after a tolerated truncation."""
        try:
            return stream.readinto(into)
        except EOFError as exc:
            self._truncated(
                TruncatedRecordError(
                    f"compressed stream ends early ({exc})",
                    path=self.path,
                    record=record,
                    offset=offset,
                )
            )
            return None
        except (OSError, zlib.error) as exc:
            raise wrap_stream_error(exc, path=self.path, record=record, offset=offset) from exc

    def _frames(self, stream: Stream) -> Iterator[bytes]:
        """The loop over a stream: one reused buffer, filled with ``readinto``.

        Whole frames in the buffer are walked by :func:`iter_frames`; the
        partial frame at its end is moved to the front and the buffer
        refilled (a frame larger than the buffer is read on its own).
        """
        cursor = self._cursor
        buf = bytearray(self._chunk)
        have = 0  # bytes of data in buf
        base = 0  # stream offset of buf[0]
        eof = False
        with memoryview(buf) as view:
            while True:
                yield from iter_frames(
                    buf, cursor, pos=cursor.offset - base, end=have, base=base,
                    path=self.path, verify=self._verify, final=False,
                )  # fmt: skip
                pos = cursor.offset - base
                need = self._missing(buf, pos, have, base, stream.size, eof)
                if need is None:
                    return
                avail = have - pos
                if pos:  # move the partial record to the front
                    buf[:avail] = buf[pos:have]
                    base += pos
                    have = avail
                if avail + need > len(buf):  # larger than the buffer: read on its own
                    total = avail + need
                    large = self._large_record(stream, view[:have], total, cursor.record, base)
                    if large is None:
                        return
                    cursor.record += 1
                    base = cursor.offset = base + total
                    have = 0
                    yield large
                    continue
                while have < avail + need and have < len(buf):
                    got = self._fill(stream, view[have:], cursor.record, base)
                    if got is None:
                        return
                    if not got:
                        eof = True
                        break
                    have += got

    def _missing(
        self, buf: bytearray, pos: int, have: int, base: int, size: int | None, eof: bool
    ) -> int | None:
        """Bytes still missing of the frame at ``buf[pos]``; ``None`` when the stream ends here."""
        avail = have - pos
        if avail >= HEADER_SIZE:
            length = int.from_bytes(buf[pos : pos + 8], "little")
            need = 16 + length - avail
            if size is not None and base + pos + 16 + length > size:
                self._truncated(
                    truncation(
                        buf, pos, size - base, base=base, path=self.path, record=self._cursor.record
                    )
                )
                return None
        else:
            need = HEADER_SIZE - avail
        if not eof:
            return need
        if avail:
            what = "record header" if avail < HEADER_SIZE else "record"
            self._truncated(
                TruncatedRecordError(
                    f"file ends inside a {what} ({avail} of {avail + need} bytes present)",
                    path=self.path,
                    record=self._cursor.record,
                    offset=base + pos,
                )
            )
        return None


def _parser(buf: mmap.mmap, squeeze: bool, path: str | None) -> Take:
    """``take`` of the Python loop and ``parse`` of the native scanner: one record decoded in place."""
    tiles = TILES.parse if squeeze else None

    def parse(start: int, stop: int, record: int, offset: int) -> dict[str, Any]:
        if tiles is not None and stop > start:
            try:
                rec = tiles(buf, start, stop)
            except IndexError:
                rec = None
            if rec is not None:
                return rec
        return parse_at(
            buf, start, stop, squeeze=squeeze, path=path, record=record, offset=offset, fast=False
        )

    return parse


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
    storage_options: Mapping[str, Any] | None = None,
) -> RecordIterator:
    """Iterate over the raw payloads of a TFRecord file.

    Parameters
    ----------
    source
        A path, a URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``: read
        in large ranged requests, ahead of the consumer on background threads)
        or a binary file object (read from its current position, not closed).
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
    storage_options
        Options of the store of a URL (credentials, endpoint), never logged.

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
        storage_options=storage_options,
    )


def iter_examples(
    source: Source,
    *,
    compression: CompressionArg | str = "auto",
    verify: bool = True,
    squeeze: bool = True,
    allow_truncated: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Iterate over the records of a file decoded with :func:`parse_example`.

    ``source`` may be a URL, read as by :func:`iter_records` (with ``storage_options``).

    Examples
    --------
    >>> import io
    >>> from tilestream.tfrecord.example import serialized_record
    >>> from tilestream.tfrecord.framing import frame
    >>> f = io.BytesIO(frame(serialized_record("s", b"img", 1, 2)))
    >>> [(r["slide"], r["loc_x"]) for r in iter_examples(f)]
    [(b's', 1)]
    """
    source = local_path(source)
    it = RecordIterator(
        source,
        compression=compression,
        verify=verify,
        allow_truncated=allow_truncated,
        storage_options=storage_options,
    )
    if isinstance(source, (str, os.PathLike)) and remote_name(source) is None:
        mapped = _map_plain_file(source, compression)
        if mapped is not None:
            with mapped:
                yield from it.examples_mapped(mapped, squeeze)
            return
    path = it.path
    for i, data in enumerate(it):
        yield parse_example(data, squeeze=squeeze, path=path, record=i)
