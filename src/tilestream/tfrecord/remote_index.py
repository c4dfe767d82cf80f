"""The index of a remote TFRecord, fetched or built once and cached locally by ETag.

:func:`remote_index` returns the :class:`~tilestream.tfrecord.index.TFRecordIndex`
of a :class:`~tilestream.tfrecord.remote.RemoteObject`:

1. from the local cache, when it holds an index for the object's URL **and
   version** (its ETag, :attr:`Stat.version <tilestream.storage.Stat.version>`):
   a changed object has a new version, so an old index is never used;
2. else the ``<name>.index.npz`` (or ``.index.npy``, ``.index``) beside the
   object, when it describes the object exactly (a recorded size equal to the
   object's, records tiling it from byte 0 to its end);
3. else a scan of the framing: one sequential read in large ranged requests
   (:class:`~tilestream.tfrecord.remote.RemoteReader`), through the reader's
   one framing loop.

Whatever it finds is checked as a local index is (:mod:`.index`,
:mod:`._staleness`: array sizes bounded by what the object can hold, the
records tiling it) and written to the cache atomically
(``$TILESTREAM_CACHE/indexes``, default ``~/.cache/tilestream/indexes``, or
``$XDG_CACHE_HOME/tilestream/indexes``). A cache that cannot be written is
logged and the index used in memory.

Examples
--------
>>> import os, tempfile
>>> from tilestream.tfrecord import TFRecordWriter, serialized_record
>>> from tilestream.tfrecord.remote import RemoteObject
>>> d = tempfile.mkdtemp(); os.environ["TILESTREAM_CACHE"] = os.path.join(d, "cache")
>>> with TFRecordWriter(os.path.join(d, "a.tfrecords"), index=False) as w:
...     w.write(serialized_record("a", b"img", 0, 0))
>>> index = remote_index(RemoteObject.open("file://" + os.path.join(d, "a.tfrecords")))
>>> index.array.tolist(), index.path.parent.name
([[0, 88]], 'indexes')
>>> del os.environ["TILESTREAM_CACHE"]
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt

from tilestream._util.atomic import atomic_write
from tilestream.errors import InvalidTFRecordIndex, StorageNotFoundError
from tilestream.tfrecord._explicit import check_explicit, explicit_index
from tilestream.tfrecord._npyfile import ArrayLimit, BadArrayFile, read_npz
from tilestream.tfrecord._staleness import INFLATE_RATIO
from tilestream.tfrecord.framing import FRAME_OVERHEAD, HEADER_SIZE, detect_compression
from tilestream.tfrecord.index import (
    IndexFormat,
    TFRecordIndex,
    _npz_limits,
    _scan_stream,
    index_path_for,
    read_index_file,
)
from tilestream.tfrecord.remote import RemoteObject

__all__ = ["cache_dir", "cache_path", "remote_index", "tiling_problem"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where remote indexes are cached: ``$TILESTREAM_CACHE/indexes`` or the user cache dir."""
    root = os.environ.get("TILESTREAM_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tilestream")
    return Path(root) / "indexes"


def cache_path(obj: RemoteObject) -> Path:
    """The cache file of ``obj``'s index: named by a hash of its URL, version and size."""
    st = obj.stat()
    digest = hashlib.sha256(f"{obj.url}\n{st.version}\n{st.size}".encode()).hexdigest()[:40]
    return cache_dir() / f"{digest}.index.npz"


def tiling_problem(index: TFRecordIndex, size: int) -> str | None:
    """Why the records of ``index`` do not tile ``size`` bytes exactly (``None`` when they do).

    >>> tiling_problem(TFRecordIndex(np.array([[0, 20], [20, 30]])), 50) is None
    True
    >>> tiling_problem(TFRecordIndex(np.array([[0, 20]])), 50)
    'the index covers 20 bytes in 1 records, the TFRecord has 50'
    """
    arr = index.array
    if len(arr) == 0:
        return None if size == 0 else "the index is empty but the TFRecord is not"
    offs, lens = arr[:, 0], arr[:, 1]
    if offs[0] != 0 or np.any(lens < 16) or np.any(offs[1:] != offs[:-1] + lens[:-1]):
        return "the index's records do not follow each other"
    end = int(offs[-1] + lens[-1])
    if end != size:
        return f"the index covers {end} bytes in {len(arr)} records, the TFRecord has {size}"
    return None


