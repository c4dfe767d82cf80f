"""The storage contract: :class:`Store`, the interface every backend implements.

A store holds objects under ``/``-separated keys (``"run/p1.tfrecords"``)
relative to its root (a folder, a bucket, a web server). It reads whole
objects or byte ranges, lists keys under a prefix, and writes objects so that
a reader never sees a partial one under its final key. Backends implement the
abstract methods; :meth:`Store.read_ranges`, :meth:`Store.size`,
:meth:`Store.etag` and :meth:`Store.exists` come from them.

The conformance suite every backend must pass is
:class:`tilestream.testing.storage.StoreConformance`.
"""

from __future__ import annotations

import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from tilestream.errors import StorageNotFoundError

from .ranges import DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST, coalesce, split_request

__all__ = ["Data", "IOStats", "Stat", "Store", "check_key", "redact_url"]

#: What :meth:`Store.write_atomic` accepts: the bytes, or an iterable of chunks.
Data = bytes | bytearray | memoryview | Iterable[bytes]


@dataclass(frozen=True)
class Stat:
    """An object's size and version: ``etag`` (object stores) and ``mtime`` (seconds, or ``None``).

    >>> Stat(10, '"abc"', None).version, Stat(10, None, 1.5).version
    ('"abc"', '10-1.5')
    """

    size: int
    etag: str | None = None
    mtime: float | None = None

    @property
    def version(self) -> str:
        """A token that changes when the object does: the ETag, else size and mtime."""
        return self.etag if self.etag else f"{self.size}-{self.mtime}"


@dataclass
class IOStats:
    """Counters of one store's traffic (thread-safe): requests, bytes read and written, retries."""

    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, read: int = 0, written: int = 0, retries: int = 0) -> None:
        """Count a request's traffic."""
        with self._lock:
            self.requests += requests
            self.bytes_read += read
            self.bytes_written += written
            self.retries += retries

    def reset(self) -> None:
        """Start counting again from zero."""
        with self._lock:
            self.requests = self.bytes_read = self.bytes_written = self.retries = 0


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Refuse keys that could escape a store's root or are not canonical (``ValueError``).

    >>> check_key("run/p1.tfrecords")
    'run/p1.tfrecords'
    >>> check_key("../etc/passwd")
    Traceback (most recent call last):
    ValueError: invalid storage key '../etc/passwd': no empty, '.' or '..' parts, no leading '/'
    """
    if key == "" and allow_empty:
        return key
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise ValueError(
            f"invalid storage key {key!r}: no empty, '.' or '..' parts, no leading '/'"
        )
    return key


class _Source:
    """The caller's chunks; remembers an exception the caller's iterator raised."""

    def __init__(self, chunks: Data) -> None:
        self._chunks: Iterator[bytes] = iter(
            [bytes(chunks)] if isinstance(chunks, bytes | bytearray | memoryview) else chunks
        )
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return
            except Exception as exc:
                self.error = exc
                raise
            yield chunk


def redact_url(url: str) -> str:
    """``url`` without user, password, query string or fragment (safe for messages and logs).

    >>> redact_url("https://user:secret@example.org:8443/a.svs?X-Amz-Signature=abc#x")
    'https://example.org:8443/a.svs'
    >>> redact_url("dicomweb+http://me:pw@[::1]:8042/dw/studies/1?token=x")
    'dicomweb+http://[::1]:8042/dw/studies/1'
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:
        return url.split("?", 1)[0]
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: left out
        port = None
    if port is not None:
        host += f":{port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class Store(ABC):
    """Objects under keys: ranged reads, listing, atomic and conditional writes.

    Subclasses set :attr:`url` (the root's URL, free of credentials) and
    implement the abstract methods; every failure is a
    :class:`~tilestream.errors.StorageError` naming the object's URL.
    """

    #: The root's URL without credentials (``s3://bucket``, ``file:///data``).
    url: str = ""
    #: Whether writes are refused (``http(s)://``).
    read_only: bool = False
    #: Whether :meth:`put_if_absent` is atomic on this store.
    supports_conditional_write: bool = True
    #: How many ranged requests :meth:`read_ranges` runs at once.
    max_concurrency: int = 8

    def __init__(self) -> None:
        self.stats = IOStats()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def url_of(self, key: str) -> str:
        """The URL of ``key`` (for messages; never holds credentials)."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    # -- reading ---------------------------------------------------------------------
    @abstractmethod
    def stat(self, key: str) -> Stat:
        """Size and version of the object at ``key`` (``StorageNotFoundError`` if missing)."""

    @abstractmethod
    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """``size`` bytes of ``key`` from ``offset``; fewer only where the object ends."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A seekable binary file reading ``key`` (closed by the caller)."""

    def read(self, key: str) -> bytes:
        """The whole object at ``key``.

        This default (a ``stat``, then one ranged read) can mix two versions of an
        object replaced in between; backends override it with a single read.
        """
        return self.read_range(key, 0, self.size(key))

    def read_ranges(
        self,
        key: str,
        ranges: Sequence[tuple[int, int]],
        *,
        max_gap: int = DEFAULT_MAX_GAP,
        max_request: int = DEFAULT_MAX_REQUEST,
    ) -> list[bytes]:
        """The bytes of each ``(offset, size)`` range, in the order given.

        Nearby ranges are coalesced into one request (:func:`~.ranges.coalesce`)
        and the requests run concurrently (at most :attr:`max_concurrency`).
        """
        requests = coalesce(ranges, max_gap=max_gap, max_request=max_request)
        out: list[bytes] = [b""] * len(ranges)
        if not requests:  # nothing but empty ranges
            return out

        def fetch(i: int) -> dict[int, bytes]:
            req = requests[i]
            return split_request(req, self.read_range(key, req.start, req.size), ranges)

        if len(requests) == 1:
            results: Iterable[dict[int, bytes]] = [fetch(0)]
        else:
            results = self._executor().map(fetch, range(len(requests)))
        for part in results:
            for i, data in part.items():
                out[i] = data
        return out

    def size(self, key: str) -> int:
        """The object's size in bytes."""
        return self.stat(key).size

    def etag(self, key: str) -> str | None:
        """The object's ETag (``None`` where the store has none, e.g. local files)."""
        return self.stat(key).etag

    def check_root(self) -> None:
        """Raise ``StorageNotFoundError`` (naming :attr:`url`) if the root itself is missing.

        The root is the folder or the bucket: a run checks it before any work,
        since some S3 servers create a bucket on its first write and others fail
        only at the first upload. This default (for stores that cannot tell)
        checks nothing.
        """
        return

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        try:
            self.stat(key)
        except StorageNotFoundError:
            return False
        return True

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys of the objects under ``prefix``, sorted.

        The prefix is folder-like: ``"run"`` (or ``"run/"``) lists ``run/...``, not ``run2/...``.
        """

    # -- writing ---------------------------------------------------------------------
    @abstractmethod
    def write_atomic(self, key: str, data: Data) -> None:
        """Store ``data`` at ``key``; readers see the old object or the whole new one, never part."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` at ``key`` only if nothing is there; ``False`` if something was.

        Atomic where :attr:`supports_conditional_write`: of two writers racing
        for one key exactly one gets ``True``.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (nothing happens if it does not exist)."""

    # -- lifetime --------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix="tilestream-storage"
                )
            return self._pool

    def close(self) -> None:
        """Release the store's threads (it stays usable; they are made again on demand)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_pool_lock", None)
        state.pop("stats", None)  # counters are per process
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
        self.stats = IOStats()
