"""TFRecords in object storage or on a web server: one object, read by byte ranges.

A TFRecord given by URL (``s3://``, ``gs://``, ``http(s)://``; see
:func:`tilestream.storage.is_url`) is a :class:`RemoteObject`: the
:class:`~tilestream.storage.Store` that holds it, its key, and its
:class:`~tilestream.storage.Stat` (size and ETag, asked once). Two ways to
read it:

- **sequentially** (:func:`iter_records <tilestream.tfrecord.iter_records>`,
  index scans): :class:`RemoteReader` is a file object whose bytes come from
  large ranged requests (:data:`CHUNK` bytes each) made on background threads,
  at most :data:`DEPTH` ahead of the reader (bounded memory);
- **by record** (:class:`~tilestream.tfrecord.TFRecord`, the loaders):
  :meth:`RemoteObject.read_frames` fetches the frames of many records with one
  coalesced :meth:`Store.read_ranges <tilestream.storage.Store.read_ranges>`
  and checks each with :func:`~tilestream.tfrecord.framing.payload_of`.

Errors name the object's URL (never a credential): a missing object is a
:class:`~tilestream.errors.StorageNotFoundError` (a ``FileNotFoundError``), a
bad CRC the same :class:`~tilestream.errors.CorruptRecordError` a local file
gives, with the URL, the record number and its byte offset.

Examples
--------
>>> import pathlib, tempfile
>>> from tilestream.tfrecord.framing import frame
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tfrecords"
>>> _ = path.write_bytes(frame(b"one") + frame(b"two"))
>>> obj = RemoteObject.open(path.as_uri())
>>> obj.size, obj.read_frames([(0, 19), (19, 19)], first_record=0)
(38, [b'one', b'two'])
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from tilestream.errors import CorruptRecordError, InvalidTFRecordIndex
from tilestream.storage import Stat, Store, is_url, store_for
from tilestream.tfrecord._locations import record_location
from tilestream.tfrecord.framing import check_payload, payload_of, read_header

__all__ = [
    "CHUNK",
    "DEPTH",
    "RecordBlocks",
    "RemoteObject",
    "RemoteReader",
    "is_url",
    "local_path",
    "remote_name",
]

#: Bytes of one sequential ranged request.
CHUNK = 8 << 20
#: Sequential requests in flight or buffered ahead of the reader (memory: ``CHUNK * DEPTH``).
DEPTH = 3


class RemoteObject:
    """One object of a store, by URL: its key, stat (once), ranged reads and frames.

    Pickles with its store (for DataLoader workers); the stat is kept, so a
    worker reads the version the parent indexed.
    """

    def __init__(self, store: Store, key: str, *, stat: Stat | None = None) -> None:
        self._store = store
        self._pid = os.getpid()
        self.key = key
        self._stat = stat

    @property
    def store(self) -> Store:
        """The store, made again in a forked child (an fsspec filesystem is not fork-safe).

        The stores of a process's objects stay shared in the child: one copy each.
        """
        if self._pid != os.getpid():
            self._store = _forked(self._store)
            self._pid = os.getpid()
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()  # unpickled: the store was made in this process

    @classmethod
    def open(
        cls, url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> RemoteObject:
        """The object at ``url`` (nothing is read until it is needed)."""
        store, key = store_for(url, storage_options)
        return cls(store, key)

    @property
    def url(self) -> str:
        """The object's URL without credentials or query string (for messages and cache keys)."""
        return self.store.url_of(self.key)

    def __repr__(self) -> str:
        return f"RemoteObject({self.url!r})"

    def stat(self) -> Stat:
        """Size and version, asked once (``StorageNotFoundError`` naming the URL if missing)."""
        if self._stat is None:
            self._stat = self.store.stat(self.key)
        return self._stat

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self.stat().size

    @property
    def version(self) -> str:
        """The object's version (ETag where the store has one)."""
        return self.stat().version

    def read_range(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (one request)."""
        return self.store.read_range(self.key, offset, size)

    def read_frames(
        self,
        frames: Sequence[tuple[int, int]],
        *,
        first_record: int,
        verify: bool = True,
        max_gap: int = 64 << 10,
    ) -> list[bytes]:
        """The payloads of the frames ``(offset, size)`` of records ``first_record, ...``.

        The frames are fetched with one :meth:`Store.read_ranges` call (adjacent
        frames share a request) and each is checked by
        :func:`~tilestream.tfrecord.framing.payload_of` (errors name the URL,
        the record number ``first_record + i`` and its offset).
        """
        blobs = self.store.read_ranges(self.key, frames, max_gap=max_gap)
        url = self.url
        return [
            payload_of(blob, path=url, record=first_record + i, offset=off, verify=verify)
            for i, (blob, (off, _)) in enumerate(zip(blobs, frames, strict=True))
        ]

    def reader(self, *, start: int = 0, chunk: int = CHUNK, depth: int = DEPTH) -> RemoteReader:
        """A sequential file over the object, read ahead on background threads."""
        return RemoteReader(self, start=start, chunk=chunk, depth=depth)


_FORKED: dict[int, tuple[int, Store]] = {}  # id of a parent's store -> (pid, its copy)
_FORKED_LOCK = threading.Lock()


def _forked(store: Store) -> Store:
    with _FORKED_LOCK:
        pid, copy = _FORKED.get(id(store), (-1, store))
        if pid != os.getpid():
            copy = pickle.loads(pickle.dumps(store))
            _FORKED[id(store)] = (os.getpid(), copy)
        return copy


class RemoteReader(io.RawIOBase):
    """A forward-only binary file over a :class:`RemoteObject`, read ahead in large ranges.

    Up to ``depth`` ranged requests of ``chunk`` bytes run on background
    threads ahead of the reader (at most ``chunk * depth`` bytes held); each
    is retried by the store. ``name`` is the object's URL, so errors of the
    TFRecord reader name it.
    """

    def __init__(
        self, obj: RemoteObject, *, start: int = 0, chunk: int = CHUNK, depth: int = DEPTH
    ) -> None:
        super().__init__()
        self.obj = obj
        self.name = obj.url
        self._size = obj.size
        self._next = start  # offset of the next request
        self._chunk = max(int(chunk), 1 << 16)
        self._depth = max(int(depth), 1)
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: deque[Future[bytes]] = deque()
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._depth, thread_name_prefix="tilestream-readahead")
        while len(self._ahead) < self._depth and self._next < self._size:
            n = min(self._chunk, self._size - self._next)
            self._ahead.append(self._pool.submit(self.obj.read_range, self._next, n))
            self._next += n

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not self._buf:
            self._fill()
            if not self._ahead:
                return 0
            self._buf = memoryview(self._ahead.popleft().result())
            self._fill()
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        pool, self._pool = self._pool, None
        for fut in self._ahead:
            fut.cancel()
        self._ahead.clear()
        if pool is not None:
            pool.shutdown(wait=True)
        super().close()


def local_path(source: Any) -> Any:
    """``source`` with a ``file://`` URL turned into its path (anything else unchanged).

    >>> local_path("file:///data/a%20b.tfrecords"), local_path("/data/a.tfrecords")
    ('/data/a b.tfrecords', '/data/a.tfrecords')
    """
    if isinstance(source, str) and source.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    return source


def remote_name(source: object) -> str | None:
    """The URL of ``source`` when it is one (a string for :func:`is_url`), else ``None``."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        return text if is_url(text) else None
    return None


class RecordBlocks:
    """Random access to the frames of a remote TFRecord, with read-ahead for sequential use.

    ``span(i)`` returns ``(buffer, start, stop)``: the payload of record ``i``
    is ``buffer[start:stop]``, its header and both CRCs checked (data CRC when
    ``verify``). A record read right after the one before it starts a block of
    the following records (up to :attr:`block_records` records or
    :attr:`block_bytes` bytes) fetched with one request; any other record is
    fetched alone, so random access reads no more than it needs. The last
    :attr:`blocks_kept` blocks are kept.
    """

    block_records = 64
    block_bytes = 4 << 20
    blocks_kept = 4

    def __init__(
        self,
        obj: RemoteObject,
        offsets: Sequence[int],
        lengths: Sequence[int],
        *,
        verify: bool = True,
        index_name: str | None = None,
    ) -> None:
        self.obj = obj
        self.offsets = offsets
        self.lengths = lengths
        self.verify = verify
        self.index_name = index_name
        self._blocks: dict[int, tuple[int, bytes]] = {}  # first record -> (last + 1, bytes)
        self._last = -2

    def _block_end(self, i: int, sequential: bool) -> int:
        if not sequential:
            return i + 1
        n = len(self.offsets)
        j, total = i, 0
        while j < n and j - i < self.block_records:
            total += int(self.lengths[j])
            if total > self.block_bytes and j > i:
                break
            j += 1
        return j

    def _fetch(self, i: int) -> tuple[int, bytes]:
        for first, (stop, data) in self._blocks.items():
            if first <= i < stop:
                return first, data
        stop = self._block_end(i, sequential=i in (0, self._last + 1))
        start = int(self.offsets[i])
        size = int(self.offsets[stop - 1]) + int(self.lengths[stop - 1]) - start
        data = self.obj.read_range(start, size)
        if len(self._blocks) >= self.blocks_kept:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[i] = (stop, data)
        return i, data

    def span(self, i: int) -> tuple[bytes, int, int]:
        """``(buffer, start, stop)`` of record ``i``'s payload, checked."""
        first, data = self._fetch(i)
        self._last = i
        base = int(self.offsets[first])
        off = int(self.offsets[i])
        ln = int(self.lengths[i])
        pos = off - base
        url = self.obj.url
        if pos + ln > len(data):
            raise InvalidTFRecordIndex(
                f"index does not match {url}: record {i} at byte {off} ends past the object's end",
                path=self.index_name,
            )
        try:
            length = read_header(data, pos)
        except CorruptRecordError:
            raise InvalidTFRecordIndex(
                f"index does not match {url}: record {i} at byte {off}: no record starts there "
                "(length CRC mismatch)",
                path=self.index_name,
            ) from None
        if length + 16 != ln:
            raise InvalidTFRecordIndex(
                f"index does not match {url}: record {i} at byte {off}: the index says {ln} "
                f"bytes, the record header {length + 16}",
                path=self.index_name,
            )
        if self.verify:
            with memoryview(data) as view:
                check_payload(view, pos + 12, pos + ln - 4, path=url, record=i, base=base)
        return data, pos + 12, pos + ln - 4

    def locations(self) -> Any:
        """Every record's ``(loc_x, loc_y)`` (int64 ``(n, 2)``), read in blocks; ``None`` if one has none."""
        out = np.empty((len(self.offsets), 2), np.int64)
        self._last = -1
        for i in range(len(self.offsets)):
            buf, start, end = self.span(i)
            loc = record_location(buf, start, end, self.obj.url, i, int(self.offsets[i]))
            if loc is None:
                return None
            out[i] = loc
        return out
