"""Atomic TFRecord writing, with the Slideflow index written beside the file.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord.example import serialized_record
>>> from tilestream.tfrecord.reader import iter_records
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with TFRecordWriter(d / "s1.tfrecords") as w:
...     w.write(serialized_record("s1", b"img", 0, 0), location=(0, 0))
...     w.write(serialized_record("s1", b"img", 256, 0), location=(256, 0))
>>> sorted(p.name for p in d.iterdir())
['s1.index.npz', 's1.tfrecords']
>>> len(list(iter_records(d / "s1.tfrecords")))
2
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from tilestream._util.atomic import atomic_path
from tilestream.errors import ConfigError
from tilestream.tfrecord._locations import record_location, tile_location_fast
from tilestream.tfrecord.framing import CompressionArg, footer, header, normalize_compression

__all__ = ["TFRecordWriter"]

log = logging.getLogger(__name__)

_BUFFER = 1 << 20


class _Compressor:
    """Stream compressor writing GZIP (as TensorFlow does) or ZLIB."""

    def __init__(self, fh: BinaryIO, kind: str) -> None:
        wbits = 31 if kind == "gzip" else 15
        self._fh = fh
        self._c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, wbits)

    def write(self, data: bytes | memoryview) -> None:
        out = self._c.compress(data)
        if out:
            self._fh.write(out)

    def finish(self) -> None:
        self._fh.write(self._c.flush())


_fadvise = getattr(os, "posix_fadvise", None)
_tile_location = tile_location_fast


class TFRecordWriter:
    """Write records to a TFRecord file that appears only when complete.

    Records go to a temporary file beside ``path``; :meth:`close` flushes,
    fsyncs and renames it onto ``path``. Leaving a ``with`` block through an
    exception discards the temporary file and leaves ``path`` untouched.
    Every :attr:`writeback_bytes` the writer asks the kernel to start writing
    the records so far to disk (``POSIX_FADV_DONTNEED`` on the range just
    written starts the writeback of its dirty pages, where ``os.posix_fadvise``
    exists), so the fsync at close waits for the tail of a large file, not all
    of it.

    Parameters
    ----------
    path
        The TFRecord file to write.
    compression
        ``None`` (default), ``"gzip"`` or ``"zlib"``.
    index
        Also write ``<name>.index.npz`` beside the file (Slideflow's format:
        ``arr_0`` offsets and lengths; ``locations`` when every record has
        one: the ``location`` given to :meth:`write`, else the record's own
        ``loc_x``/``loc_y``). For compressed files the offsets are in the
        uncompressed stream.

    Attributes
    ----------
    writeback_bytes : int
        How often (in bytes of records) writeback is started; 32 MiB.
    path : pathlib.Path
    count : int
        Records written so far.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.tfrecord.gz"
    >>> with TFRecordWriter(path, compression="gzip", index=False) as w:
    ...     w.write(b"payload")
    ...     path.exists()  # not before close
    False
    >>> path.read_bytes()[:2]
    b'\\x1f\\x8b'
    """

    writeback_bytes: int = 32 << 20

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: CompressionArg | str = None,
        index: bool = True,
    ) -> None:
        comp = normalize_compression(compression)
        if comp == "auto":
            raise ConfigError("a writer needs an explicit compression: None, 'gzip' or 'zlib'")
        self.path = Path(path)
        self.compression = comp
        self.index = index
        self.count = 0
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._locations: list[tuple[int, int]] | None = [] if index else None
        self._pos = 0
        self._next_writeback = self.writeback_bytes
        self._written_back = 0
        self._stack = contextlib.ExitStack()
        self._closed = False
        tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._fh: BinaryIO = self._stack.enter_context(
                open(tmp, "wb", buffering=_BUFFER)  # noqa: SIM115
            )
        except BaseException:
            self._stack.close()
            raise
        self._compressor = _Compressor(self._fh, comp) if comp else None
        self._write = self._compressor.write if self._compressor else self._fh.write

    def write(
        self,
        record: bytes | bytearray | memoryview,
        *,
        location: tuple[int, int] | None = None,
    ) -> None:
        """Append one record (a serialized ``tf.train.Example``, or any bytes).

        Parameters
        ----------
        record
            The payload: ``bytes``, or a contiguous byte buffer (``bytearray``,
            ``memoryview``), written as it is without a copy, so a caller may
            reuse its buffer once ``write`` returns.
        location
            The tile's ``(x, y)``, stored in the index's ``locations``;
            without it, the record's own ``loc_x``/``loc_y`` are read (a scan
            of its map keys; the image is skipped unread).
        """
        if self._closed:
            raise ConfigError(f"{self.path}: cannot write to a closed TFRecordWriter")
        if not isinstance(record, bytes):
            try:
                record = memoryview(record).cast("B")
            except TypeError as exc:
                raise ConfigError(
                    f"{self.path}: a record must be bytes or a contiguous buffer ({exc})"
                ) from exc
        n = len(record)
        write = self._write
        write(header(n))
        write(record)  # not concatenated: no extra copy of a large payload
        write(footer(record))
        if self.index:
            self._offsets.append(self._pos)
            self._lengths.append(n + 16)
            locs = self._locations
            if locs is not None:
                if location is not None:
                    locs.append((int(location[0]), int(location[1])))
                else:  # the record's own: compiled for tile records, else Python
                    found = _tile_location(record) if _tile_location is not None else None
                    if found is None:
                        found = self._location_of(record)
                    if found is None:
                        self._locations = None
                    else:
                        locs.append(found)
        self._pos += n + 16
        self.count += 1
        if self._pos >= self._next_writeback:
            self._start_writeback()

    def _location_of(self, record: bytes | memoryview) -> tuple[int, int] | None:
        """The record's own ``loc_x``/``loc_y`` (``None`` when it has none), as an index scan reads them."""
        return record_location(record, 0, len(record), os.fspath(self.path), self.count, self._pos)

    def _start_writeback(self) -> None:
        """Start writing what is written so far to disk, without waiting for it."""
        self._next_writeback = self._pos + self.writeback_bytes
        if _fadvise is None:
            return
        self._fh.flush()
        end = self._fh.tell()
        try:
            _fadvise(
                self._fh.fileno(),
                self._written_back,
                end - self._written_back,
                os.POSIX_FADV_DONTNEED,
            )
        except OSError:  # not on this file system: close() still fsyncs everything
            self._next_writeback = 1 << 62
        self._written_back = end

    def flush(self) -> None:
        """Flush buffered records to the temporary file."""
        self._fh.flush()

    def close(self) -> None:
        """Finish the file: flush, fsync, rename into place, then write the index."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._compressor is not None:
                self._compressor.finish()
            self._fh.flush()  # atomic_path fsyncs and renames
        except BaseException:
            self._stack.__exit__(*_exc_info())
            raise
        self._stack.close()
        if self.index:
            self._write_index()

    def abort(self) -> None:
        """Discard everything written; ``path`` is left untouched."""
        if self._closed:
            return
        self._closed = True
        err = RuntimeError("TFRecordWriter aborted")
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(RuntimeError, err, None)

    def _write_index(self) -> None:
        from tilestream.tfrecord.index import TFRecordIndex, index_path_for, save_index

        arr = np.empty((len(self._offsets), 2), dtype=np.int64)
        arr[:, 0] = self._offsets
        arr[:, 1] = self._lengths
        locs = None
        if self._locations is not None and len(self._locations) == len(self._offsets):
            locs = np.array(self._locations, dtype=np.int64).reshape(-1, 2)
        index = TFRecordIndex(arr, locs)
        save_index(index, index_path_for(self.path), tfrecord=self.path)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # an unclosed writer never publishes a partial file
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.abort()


def _exc_info() -> tuple[type[BaseException] | None, BaseException | None, TracebackType | None]:
    import sys

    return sys.exc_info()
