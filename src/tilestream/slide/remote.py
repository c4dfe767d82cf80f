"""Slides in object storage or on a web server, read by byte ranges through a store.

A slide URL of a storage scheme (``s3://``, ``gs://``, ``http(s)://``...) is
read through :func:`tilestream.storage.store_for`: :func:`open_source` looks
the object up once (its size and version, :class:`RemoteSource`), and a
:class:`StoreReader` serves the fast tile path's byte reads
(:mod:`tilestream.slide.fastpath`) from it. The stored tiles a region needs are
fetched with one coalesced, concurrent :meth:`~tilestream.storage.Store.read_ranges`
call into a cache bounded in bytes, and :meth:`StoreReader.prefetch` fetches
the next ones on a background thread. Failures of the store become slide
errors naming the URL (never a credential): :func:`slide_error`.

:func:`remote_slide_version` is the slide's identity for resumable runs: it
changes when the object does (its ETag, else size and modification time).

Examples
--------
>>> is_storage_url("s3://bucket/a.svs"), is_storage_url("dicomweb+https://h/dw")
(True, False)
>>> is_storage_url("/data/a.svs"), is_storage_url("file:///data/a.svs"), is_storage_url("x://a")
(False, False, False)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from tilestream._util.lru import LRU
from tilestream.errors import (
    ConfigError,
    MissingDependencyError,
    RemoteSlideError,
    SlideAccessDeniedError,
    SlideError,
    SlideNotFoundError,
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
)
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.reading import safe_location, url_scheme
from tilestream.storage import EXTRAS, IOStats, Stat, Store, is_url, store_for
from tilestream.storage.ranges import open_ranges

__all__ = [
    "DEFAULT_BYTE_CACHE",
    "HEADER_BLOCK",
    "PREFETCH_THREADS",
    "SOURCE",
    "STORAGE_SCHEMES",
    "RemoteSlideMethods",
    "RemoteSource",
    "StoreReader",
    "is_storage_url",
    "open_source",
    "remote_slide_version",
    "slide_error",
]

logger = logging.getLogger(__name__)

#: Stored (compressed) tile bytes a remote slide keeps fetched ahead of decoding.
DEFAULT_BYTE_CACHE = 64 * 1024 * 1024

#: Block size of the reads that parse a remote slide's header.
HEADER_BLOCK = 256 * 1024
#: Read-ahead fetches in flight at once (each one coalesced request set): each waits a
#: round trip, so several hide the latency.
PREFETCH_THREADS = 4

#: The remote object a backend being constructed reads (set by :mod:`tilestream.slide.opening`).
SOURCE: contextvars.ContextVar[RemoteSource | None] = contextvars.ContextVar(
    "tilestream_slide_source", default=None
)

#: The URL schemes of slides read through a store (object stores and web servers).
STORAGE_SCHEMES = frozenset(EXTRAS) | {"az", "abfs", "abfss", "oss"}


def is_storage_url(location: object) -> bool:
    """Whether ``location`` is a URL read through a store (:data:`STORAGE_SCHEMES`).

    Paths, ``file://`` URLs (local files), DICOMweb and unknown schemes are not.
    """
    return url_scheme(location) in STORAGE_SCHEMES and is_url(str(location))


def slide_error(exc: StorageError, url: str) -> SlideError:
    """The slide error for a store's failure on the slide at ``url`` (shown without secrets).

    A missing object is :class:`~tilestream.errors.SlideNotFoundError`, refused
    credentials :class:`~tilestream.errors.SlideAccessDeniedError`, anything
    else (5xx, resets, timeouts after every retry) :class:`~tilestream.errors.RemoteSlideError`.
    """
    shown = str(safe_location(url))
    detail = exc.message if hasattr(exc, "message") else str(exc)
    if isinstance(exc, StorageNotFoundError):
        return SlideNotFoundError(f"no such slide in the store ({detail})", path=shown)
    if isinstance(exc, StorageAccessDeniedError):
        return SlideAccessDeniedError(f"the store refused access ({detail})", path=shown)
    return RemoteSlideError(f"the store failed ({detail})", path=shown)


@dataclass(frozen=True)
class RemoteSource:
    """A slide object in a store: where it is and what it was when opened.

    ``url`` is the slide's URL without credentials or query string (what
    messages show); ``stat`` the object's size and version when looked up.
    """

    url: str
    store: Store
    key: str
    stat: Stat

    def open_read(self, *, block_size: int = HEADER_BLOCK, blocks: int = 64) -> BinaryIO:
        """A seekable file over the object for parsing its header (tifffile).

        Reads go through aligned ``block_size`` blocks kept in a small LRU
        (``blocks`` of them): a parser jumping between IFDs, tag values and
        back costs one ranged request per block it touches, once. Store
        failures become slide errors (:func:`slide_error`).
        """
        cache = _BlockCache(self, block_size, blocks)
        return open_ranges(cache.read, self.stat.size, self.url, buffer_size=16 * 1024)


def open_source(url: str, storage_options: Mapping[str, Any] | None = None) -> RemoteSource:
    """Look the slide object at ``url`` up: its store, key, size and version.

    Raises
    ------
    SlideNotFoundError, SlideAccessDeniedError, RemoteSlideError
        From the store (see :func:`slide_error`).
    ConfigError, MissingDependencyError
        A URL holding credentials; a missing extra (``pip install 'tilestream[s3]'``).
    """
    shown = str(safe_location(url))
    try:
        store, key = store_for(url, storage_options)
    except (ConfigError, MissingDependencyError):
        raise
    except StorageError as exc:
        raise slide_error(exc, shown) from None
    if not key:
        raise SlideNotFoundError("the URL names no object", path=shown)
    try:
        stat = store.stat(key)
    except StorageError as exc:
        raise slide_error(exc, shown) from None
    return RemoteSource(shown, store, key, stat)


def remote_slide_version(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The version of the slide object at ``url`` (:attr:`tilestream.storage.Stat.version`).

    The ETag on object stores, else size and modification time: it changes
    when the object is replaced, so a resumable run can tell a slide it
    extracted from a changed one. One ``HEAD`` request; errors as :func:`open_source`.
    """
    return open_source(url, storage_options).stat.version