def _read_cached(path: Path, size: int) -> TFRecordIndex | None:
    limits = {
        **_npz_limits(size * INFLATE_RATIO // FRAME_OVERHEAD + 1),
        "compressed": ArrayLimit(1, 0),
    }
    try:
        z = read_npz(path, limits)
    except FileNotFoundError:
        return None
    except (BadArrayFile, OSError, ValueError) as exc:
        log.warning("ignoring a damaged cached index %s (%s)", path, exc)
        return None
    if "arr_0" not in z or "tfrecord_size" not in z or int(z["tfrecord_size"].item()) != size:
        return None
    arr = np.asarray(z["arr_0"], np.int64).reshape(-1, 2)
    locs = np.asarray(z["locations"], np.int64).reshape(-1, 2) if "locations" in z else None
    index = TFRecordIndex(arr, locs, path, None)
    compressed = "compressed" in z and bool(z["compressed"].item())
    if (locs is not None and len(locs) != len(arr)) or (
        not compressed and tiling_problem(index, size) is not None
    ):
        log.warning("ignoring a cached index that does not fit its TFRecord: %s", path)
        return None
    return index


def _write_cache(index: TFRecordIndex, path: Path, size: int, compressed: bool) -> TFRecordIndex:
    arrays = {
        "arr_0": index.array.astype(np.int64),
        "tfrecord_size": np.int64(size),
        "compressed": np.int64(compressed),
    }
    if index.locations is not None:
        arrays["locations"] = index.locations.astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            f.write(buf.getvalue())
    except OSError as exc:
        log.info("cannot cache the index in %s (%s); using it in memory", path.parent, exc)
        return index
    return TFRecordIndex(index.array, index.locations, path, None)


def _beside(obj: RemoteObject, scratch: Path) -> TFRecordIndex | None:
    """The index stored beside the object, if one describes it exactly."""
    size = obj.size
    formats: tuple[IndexFormat, ...] = ("npz", "npy", "text")
    for fmt in formats:
        key = index_path_for(obj.key, fmt).as_posix()
        try:
            data = obj.store.read(key)
        except StorageNotFoundError:
            continue
        local = scratch.with_name(scratch.name + f".fetched{Path(key).name}")
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            index = read_index_file(local, max_records=size // FRAME_OVERHEAD)
        except (InvalidTFRecordIndex, OSError) as exc:  # named by the object, not the copy
            reason = exc.message if isinstance(exc, InvalidTFRecordIndex) else type(exc).__name__
            log.warning(
                "%s: ignoring the index beside it, %s (%s)", obj.url, obj.store.url_of(key), reason
            )
            return None
        finally:
            local.unlink(missing_ok=True)
        why = tiling_problem(index, size)
        if index.tfrecord_stat is not None and index.tfrecord_stat[0] != size:
            why = f"the TFRecord is {size} bytes, the index was made for {index.tfrecord_stat[0]}"
        if why is None:
            return TFRecordIndex(index.array, index.locations, None, None)
        log.warning("%s: stale index beside it (%s); scanning the records", obj.url, why)
        return None
    return None


def remote_index(
    obj: RemoteObject,
    given: str | os.PathLike[str] | npt.NDArray[Any] | None = None,
    *,
    locations: bool = True,
    name: str | None = None,
) -> TFRecordIndex:
    """The index of a remote TFRecord: cached, else fetched from beside it, else scanned.

    Parameters
    ----------
    obj
        The remote TFRecord.
    given
        A local index file or an ``(n, 2)`` array the caller chose instead: used
        if its records tile the object exactly (else ``InvalidTFRecordIndex``).
    locations
        Record the tiles' ``(loc_x, loc_y)`` when scanning.
    name
        The TFRecord's name in messages (default its URL).

    Raises
    ------
    StorageNotFoundError
        The object does not exist (the message names its URL).
    CorruptRecordError, TruncatedRecordError
        The scan found damaged framing (naming the URL and the offset).
    """
    size = obj.size
    if given is not None:
        return _given(obj, given, name or obj.url)
    path = cache_path(obj)
    cached = _read_cached(path, size)
    if cached is not None:
        log.debug("%s: index from the cache (%s)", obj.url, path.name)
        return cached
    index = _beside(obj, path)
    compressed = False
    if index is None:
        index, compressed = _scan(obj, locations)
        log.info("%s: indexed %d records by a scan of %d bytes", obj.url, len(index), size)
    return _write_cache(index, path, size, compressed)


def _scan(obj: RemoteObject, locations: bool) -> tuple[TFRecordIndex, bool]:
    """Index the object by one sequential read (its compression from its first bytes)."""
    comp = detect_compression(obj.read_range(0, HEADER_SIZE)) if obj.size else None
    with obj.reader() as reader:
        index = _scan_stream(cast(BinaryIO, reader), comp, locations, False, None)
    return index, comp is not None


def _given(
    obj: RemoteObject, given: str | os.PathLike[str] | npt.NDArray[Any], name: str
) -> TFRecordIndex:
    """The index the caller gave, checked as a local file's is (sampled headers by range)."""
    index, what = explicit_index(given, name, size=obj.size)
    check_explicit(
        index.array,
        obj.size,
        lambda offsets: obj.store.read_ranges(obj.key, [(o, HEADER_SIZE) for o in offsets]),
        what=what,
        name=name,
    )
    return index
