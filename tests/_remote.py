"""Copies of local test files in SeaweedFS, by S3 URL or by the filer's HTTP URL.

The remote test modules and the local TFRecord and loader suites read these
copies (``kind`` is ``"local"``, ``"s3"`` or ``"http"``): a test writes its
files locally as it always did, :meth:`Remote.put` places them in the store
(with or without the ``.index.npz`` beside each) and returns what the reading
API gets, a path for ``local`` and a URL otherwise, with :attr:`Remote.options`
as its ``storage_options``.

The ``storage`` fixture of ``tests/conftest.py`` gives one :class:`Remote` per
kind, in one bucket per test module, so a module's buckets are created once;
files are stored under a key made of a digest of their bytes, so a file a
test writes again with the same bytes is not uploaded again.

The shared bucket, store and fault-proxy helpers of the ``test_remote_*``
modules are here too (:func:`bucket_store`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from tilestream.storage import Store, store_for

__all__ = [
    "KINDS",
    "Remote",
    "bucket_store",
    "index_beside",
    "make_remote",
    "module_bucket_name",
    "storage_kinds",
]

KINDS = ("local", "s3", "http")
T = TypeVar("T")


def storage_kinds(*kinds: str, xfail: str | None = None) -> list[Any]:
    """Kinds for ``@pytest.mark.parametrize("storage", ..., indirect=True)``.

    ``kinds`` defaults to every kind; ``xfail`` marks the remote ones as a known failure
    (strict: the test must fail there until the cause is fixed).
    """
    chosen = kinds or KINDS
    if xfail is None:
        return list(chosen)
    mark = pytest.mark.xfail(strict=True, reason=xfail)
    return [k if k == "local" else pytest.param(k, marks=mark) for k in chosen]


def bucket_store(seaweed: Any, bucket: str) -> Store:
    """The read-write :class:`~tilestream.storage.Store` of ``bucket`` in ``seaweed``."""
    return store_for(f"s3://{bucket}", seaweed.storage_options)[0]


def module_bucket_name(module_name: str) -> str:
    """An S3 bucket name (lowercase, digits, ``-``, at most 63) for a test module."""
    stem = module_name.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-").lower()
    return f"{stem[:48].strip('-')}-{secrets.token_hex(3)}"


def index_beside(path: Path) -> Path:
    """The ``.index.npz`` a writer puts beside ``path`` (``a.tfrecords`` -> ``a.index.npz``)."""
    return path.with_name(path.name.rsplit(".", 1)[0] + ".index.npz")


def _index_digest(data: bytes | None) -> bytes:
    """What an index says, less the local mtime a writer records (equal indexes, one upload)."""
    if data is None:
        return b"-"
    try:
        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k].tobytes() for k in sorted(z.files) if k != "tfrecord_mtime_ns"}
    except Exception:  # not a readable npz (a test's damaged index): its bytes
        return hashlib.sha256(data).digest()
    return hashlib.sha256(b"".join(k.encode() + v for k, v in arrays.items())).digest()


@dataclass
class Remote:
    """Where copies go: ``kind``, the bucket, and the options a reader needs."""

    kind: str
    seaweed: Any = None
    bucket: str = ""
    uploaded: set[str] = field(default_factory=set)
    #: Where :meth:`put` stores files when given no prefix (``None``: a digest of their bytes).
    prefix: str | None = "run"

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def options(self) -> dict[str, Any] | None:
        return None if self.kind != "s3" else dict(self.seaweed.storage_options)

    @property
    def kw(self) -> dict[str, Any]:
        """The keywords a reading API gets: none locally, else ``storage_options``."""
        return {} if self.local else {"storage_options": self.options}

    @property
    def cli_args(self) -> list[str]:
        """``--storage-option KEY=VALUE`` arguments for the CLI (none locally or over HTTP)."""
        o = self.options
        if o is None:
            return []
        return [
            arg
            for k in ("key", "secret", "endpoint_url")
            for arg in ("--storage-option", f"{k}={o[k]}")
        ]

    @property
    def store(self) -> Store:
        return bucket_store(self.seaweed, self.bucket)

    def url(self, key: str) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{key}"
        return f"{self.seaweed.filer_url}/buckets/{self.bucket}/{key}"

    def _write(self, store: Store, key: str, data: bytes) -> None:
        if key not in self.uploaded:
            store.write_atomic(key, data)
            self.uploaded.add(key)

    def put(
        self,
        files: Sequence[str | Path],
        *,
        prefix: str | None = None,
        with_indexes: bool = True,
    ) -> list[str]:
        """Place ``files`` (and their ``.index.npz`` beside them) in the store; what to read.

        Local: the paths as given (as strings). Remote: their URLs, under ``prefix`` (or
        :attr:`prefix`), or where neither is set, under a digest of their bytes (and of
        their indexes'), so that files of equal bytes are uploaded once.
        ``with_indexes=False`` leaves the indexes out (the reader then builds one).
        """
        if self.local:
            return [str(f) for f in files]
        store = self.store
        blobs = []
        for f in files:
            path = Path(f)
            index = index_beside(path)
            extra = index.read_bytes() if with_indexes and index.exists() else None
            blobs.append((path, path.read_bytes(), index, extra))
        prefix = prefix or self.prefix
        if prefix is None:
            digest = hashlib.sha256()
            for path, data, _, extra in blobs:
                digest.update(path.name.encode() + b"\0" + data + b"\0" + _index_digest(extra))
            prefix = f"c{digest.hexdigest()[:20]}"
        urls = []
        for path, data, index, extra in blobs:
            self._write(store, f"{prefix}/{path.name}", data)
            if extra is not None:
                self._write(store, f"{prefix}/{index.name}", extra)
            urls.append(self.url(f"{prefix}/{path.name}"))
        return urls

    def put_tree(self, folder: str | Path) -> str:
        """Place every file under ``folder`` in the store, as laid out; the folder's path or URL.

        Remote: under a prefix named by a digest of the files' names and bytes.
        """
        root = Path(folder)
        if self.local:
            return str(root)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        blobs = []
        for path in files:
            rel = path.relative_to(root).as_posix()
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            blobs.append((rel, data))
        prefix = f"t{digest.hexdigest()[:20]}/{root.name}"
        store = self.store
        for rel, data in blobs:
            self._write(store, f"{prefix}/{rel}", data)
        return self.url(prefix)

    def join(self, folder: str, name: str) -> str:
        """``name`` inside ``folder`` (a path or URL from :meth:`put_tree`)."""
        return str(Path(folder) / name) if self.local else f"{folder.rstrip('/')}/{name}"

    def put_one(self, path: str | Path, *, with_index: bool = True) -> str:
        """:meth:`put` of one file."""
        return self.put([path], with_indexes=with_index)[0]

    def put_bytes(self, key: str, data: bytes) -> str:
        self.store.write_atomic(key, data)
        return self.url(key)

    def bind(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` with ``storage_options=self.options`` (for a reading API)."""
        return functools.partial(fn, storage_options=self.options)

    def name(self, path: str | Path) -> str:
        """How a reader names ``path`` once placed: the path itself, or its URL."""
        return str(path) if self.local else self.put_one(path)


def make_remote(kind: str, request: Any, area: str, *, bucket: str | None = None) -> Remote:
    """A :class:`Remote` of ``kind``: ``bucket``, or a fresh one named after ``area``."""
    if kind == "local":
        return Remote("local")
    seaweed = request.getfixturevalue("seaweed")
    if bucket is None:
        bucket = f"{area}-{secrets.token_hex(3)}"
        seaweed.make_bucket(bucket)
    return Remote(kind, seaweed, bucket)