class _BlockCache:
    """Ranged reads of one object through a cache of aligned blocks (for header parsing)."""

    def __init__(self, source: RemoteSource, block_size: int, blocks: int) -> None:
        self._source = source
        self._size = source.stat.size
        self._block = block_size
        self._blocks: LRU[int, bytes] = LRU(max_items=blocks)

    def _fetch(self, first: int, last: int) -> list[bytes]:
        bs = self._block
        blocks = range(first, last + 1)
        got = {b: data for b in blocks if (data := self._blocks.get(b)) is not None}
        missing = [b for b in blocks if b not in got]
        if missing:
            ranges = [(b * bs, min(bs, self._size - b * bs)) for b in missing]
            try:
                datas = self._source.store.read_ranges(self._source.key, ranges)
            except StorageError as exc:
                raise slide_error(exc, self._source.url) from None
            for b, data in zip(missing, datas, strict=True):
                self._blocks.put(b, data)
                got[b] = data
        return [got[b] for b in blocks]

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end), from the blocks they touch."""
        size = min(size, max(0, self._size - offset))
        if size <= 0:
            return b""
        bs = self._block
        first, last = offset // bs, (offset + size - 1) // bs
        lo = offset - first * bs
        return b"".join(self._fetch(first, last))[lo : lo + size]


class StoreReader:
    """Ranged reads of one slide object, with coalesced fetches into a bounded byte cache.

    The interface of :class:`tilestream.slide.fastpath.FileReader` (``path``,
    ``size``, :meth:`read`, :meth:`close`) plus :meth:`fetch` (the ranges a
    region needs, in one coalesced :meth:`Store.read_ranges` call) and
    :meth:`prefetch` (the same on a background thread). Thread-safe: a range
    another thread is already fetching is waited for, not fetched twice.
    """

    remote = True

    def __init__(self, source: RemoteSource, *, cache_bytes: int = DEFAULT_BYTE_CACHE) -> None:
        self.source = source
        self.path = source.url
        self.size = source.stat.size
        self._store = source.store
        self._key = source.key
        self._cache: LRU[tuple[int, int], bytes] = LRU(max_bytes=cache_bytes, sizeof=len)
        self._inflight: dict[tuple[int, int], Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def stats(self) -> IOStats:
        """The store's counters: requests, bytes read, retries."""
        return self._store.stats

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end of the object)."""
        key = (offset, size)
        data = self._cache.get(key)
        if data is not None:
            return data
        self.fetch([key])
        data = self._cache.get(key)
        if data is not None:
            return data
        return self._read_ranges([key])[0]  # evicted at once: a cache too small for one range

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Fetch the ranges not cached yet, in one coalesced request set; wait for all of them."""
        mine: list[tuple[int, int]] = []
        waits: list[Future[None]] = []
        future: Future[None] = Future()
        with self._lock:
            for key in dict.fromkeys(ranges):
                if key[1] <= 0 or key in self._cache:
                    continue
                pending = self._inflight.get(key)
                if pending is not None:
                    waits.append(pending)
                else:
                    mine.append(key)
                    self._inflight[key] = future
        if mine:
            try:
                datas = self._read_ranges(mine)
                for key, data in zip(mine, datas, strict=True):
                    self._cache.put(key, data)
            except BaseException as exc:
                future.set_exception(exc)
                raise
            else:
                future.set_result(None)
            finally:
                with self._lock:
                    for key in mine:
                        self._inflight.pop(key, None)
        for pending in waits:  # fetched by another thread; if that failed, read() fetches again
            pending.exception()

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Start fetching ``ranges`` on a background thread (failures show on the later read)."""
        wanted = [r for r in ranges if r[1] > 0 and r not in self._cache]
        if not wanted or self._closed:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    PREFETCH_THREADS, thread_name_prefix="tilestream-prefetch"
                )
            pool = self._pool
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            pool.submit(self._quiet_fetch, wanted)

    def _quiet_fetch(self, ranges: list[tuple[int, int]]) -> None:
        try:
            self.fetch(ranges)
        except SlideError as exc:
            logger.debug("%s: read-ahead failed: %s", self.path, exc.message)

    def _read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            return self._store.read_ranges(self._key, ranges)
        except StorageError as exc:
            raise slide_error(exc, self.path) from None

    def close(self) -> None:
        """Stop read-ahead, drop the cached bytes and release the store's threads."""
        self._closed = True
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._cache.clear()
        self._store.close()


