"""``manifest.json`` of TFRecords in object storage: :func:`scan_remote_manifest`.

The remote twin of :func:`tilestream.dataset.manifest.scan_manifest`: the
``.tfrecords`` objects under a URL prefix (listed with
:meth:`Store.list <tilestream.storage.Store.list>`, recursively) are counted
from their indexes (fetched or built once, cached locally by ETag:
:mod:`tilestream.tfrecord.remote_index`), or, with ``verify``, by reading
every record and checking its CRCs. An entry records the object's ``size``
and ``etag`` (its :attr:`Stat.version <tilestream.storage.Stat.version>`)
instead of a file's ``mtime_ns``; a stored entry is reused while both match.
The manifest is written to ``<prefix>/manifest.json`` with
:meth:`Store.write_atomic <tilestream.storage.Store.write_atomic>`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

from tilestream.dataset.manifest import ManifestScan, counted_entry
from tilestream.errors import StorageError, StorageNotFoundError
from tilestream.runfolder import MANIFEST_FILE, TFRECORD_SUFFIXES
from tilestream.storage import Store, store_for
from tilestream.tfrecord.reader import iter_records
from tilestream.tfrecord.remote import RemoteObject
from tilestream.tfrecord.remote_index import remote_index

__all__ = ["scan_remote_manifest"]

log = logging.getLogger(__name__)


def _load(store: Store, key: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    try:
        data = json.loads(store.read(key))
    except StorageNotFoundError:
        return {}, None
    except ValueError as exc:
        return {}, f"is not valid JSON ({exc})"
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return {}, "is not a {file: {total: n}} mapping"
    return data, None


def _entry(obj: RemoteObject, verify: bool) -> dict[str, Any]:
    st = obj.stat()
    entry: dict[str, Any] = {"total": 0, "size": st.size, "etag": st.version}

    def count() -> int:
        if verify:
            with obj.reader() as raw:
                return len(list(iter_records(cast(BinaryIO, raw))))
        return len(remote_index(obj))

    return counted_entry(entry, count, obj.url, verify=verify, fatal=_store_failed)


def _store_failed(exc: BaseException) -> bool:
    """The store failed (raise it), rather than the file (record it)."""
    return isinstance(exc, StorageError) and not isinstance(exc, StorageNotFoundError)


def scan_remote_manifest(
    url: str,
    force_update: bool = False,
    *,
    storage_options: Mapping[str, Any] | None = None,
    write: bool = False,
    verify: bool = False,
) -> ManifestScan:
    """Count the records of every TFRecord under the URL prefix ``url``.

    Returns
    -------
    ManifestScan
        The entries by key relative to the prefix (no stale slides are judged
        remotely: ``stale`` is empty), and the problem with a stored manifest.
    """
    store, key = store_for(url, storage_options)
    prefix = key.rstrip("/")
    mkey = f"{prefix}/{MANIFEST_FILE}" if prefix else MANIFEST_FILE
    prior, problem = _load(store, mkey)
    manifest: dict[str, dict[str, Any]] = {}
    for name in store.list(prefix):
        if not name.endswith(TFRECORD_SUFFIXES):
            continue
        rel = name[len(prefix) + 1 :] if prefix else name
        obj = RemoteObject(store, name)
        old = prior.get(rel)
        st = obj.stat()
        fresh = (
            old is not None
            and isinstance(old.get("total"), int)
            and old.get("size") == st.size
            and old.get("etag") == st.version
            and (not verify or old.get("verified") is True)
        )
        manifest[rel] = (
            old if fresh and not force_update and old is not None else _entry(obj, verify)
        )
    write_error = None
    if write and (manifest != prior or problem is not None):
        try:
            store.write_atomic(mkey, json.dumps(manifest, indent=2, sort_keys=True).encode())
        except StorageError as exc:
            write_error = f"cannot write {store.url_of(mkey)}: {exc.message}"
    return ManifestScan(manifest, {}, problem, write_error)
