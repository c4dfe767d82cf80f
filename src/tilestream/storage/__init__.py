"""Where bytes live: local folders, S3, GCS and HTTP behind one small contract.

:class:`Store` is the interface (ranged and coalesced reads, listing, atomic
and conditional writes); :class:`LocalStore` and :class:`FsspecStore` are the
backends, and :func:`store_for` picks one for a URL or path. Failures are
:class:`~tilestream.errors.StorageError` subclasses naming the object's URL,
never a credential. ``docs/storage.md`` describes the contract; the
conformance suite is :class:`tilestream.testing.storage.StoreConformance`.

Examples
--------
>>> import tempfile, os
>>> store, key = store_for(os.path.join(tempfile.mkdtemp(), "run", "a.bin"))
>>> store.write_atomic(key, [b"01234", b"56789"])
>>> store.read_ranges(key, [(0, 2), (8, 2)]), store.stat(key).size
([b'01', b'89'], 10)
"""

from __future__ import annotations

from .base import Data, IOStats, Stat, Store, check_key, redact_url
from .fsspec_ import FsspecStore
from .local import LocalStore
from .ranges import coalesce
from .retry import RetryPolicy
from .urls import EXTRAS, is_url, store_for

__all__ = [
    "EXTRAS",
    "Data",
    "FsspecStore",
    "IOStats",
    "LocalStore",
    "RetryPolicy",
    "Stat",
    "Store",
    "check_key",
    "coalesce",
    "is_url",
    "redact_url",
    "store_for",
]
