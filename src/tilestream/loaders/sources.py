"""TFRecord files opened for random access: :class:`RecordSource` and the files a stream reads.

:func:`open_sources` checks files and loads their record offsets once, before
any iteration; :func:`select_current` leaves out the TFRecords of stale
slides of run folders (:mod:`tilestream.runfolder`), keeping per-file options
in step. :mod:`tilestream.loaders.stream` reads records through these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tilestream.errors import ConfigError, EmptyTFRecordsError
from tilestream.loaders.options import ClipSpec
from tilestream.loaders.records import file_size, frame_sizes, load_offsets, remote_offsets
from tilestream.loaders.sampling import WeightSpec, match_files, normalize_weights
from tilestream.runfolder import current_tfrecords
from tilestream.storage import Store
from tilestream.tfrecord.remote import RemoteObject, local_path, remote_name

__all__ = [
    "FileSelection",
    "RecordSource",
    "map_files",
    "open_sources",
    "select_current",
    "sources_and_weights",
]


T = TypeVar("T")
R = TypeVar("R")

#: Remote files opened at once (opening one waits on a few round trips: its size, index, first record).
OPEN_THREADS = 16


def map_files(fn: Callable[[T], R], items: Sequence[T], paths: Sequence[str]) -> list[R]:
    """``[fn(item) for item in items]``, run concurrently when any of ``paths`` is a URL.

    The results keep the order of ``items``; the first failure in that order is raised.

    >>> map_files(len, ["ab", "c"], ["a.tfrecords", "b.tfrecords"])
    [2, 1]
    """
    if len(items) < 2 or all(remote_name(p) is None for p in paths):
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(OPEN_THREADS, len(items)), thread_name_prefix="ts-open") as pool:
        return list(pool.map(fn, items))


@dataclass(frozen=True)
class RecordSource:
    """One TFRecord file ready for random access: its path and record frames.

    Attributes
    ----------
    path
        The file (for a remote one, its URL without credentials or query string).
    offsets
        Byte offset of each record kept (after clipping).
    sizes
        Bytes each record's frame spans.
    remote
        The object a TFRecord given by URL is read from (``None`` for a local file).
    """

    path: str
    offsets: np.ndarray
    sizes: np.ndarray
    remote: RemoteObject | None = None

    def __len__(self) -> int:
        return len(self.offsets)


def _clip_values(clip: ClipSpec, paths: Sequence[str]) -> list[int | None]:
    if clip is None:
        return [None] * len(paths)
    if isinstance(clip, Mapping):
        values = match_files(clip, paths, what="clip", require_all=False)
    else:
        values = [clip] * len(paths)
    for p, v in zip(paths, values, strict=True):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0):
            raise ConfigError(f"clip must be a non-negative integer, got {v!r} for {p}")
    return [None if v is None else int(v) for v in values]


def _file_names(
    paths: Sequence[str | os.PathLike[str]], indices: Sequence[Any] | None
) -> list[str]:
    """The paths as strings, checked: at least one, and one index (or None) for each."""
    names = [local_path(os.fspath(p)) for p in paths]
    if not names:
        raise EmptyTFRecordsError("no TFRecord files given")
    if indices is not None and len(indices) != len(names):
        raise ConfigError(f"{len(indices)} indices given for {len(names)} files")
    return names


def open_sources(
    paths: Sequence[str | os.PathLike[str]],
    indices: Sequence[Any] | None = None,
    *,
    clip: ClipSpec = None,
    storage_options: Mapping[str, Any] | None = None,
    stores: dict[str, Store] | None = None,
) -> list[RecordSource]:
    """Check files and load their record offsets, once, before any iteration.

    Parameters
    ----------
    paths
        Uncompressed TFRecord files, or their URLs (``s3://``, ``gs://``,
        ``http(s)://``, ``file://``; the index of a remote one is cached
        locally by ETag, see :mod:`tilestream.tfrecord.remote_index`).
    indices
        Per file: offsets, an index file, or None (the index beside the file, or a scan).
    clip
        Cap on records per file: an int, or ``{file: cap}``.
    storage_options
        Options of the store of the URLs (credentials, endpoint).
    stores
        Stores by root URL, shared by the files of one bucket (and filled here):
        one connection pool and one set of counters per bucket.

    Raises
    ------
    TFRecordError
        A file is missing or unreadable.
    EmptyTFRecordsError
        A file holds no records, or no paths are given.
    InvalidTFRecordIndex
        An index does not fit its file.
    ConfigError
        Bad ``clip`` or ``indices``.
    """
    names = _file_names(paths, indices)
    clips = _clip_values(clip, names)
    shared = {} if stores is None else stores

    def one(i: int) -> RecordSource:
        path = names[i]
        index = None if indices is None else indices[i]
        remote = None
        if remote_name(path) is not None:
            remote = RemoteObject.open(path, storage_options)
            remote.store = shared.setdefault(remote.store.url, remote.store)  # one per bucket
            offsets, size = remote_offsets(remote, index)
            path = remote.url
        else:
            offsets = load_offsets(path, index)
            size = file_size(path)
        sizes = frame_sizes(offsets, size)
        cap = clips[i]
        if cap is not None:
            offsets, sizes = offsets[:cap], sizes[:cap]
        return RecordSource(path, offsets, sizes, remote)

    return map_files(one, range(len(names)), names)


@dataclass(frozen=True)
class FileSelection:
    """The files given, less the stale slides of run folders, with their per-file options.

    Attributes
    ----------
    paths
        The files kept, in the order given.
    indices
        The index (offsets, file or None) of each file kept.
    caps
        The record cap (``clip``) of each file kept, or None.
    weights
        The weight of each file kept (normalised over every file given, so
        renormalise), or None.
    left_out
        The files left out: TFRecords of stale slides of a run folder.
    """

    paths: list[str]
    indices: list[Any]
    caps: list[Any]
    weights: np.ndarray | None
    left_out: list[str]


def select_current(
    paths: Sequence[str | os.PathLike[str]],
    indices: Sequence[Any] | None = None,
    *,
    clip: ClipSpec = None,
    weights: WeightSpec | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FileSelection:
    """Leave out the TFRecords of stale run-folder slides, keeping per-file options in step.

    Each file left out is logged at WARNING with its reason
    (:func:`tilestream.runfolder.current_tfrecords`); ``indices``, ``clip``
    and ``weights`` are checked against every file given, so they may still
    name the files left out.

    Raises
    ------
    EmptyTFRecordsError
        No paths, or every one is a stale slide.
    ConfigError
        Bad ``indices``, ``clip`` or ``weights``.
    """
    names = _file_names(paths, indices)
    w = normalize_weights(weights, names) if weights is not None else None
    caps = _clip_values(clip, names)
    current = set(current_tfrecords(names, storage_options=storage_options))
    keep = [i for i, p in enumerate(names) if Path(p) in current]
    if not keep:
        shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        raise EmptyTFRecordsError(
            f"every TFRecord given is a stale slide of its run folder (left out, see the "
            f"warnings): {shown}"
        )
    kept = set(keep)
    return FileSelection(
        paths=[names[i] for i in keep],
        indices=[None if indices is None else indices[i] for i in keep],
        caps=[caps[i] for i in keep],
        weights=None if w is None else w[keep],
        left_out=[p for i, p in enumerate(names) if i not in kept],
    )


def sources_and_weights(
    paths: Sequence[str | os.PathLike[str]] | Sequence[RecordSource],
    indices: Sequence[Any] | None,
    clip: ClipSpec,
    weights: WeightSpec | None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[RecordSource], np.ndarray | None]:
    """The sources to read (current files opened, or sources as given) and their weights."""
    sources: list[RecordSource]
    if paths and all(isinstance(p, RecordSource) for p in paths):
        sources = [p for p in paths if isinstance(p, RecordSource)]
    else:
        files = select_current(
            [p for p in paths if not isinstance(p, RecordSource)],
            indices,
            clip=clip,
            weights=weights,
            storage_options=storage_options,
        )
        stores: dict[str, Store] = {}

        def one(job: tuple[str, Any, int | None]) -> RecordSource:
            p, i, c = job
            return open_sources([p], [i], clip=c, storage_options=storage_options, stores=stores)[0]

        jobs = list(zip(files.paths, files.indices, files.caps, strict=True))
        sources = map_files(one, jobs, files.paths)
        weights = files.weights
    w = normalize_weights(weights, [s.path for s in sources]) if weights is not None else None
    return sources, w
