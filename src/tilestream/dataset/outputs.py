"""Where a TFRecord utility's outputs go: local files, or objects under a URL.

The utilities of :mod:`tilestream.dataset.io` (merge, split, transform,
shuffle, join) and :func:`~tilestream.dataset.images.tfrecord_to_images`
write their outputs with the same local writers whatever the target is; an
:class:`OutputSink` only says which local path each output is written to:

- a **path** (or a ``file://`` URL): the output itself. A
  :class:`~tilestream.tfrecord.TFRecordWriter` writes it atomically (a
  temporary file renamed into place), then its ``<name>.index.npz``;
- a **URL** (``s3://bucket/prefix/...``, ``gs://...``): a file of a private
  scratch folder (under :func:`tilestream.extract.publish.scratch_root`).
  When the utility has finished without error, every file written there is
  uploaded with :meth:`Store.write_atomic <tilestream.storage.Store.write_atomic>`
  (a multipart upload for a large file, completed at the end or aborted;
  :attr:`OutputSink.uploads_at_once` files at a time), the indexes after all
  other files, and the scratch folder is removed. The objects hold the bytes
  a local target would.

A failure before the upload (a corrupt input record, a full disk) uploads
nothing; a failed upload leaves nothing under its key: no partial object is
ever visible (an upload the store fails for a moment is run again from the
file, see :func:`tilestream.extract.publish.upload_file`). Outputs uploaded before a later one failed (``split`` writes
several) stay, each whole. An old index under the key of a replaced TFRecord
is deleted before the new TFRecord is uploaded, so a reader never pairs the
new records with the old offsets.

A read-only store (``http(s)://``) is refused before any work, with a
:class:`~tilestream.errors.StorageReadOnlyError` naming the URL; a protocol
whose extra is not installed gives the install hint
(:class:`~tilestream.errors.MissingDependencyError`). Storage options are
passed to the store only: never logged, never in a message.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with OutputSink(d / "out") as sink:
...     path = sink.file("a.tfrecords")
...     _ = path.write_bytes(b"")
>>> path == d / "out" / "a.tfrecords", sink.url("a.tfrecords") == str(path)
(True, True)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from tilestream.errors import ConfigError, StorageReadOnlyError
from tilestream.extract.publish import scratch_root, upload_file
from tilestream.storage import Store, is_url, redact_url, store_for
from tilestream.tfrecord.index import index_path_for
from tilestream.tfrecord.remote import local_path

__all__ = ["INDEX_SUFFIX", "OutputSink"]

log = logging.getLogger(__name__)

#: The suffix of index files: uploaded after every other output.
INDEX_SUFFIX = ".index.npz"


class OutputSink:
    """The target of a utility's outputs: one file or a folder, local or under a URL.

    Parameters
    ----------
    target
        The output file (``file()`` with no name) or folder (``file(name)``):
        a path, ``file://``, ``s3://``, ``gs://`` or another writable fsspec URL.
    storage_options
        Options of the store of a URL (credentials, endpoint).
    overwrite
        Replace existing outputs; without it an existing output is a
        :class:`~tilestream.errors.ConfigError` naming it.

    Use it as a context manager around the writers: a URL's outputs are
    uploaded when the ``with`` block ends without an exception.
    """

    #: How many files are uploaded at once (loose tiles are many small objects).
    uploads_at_once = 8

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        text = os.fspath(target)
        self.overwrite = overwrite
        self._store: Store | None = None
        self._key = ""
        self._scratch: Path | None = None
        self._prefix: str | None = None  # the key the scratch folder stands for
        self._folder_url = False
        if is_url(text):
            store, key = store_for(text, storage_options)
            self._key = key.strip("/")
            self._folder_url = key.endswith("/") or not self._key
            if store.read_only:
                raise StorageReadOnlyError(
                    "the store is read-only: outputs need a writable store (s3://, gs://) "
                    "or a local path",
                    path=store.url_of(self._key),
                )
            self._store = store
            self._root = Path(self._key or ".")
        else:
            self._root = Path(local_path(text))

    @property
    def remote(self) -> bool:
        """Whether the outputs go to a store (uploaded at the end)."""
        return self._store is not None

    def __repr__(self) -> str:
        return f"OutputSink({self.url()!r})"

    # -- where each output goes --------------------------------------------------------
    def key(self, name: str | None = None) -> str:
        """The key of output ``name`` (``None``: the target) in the store (a URL target)."""
        if name is None:
            return self._key
        return f"{self._key}/{name}" if self._key else name

    def url(self, name: str | None = None) -> str:
        """Output ``name``'s path or URL (for messages: never holds credentials)."""
        if self._store is not None:
            return self._store.url_of(self.key(name))
        return os.fspath(self._root / name if name is not None else self._root)

    def is_source(self, source: Path | str, name: str | None = None) -> bool:
        """Whether output ``name`` is the input ``source`` (a path, or a URL)."""
        if self._store is not None:
            return isinstance(source, str) and redact_url(source) == self.url(name)
        text = os.fspath(source)
        if is_url(text):
            return False
        return Path(local_path(text)).resolve() == Path(self.url(name)).resolve()

    def file(self, name: str | None = None, *, check: bool = True) -> Path:
        """The local file to write output ``name`` to (``None``: the target is the file).

        With ``check`` (and no ``overwrite``) an existing output is an error
        naming it. The file's folder exists.
        """
        if name is None and self._folder_url:
            raise ConfigError(
                "the output is a file: its URL needs a name after the bucket, not a trailing '/'",
                path=self.url(),
            )
        if check and not self.overwrite and self.exists(name):
            raise ConfigError(
                "output exists (pass overwrite=True to replace it)", path=self.url(name)
            )
        if self._store is None:
            path = self._root / name if name is not None else self._root
            path.parent.mkdir(parents=True, exist_ok=True)
            return path
        prefix, _, base = self._key.rpartition("/") if name is None else (self._key, "", name)
        self._scratch_for(prefix)
        assert self._scratch is not None
        path = self._scratch / base
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def folder(self) -> Path:
        """The local folder a folder target's outputs are written into (a URL's: scratch)."""
        if self._store is None:
            self._root.mkdir(parents=True, exist_ok=True)
            return self._root
        self._scratch_for(self._key)
        assert self._scratch is not None
        return self._scratch

    def _scratch_for(self, prefix: str) -> None:
        if self._prefix is not None and self._prefix != prefix:
            raise ConfigError("an output sink writes one file or one folder", path=self.url())
        self._prefix = prefix
        if self._scratch is None:
            self._scratch = Path(
                tempfile.mkdtemp(prefix=".tilestream-outputs.", dir=scratch_root())
            )

    def exists(self, name: str | None = None) -> bool:
        """Whether output ``name`` exists already."""
        if self._store is None:
            return Path(self.url(name)).exists()
        return self._store.exists(self.key(name))

    def present(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` (outputs of a folder target) that exist already.

        A store's prefix is listed once (not one request per name).
        """
        if self._store is None:
            return [n for n in names if (self._root / n).exists()]
        cut = len(self._key) + 1 if self._key else 0
        stored = {k[cut:] for k in self._store.list(self._key)}
        return [n for n in names if n in stored]

    def read(self, name: str) -> bytes:
        """The bytes of existing output ``name`` of a folder target."""
        if self._store is None:
            return (self._root / name).read_bytes()
        return self._store.read(self.key(name))

    # -- publishing ---------------------------------------------------------------------
    def __enter__(self) -> OutputSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.publish()
        finally:
            self.discard()

    def publish(self) -> list[str]:
        """Upload what was written to the scratch folder (a URL target); return the URLs.

        The files are uploaded :attr:`uploads_at_once` at a time, the indexes
        after all other files (so each after the TFRecord it describes); the
        old index of a TFRecord is deleted before the TFRecord is uploaded.
        The first failure stops the uploads not yet begun and is raised.
        Nothing to do for a local target.
        """
        if self._store is None or self._scratch is None:
            return []
        scratch, prefix = self._scratch, self._prefix or ""
        files = sorted(p for p in scratch.rglob("*") if p.is_file())
        keys = {
            p: "/".join(filter(None, (prefix, p.relative_to(scratch).as_posix()))) for p in files
        }
        data = [p for p in files if not p.name.endswith(INDEX_SUFFIX)]
        indexes = [p for p in files if p.name.endswith(INDEX_SUFFIX)]
        with ThreadPoolExecutor(
            self.uploads_at_once, thread_name_prefix="tilestream-upload"
        ) as pool:
            for batch in (data, indexes):
                futures = [pool.submit(self._upload, p, keys[p]) for p in batch]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        return [self._store.url_of(keys[p]) for p in data + indexes]

    def _upload(self, path: Path, key: str) -> None:
        store = self._store
        assert store is not None
        if ".tfrecord" in path.name and not path.name.endswith(INDEX_SUFFIX):
            old_index = index_path_for(key).as_posix()
            if store.exists(old_index):
                store.delete(old_index)
        log.info("uploading %s (%d bytes)", store.url_of(key), path.stat().st_size)
        upload_file(store, key, path)

    def discard(self) -> None:
        """Remove the scratch folder (nothing more is uploaded)."""
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
