"""A :class:`~tilestream.storage.Store` over a local folder (POSIX paths, ``file://``).

Reads are ``pread`` calls; :meth:`LocalStore.write_atomic` writes a temporary
file beside the final one, fsyncs it and renames it into place
(:mod:`tilestream._util.atomic`); :meth:`LocalStore.put_if_absent` links the
complete temporary file to the final name, which fails if the name is taken,
so it is both atomic and exclusive.

Examples
--------
>>> import tempfile
>>> store = LocalStore(tempfile.mkdtemp())
>>> store.write_atomic("run/a.bin", b"0123456789")
>>> store.read_range("run/a.bin", 2, 3), store.size("run/a.bin"), list(store.list("run"))
(b'234', 10, ['run/a.bin'])
>>> store.put_if_absent("run/a.bin", b"other"), store.read("run/a.bin")
(False, b'0123456789')
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tilestream._util.atomic import TEMP_SUFFIX, TOKEN_HEX, atomic_path, fsync_dir, is_temp_file
from tilestream.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
)

from .base import Data, Stat, Store, _Source, check_key
from .ranges import check_range

__all__ = ["LocalStore"]


class LocalStore(Store):
    """Objects as files under the folder ``root``; keys are paths relative to it.

    Parameters
    ----------
    root
        The folder (created on the first write if it does not exist).
    """

    supports_conditional_write = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.url = self.root.as_uri()

    def url_of(self, key: str) -> str:
        """The object's local path (what a user typed, and what messages name)."""
        return os.fspath(self.root / key) if key else os.fspath(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _error(self, exc: OSError, key: str) -> StorageError:
        where = self.url_of(key)
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            return StorageNotFoundError("no such file", path=where)
        if isinstance(exc, PermissionError):
            return StorageAccessDeniedError("permission denied", path=where)
        if isinstance(exc, IsADirectoryError):
            return StorageNotFoundError("is a folder, not a file", path=where)
        return StorageError(exc.strerror or type(exc).__name__, path=where)

    # -- reading ---------------------------------------------------------------------
    def check_root(self) -> None:
        """Raise ``StorageNotFoundError`` if the root folder does not exist."""
        if not self.root.is_dir():
            raise StorageNotFoundError("no such folder", path=self.url)

    def stat(self, key: str) -> Stat:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as exc:
            raise self._error(exc, key) from exc
        if not path.is_file():
            raise StorageNotFoundError("is a folder, not a file", path=self.url_of(key))
        return Stat(size=st.st_size, etag=None, mtime=st.st_mtime)

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        check_range(offset, size)
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = os.pread(f.fileno(), size, offset) if size else b""
        except OSError as exc:
            raise self._error(exc, key) from exc
        self.stats.add(requests=1, read=len(data))
        return data

    def read(self, key: str) -> bytes:
        """The whole file, read from one open file (a concurrent replacement is not mixed in)."""
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except OSError as exc:
            raise self._error(exc, key) from exc
        self.stats.add(requests=1, read=len(data))
        return data

    def open_read(self, key: str) -> BinaryIO:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - returned to the caller
        except OSError as exc:
            raise self._error(exc, key) from exc
        self.stats.add(requests=1)
        return f

    def list(self, prefix: str = "") -> Iterator[str]:
        prefix = prefix.rstrip("/")
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            yield prefix
            return
        if not base.is_dir():
            return
        found = []
        for folder, _dirs, files in os.walk(base):
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if not is_temp_file(name):
                    found.append(name if rel == "." else f"{rel}/{name}")
        yield from sorted(found)

    # -- writing ---------------------------------------------------------------------
    def _write_temp(self, tmp: Path, data: Data) -> int:
        written = 0
        with open(tmp, "wb") as f:
            for chunk in data if isinstance(data, _Source) else _Source(data):
                written += f.write(chunk)
        return written

    def write_atomic(self, key: str, data: Data) -> None:
        path = self._path(key)
        source = _Source(data)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                written = self._write_temp(tmp, source)
        except OSError as exc:
            if source.error is exc:  # the caller's iterator failed: its error, as is
                raise
            raise self._error(exc, key) from exc
        self.stats.add(requests=1, written=written)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                return False
            return self._link_new(path, data)
        except OSError as exc:
            raise self._error(exc, key) from exc

    def _link_new(self, path: Path, data: bytes) -> bool:
        """Write a complete temporary file and hard-link it to ``path`` (fails if taken)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(TOKEN_HEX // 2)}{TEMP_SUFFIX}")
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                return self._exclusive_create(path, data)
            fsync_dir(path.parent)
            self.stats.add(requests=1, written=len(data))
            return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _exclusive_create(self, path: Path, data: bytes) -> bool:
        """Fallback where hard links are not allowed: ``O_EXCL`` (exclusive, not atomic)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.stats.add(requests=1, written=len(data))
        return True

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, key) from exc
        self.stats.add(requests=1)
