"""A :class:`~tilestream.storage.Store` over any fsspec filesystem (S3, GCS, HTTP, local, memory).

Every call goes through one bounded retry layer (:mod:`.retry`): transient
failures are retried with backoff, the rest become a
:class:`~tilestream.errors.StorageError` naming the object's URL.
:func:`tilestream.storage.store_for` turns off the retries of s3fs and
botocore underneath, so a permanent fault is reported after
``RetryPolicy.attempts`` requests, not after a product of three retry loops.

Atomic writes: on object stores (``s3``, ``gs``) the bytes go in
one PUT, and a stream of chunks in a multipart upload that is completed when
the last chunk is written or aborted on any failure; elsewhere (local and other
filesystems) a temporary sibling is written and renamed.

Examples
--------
>>> import fsspec
>>> store = FsspecStore(fsspec.filesystem("memory"), "/doctest", url="memory://doctest")
>>> store.write_atomic("a/b.bin", b"0123456789")
>>> store.read_ranges("a/b.bin", [(8, 2), (0, 3)])
[b'89', b'012']
>>> store.stat("a/b.bin").size, list(store.list("a"))
(10, ['a/b.bin'])
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

from tilestream.errors import StorageNotFoundError, StorageReadOnlyError

from ._direct import RangeIgnoredError, direct_get_for
from .base import Data, Stat, Store, _Source, check_key, redact_url
from .classify import classify, error_chain, is_precondition_failed
from .local import LocalStore
from .ranges import check_range, open_ranges
from .retry import Failure, RetryPolicy, call_with_retries, storage_error

__all__ = ["OBJECT_STORE_PROTOCOLS", "FsspecStore"]

T = TypeVar("T")

#: Protocols whose single PUT and multipart upload are atomic at the final key.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
#: Protocols whose conditional create :meth:`FsspecStore.put_if_absent` uses (S3's
#: ``If-None-Match: *``, GCS's ``ifGenerationMatch=0``: fsspec's ``mode="create"``).
_CONDITIONAL_PUT = frozenset({"s3", "s3a", "gs", "gcs"})
_LOCAL = frozenset({"file", "local"})

# fsspec runs every async filesystem on one event loop in a thread. A forked child (a
# DataLoader worker) inherits that loop's epoll instance, which the kernel shares with the
# parent: when the child's copies of the parent's sessions are finalised, their sockets are
# unregistered from it, in the parent too, and the parent's next request on a pooled
# connection waits forever. The child's copy of the loop gets a selector of its own, and is
# marked as not running (the sessions' finalisers then close nothing through it).
_parent_loops: list[Any] = []


def _remember_loop() -> None:
    asyn = sys.modules.get("fsspec.asyn")
    loop = asyn.loop[0] if asyn is not None else None
    _parent_loops[:] = [loop] if loop is not None else []


def _detach_inherited_loop() -> None:
    for loop in _parent_loops:
        with contextlib.suppress(AttributeError):
            loop._selector = selectors.SelectSelector()
            loop._thread_id = None
    _parent_loops.clear()


os.register_at_fork(
    before=_remember_loop,
    after_in_child=_detach_inherited_loop,
    after_in_parent=_parent_loops.clear,
)


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, tuple | list) else protocol)


def _mtime(info: dict[str, Any]) -> float | None:
    for name in ("LastModified", "mtime", "updated", "last_modified"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _etag(info: dict[str, Any]) -> str | None:
    for name in ("ETag", "etag", "md5Hash"):
        value = info.get(name)
        if value:
            return str(value)
    return None


class FsspecStore(Store):
    """Objects on an fsspec filesystem under ``root`` (a bucket, a folder, a site).

    Parameters
    ----------
    fs
        The filesystem (``s3fs.S3FileSystem``, ``gcsfs.GCSFileSystem``, ...).
    root
        The path of the store's root on ``fs`` (``"bucket"``, ``"/data"``).
    url
        The root's URL for messages, without credentials (``"s3://bucket"``).
    retry
        Retries of transient failures.
    read_only
        Refuse writes (always so for ``http(s)``).
    buffer_size
        Read buffer of the files :meth:`open_read` returns.
    part_size
        Part size of multipart uploads (S3 needs at least 5 MiB).
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        *,
        url: str,
        retry: RetryPolicy | None = None,
        read_only: bool = False,
        buffer_size: int = 256 * 1024,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__()
        self._fs = fs
        self._pid = os.getpid()
        self.root = str(fs._strip_protocol(root)) if root else ""
        self._prefix = self.root if self.root.endswith("/") or not self.root else self.root + "/"
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.protocol = _protocol(fs)
        self.read_only = read_only or self.protocol in ("http", "https")
        self.buffer_size = buffer_size
        self.part_size = part_size
        self.supports_conditional_write = self.protocol in _CONDITIONAL_PUT | _LOCAL
        # plain S3 reads bypass s3fs: presigned ranged GETs over an HTTP pool (see ._direct)
        self._direct = direct_get_for(fs)

    @property
    def fs(self) -> Any:
        """The filesystem; in a forked child, a new one made with the same options.

        A DataLoader worker forked from a process that used the store must not
        share its connection pool: requests of both would interleave on the same
        keep-alive sockets (the parent's next request then waits forever).
        """
        if os.getpid() != self._pid:
            fs = self._fs
            self._fs = type(fs)(*fs.storage_args, **fs.storage_options)
            self._pid = os.getpid()
        return self._fs

    @property
    def direct_reads(self) -> bool:
        """Whether reads bypass fsspec: presigned ranged GETs over an HTTP pool (plain S3 only).

        Requester-pays buckets, extra request parameters and proxies stay on
        s3fs, as does everything when ``TILESTREAM_S3_DIRECT=0``.
        """
        return self._direct is not None and self._direct.usable

    def url_of(self, key: str) -> str:
        """The object's URL without credentials or query string."""
        return redact_url(super().url_of(key))

    def _path(self, key: str) -> str:
        check_key(key)
        return self._prefix + key

    def _call(self, key: str, fn: Callable[[], T]) -> T:
        return call_with_retries(
            fn,
            url=self.url_of(key),
            policy=self.retry,
            classify=classify,
            on_retry=lambda: self.stats.add(retries=1),
        )

    def _cat(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object at ``path``, or its bytes ``[start, end)``."""
        if self._direct is not None and self._direct.usable:
            size = None if start is None or end is None else end - start
            data = self._direct.get(self.fs, path, start, size)
            if data is not None:
                return data
        return bytes(self.fs.cat_file(path, start=start, end=end))

    def _writable(self, key: str) -> None:
        if self.read_only:
            raise StorageReadOnlyError("the store is read-only", path=self.url_of(key))

    # -- reading ---------------------------------------------------------------------
    def stat(self, key: str) -> Stat:
        path = self._path(key)

        def info() -> dict[str, Any]:
            self.stats.add(requests=1)
            return dict(self.fs.info(path))

        found = self._call(key, info)
        if found.get("type") == "directory":
            raise StorageNotFoundError("no such object (a folder)", path=self.url_of(key))
        size = found.get("size")
        if size is None:
            raise storage_error(
                Failure("other", "the store does not tell the size"), self.url_of(key)
            )
        return Stat(size=int(size), etag=_etag(found), mtime=_mtime(found))

    def check_root(self) -> None:
        """Raise ``StorageNotFoundError`` naming the bucket if it does not exist (one request).

        Access refused is ``StorageAccessDeniedError``; a store that is not an
        object store (a web site, a filesystem) checks nothing.
        """
        if self.protocol not in OBJECT_STORE_PROTOCOLS or not self.root:
            return
        bucket = self.root.split("/", 1)[0]
        url = f"{self.protocol}://{bucket}"

        def info() -> None:
            self.stats.add(requests=1)
            self.fs.info(bucket)

        try:
            call_with_retries(info, url=url, policy=self.retry, classify=classify)
        except StorageNotFoundError:
            raise StorageNotFoundError(
                "no such bucket; create it first (tilestream does not create buckets)", path=url
            ) from None

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        check_range(offset, size)
        path = self._path(key)
        if size == 0:
            self.stat(key)  # a missing object is an error, even for no bytes
            return b""

        def fetch() -> bytes:
            self.stats.add(requests=1)
            try:
                return self._cat(path, offset, offset + size)
            except RangeIgnoredError:
                raise storage_error(
                    Failure("other", "the server ignored the byte range requested"),
                    self.url_of(key),
                ) from None
            except Exception as exc:
                if _past_the_end(exc):
                    return b""
                raise

        data = self._call(key, fetch)
        if len(data) > size:  # a server that ignored the Range header
            raise storage_error(
                Failure("other", "the server ignored the byte range requested"), self.url_of(key)
            )
        self.stats.add(read=len(data))
        return data

    def read(self, key: str) -> bytes:
        """The whole object, in one request."""
        path = self._path(key)

        def fetch() -> bytes:
            self.stats.add(requests=1)
            return self._cat(path)

        data = self._call(key, fetch)
        self.stats.add(read=len(data))
        return data

    def open_read(self, key: str) -> BinaryIO:
        size = self.stat(key).size
        return open_ranges(
            lambda offset, n: self.read_range(key, offset, n),
            size,
            self.url_of(key),
            buffer_size=self.buffer_size,
        )

    def list(self, prefix: str = "") -> Iterator[str]:
        prefix = prefix.rstrip("/")
        base = self._path(prefix) if prefix else self.root or "/"

        def find() -> list[str]:
            self.stats.add(requests=1)
            try:
                found = self.fs.find(base, withdirs=False, detail=True)
            except FileNotFoundError:
                return []
            # s3fs reports an empty "folder" as an entry of type directory: not an object
            return [p for p, info in found.items() if info.get("type") != "directory"]

        root = self._prefix
        for path in sorted(self._call(prefix, find)):
            key = path[len(root) :] if path.startswith(root) else path.lstrip("/")
            name = key.rsplit("/", 1)[-1]
            if not key or (name.startswith(".") and name.endswith(".tmp")):
                continue  # a folder marker, or an interrupted write's temporary file
            if not prefix or key == prefix or key.startswith(prefix + "/"):
                yield key

    # -- writing ---------------------------------------------------------------------
    def write_atomic(self, key: str, data: Data) -> None:
        self._writable(key)
        path = self._path(key)
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            if self.protocol in OBJECT_STORE_PROTOCOLS:
                self._call(key, lambda: self.fs.pipe_file(path, payload))
            else:
                self._call(key, lambda: self._write_renamed(path, [payload]))
            self.stats.add(requests=1, written=len(payload))
            return
        source = _Source(data)
        try:  # a stream cannot be replayed: no retry, and nothing left behind on failure
            if self.protocol in OBJECT_STORE_PROTOCOLS:
                written = self._write_uploaded(path, source)
            else:
                written = self._write_renamed(path, source)
        except Exception as exc:
            if source.error is not None:  # the caller's iterator failed: its error, as is
                raise source.error from None
            raise storage_error(classify(exc), self.url_of(key)) from None
        self.stats.add(requests=1, written=written)

    def _write_uploaded(self, path: str, chunks: Data) -> int:
        """A multipart upload (or one PUT if small) completed at the end, aborted on failure."""
        written = 0
        f = self.fs.open(path, "wb", autocommit=False, block_size=self.part_size)
        try:
            for chunk in chunks:
                written += f.write(chunk)
            f.close()
            f.commit()
        except BaseException:
            f.discard()
            raise
        return written

    def _write_renamed(self, path: str, chunks: Data) -> int:
        """Write a temporary sibling, then rename it onto ``path``."""
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.{name}.{secrets.token_hex(6)}.tmp"
        written = 0
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as f:
                for chunk in chunks:
                    written += f.write(chunk)
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise
        return written

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._writable(key)
        path = self._path(key)
        if self.protocol in _LOCAL:
            local = LocalStore(os.path.dirname(path) or "/")
            return local.put_if_absent(os.path.basename(path), data)
        if self.protocol not in _CONDITIONAL_PUT:
            raise StorageReadOnlyError(
                f"conditional writes are not supported on {self.protocol}://",
                path=self.url_of(key),
            )

        def put() -> bool:
            self.stats.add(requests=1)
            try:
                self.fs.pipe_file(path, bytes(data), mode="create")
            except Exception as exc:
                if is_precondition_failed(exc):
                    return False
                raise
            self.stats.add(written=len(data))
            return True

        return self._call(key, put)

    def delete(self, key: str) -> None:
        self._writable(key)
        path = self._path(key)

        def rm() -> None:
            self.stats.add(requests=1)
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                return

        self._call(key, rm)
        self.fs.invalidate_cache(path)


def _past_the_end(exc: BaseException) -> bool:
    """Whether a ranged read failed only because it starts at or after the object's end."""
    for e in error_chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            if (response.get("Error") or {}).get("Code") == "InvalidRange":
                return True
            if (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") == 416:
                return True
        if getattr(e, "status", None) == 416 or getattr(e, "code", None) == 416:
            return True
    return False