class RemoteSlideMethods:
    """What :class:`~tilestream.slide.Slide` offers for slides read from a store."""

    _impl: SlideBackend
    _source: RemoteSource | None

    if TYPE_CHECKING:

        @property
        def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def io_stats(self) -> IOStats | None:
        """A remote slide's store counters (requests, bytes read, retries); ``None`` otherwise.

        A staged slide has none (its reads are local). Read amplification is
        ``io_stats.bytes_read`` over the stored bytes the reads needed.
        """
        return self._impl.io_stats

    @property
    def source_version(self) -> str | None:
        """The remote object's version when opened (ETag, else size and mtime); ``None`` for a file.

        The same as :func:`remote_slide_version` of its URL then.
        """
        return None if self._source is None else self._source.stat.version

    def prefetch(
        self, level: int, regions: Sequence[tuple[tuple[int, int], tuple[int, int]]]
    ) -> None:
        """Fetch in the background what reading ``regions`` of ``level`` will need.

        ``regions`` are ``(location, size)`` pairs as ``read_region`` takes
        them (level-0 location, size in pixels of ``level``). A slide read
        from a store fetches the stored tiles not decoded yet in one coalesced
        request set on a background thread; for anything else this does nothing.
        """
        impl = self._impl
        if impl.io_stats is None or not regions:
            return
        ds = self.level_downsamples[level]
        boxes = [(int(x / ds), int(y / ds), int(w), int(h)) for (x, y), (w, h) in regions]
        impl.prefetch(level, boxes)
