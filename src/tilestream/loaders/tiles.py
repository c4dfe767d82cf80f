"""Everything a tile dataset checks and prepares before its first epoch.

Shared by :class:`tilestream.torch.TileDataset` and :func:`tilestream.tf.tile_dataset`,
so both fail the same way, early (at construction, not inside a worker):
missing or empty files, a slide without a label, weights for unknown files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tilestream._util.atomic import is_temp_file
from tilestream.errors import (
    ConfigError,
    CorruptRecordError,
    EmptyTFRecordsError,
    InvalidTFRecordIndex,
    UnsupportedRecordError,
)
from tilestream.loaders.labels import (
    balance_weights,
    check_labels,
    load_labels,
    slide_name_of,
)
from tilestream.loaders.options import PlanKwargs, TileOptions, resolve_options
from tilestream.loaders.records import FileHandles, read_record, read_remote_record
from tilestream.loaders.sampling import normalize_weights
from tilestream.loaders.sources import RecordSource, map_files, open_sources, select_current
from tilestream.runfolder import TFRECORD_SUFFIX, find_tfrecords
from tilestream.storage import Store, store_for
from tilestream.tfrecord.remote import local_path, remote_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["TilePlan", "list_tfrecords", "plan_tiles", "read_source_record"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilePlan:
    """Checked inputs of a tile dataset.

    Attributes
    ----------
    sources
        The files with their (clipped) record offsets.
    slides
        The slide name of each file (its first record's ``slide`` feature).
    labels
        Label by slide name, or None.
    label_names
        Category names when the labels were text, else None.
    weights
        Normalised per-file weights, or None for uniform.
    left_out
        Files given but left out: the TFRecords of stale slides of a run folder.
    skipped_files
        ``{file: reason}`` of the files left out as unreadable (``on_error="skip"``).
    options
        The options the plan was made with.
    """

    sources: list[RecordSource]
    slides: list[str]
    labels: dict[str, Any] | None
    label_names: list[str] | None
    weights: np.ndarray | None
    left_out: list[str] = field(default_factory=list)
    skipped_files: dict[str, str] = field(default_factory=dict)
    options: TileOptions = field(default_factory=TileOptions)

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.sources]

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.sources]

    @property
    def num_records(self) -> int:
        return sum(self.lengths)


def read_source_record(
    source: RecordSource, handles: FileHandles, record: int, *, verify: bool = True
) -> bytes:
    """The payload of ``record`` of ``source``: a ``pread`` of a local file, a ranged request of a remote one."""
    offset = int(source.offsets[record])
    size = int(source.sizes[record])
    if source.remote is not None:
        return read_remote_record(source.remote, record, offset, size, verify=verify)
    return read_record(handles.get(source.path), source.path, record, offset, size, verify=verify)


def _first_slide(source: RecordSource, handles: FileHandles, *, skip: bool) -> str:
    """The slide name in the file's first readable record (its first record, unless ``skip``)."""
    from tilestream.tfrecord import decode_example

    if len(source) == 0:  # clipped to nothing: no record to read, none to label
        return slide_name_of(None, source.path)
    last: Exception | None = None
    for record in range(len(source) if skip else 1):
        try:
            data = read_source_record(source, handles, record)
            feature = decode_example(data, path=source.path, record=record).get("slide")
        except (CorruptRecordError, UnsupportedRecordError) as exc:
            if not skip:
                raise
            last = exc
            continue
        value = feature.value[0] if feature is not None and feature.kind == "bytes_list" else None
        return slide_name_of(value, source.path)
    raise CorruptRecordError(f"no readable record (last: {last})", path=source.path)


def _open(
    paths: list[str],
    indices: list[Any],
    caps: list[Any],
    *,
    skip: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[RecordSource], list[str], dict[str, str]]:
    """Sources and slide names of ``paths``; with ``skip``, unreadable files are left out."""
    stores: dict[str, Store] = {}

    def one(job: tuple[str, Any, Any]) -> tuple[RecordSource, str] | str:
        path, index, cap = job
        handles = FileHandles(1)
        try:
            (source,) = open_sources(
                [path], [index], clip=cap, storage_options=storage_options, stores=stores
            )
            return source, _first_slide(source, handles, skip=skip)
        except (CorruptRecordError, InvalidTFRecordIndex) as exc:
            if not skip:
                raise
            log.warning("skipping unreadable TFRecord (on_error='skip'): %s", exc)
            return getattr(exc, "message", str(exc))
        finally:
            handles.close()

    sources: list[RecordSource] = []
    slides: list[str] = []
    skipped: dict[str, str] = {}
    jobs = list(zip(paths, indices, caps, strict=True))
    for (path, _, _), opened in zip(jobs, map_files(one, jobs, paths), strict=True):
        if isinstance(opened, str):
            skipped[path] = opened
            continue
        sources.append(opened[0])
        slides.append(opened[1])
    if not sources:
        shown = "; ".join(f"{p}: {why}" for p, why in list(skipped.items())[:10])
        raise EmptyTFRecordsError(f"no TFRecord left to read, every one was unreadable: {shown}")
    return sources, slides, skipped


def list_tfrecords(
    tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """The files to read: a folder's (or a URL prefix's) top-level ``*.tfrecords``, else the paths as given.

    A URL ending in ``/`` or naming no ``.tfrecords`` object is a prefix: its
    objects are listed with :meth:`Store.list <tilestream.storage.Store.list>`.

    Examples
    --------
    >>> list_tfrecords(["a.tfrecords", "b.tfrecords"])
    ['a.tfrecords', 'b.tfrecords']
    """
    if isinstance(tfrecords, str | os.PathLike):
        one: str = local_path(os.fspath(tfrecords))
        if remote_name(one) is not None:
            return _list_remote(one, storage_options)
        if os.path.isdir(one):
            found = find_tfrecords(one, recursive=False, suffixes=(TFRECORD_SUFFIX,))
            return [os.fspath(p) for p in found]
        return [one]
    return [os.fspath(p) for p in tfrecords]


def _list_remote(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    if url.endswith(TFRECORD_SUFFIX):
        return [url]
    store, key = store_for(url, storage_options)
    prefix = key.rstrip("/")
    root = url[: len(url) - len(key)] if key and url.endswith(key) else url.rstrip("/") + "/"
    found = []
    for name in store.list(prefix):
        rest = name[len(prefix) + 1 :] if prefix else name
        # As for a local folder: its top level only, never hidden or temporary files.
        visible = not rest.startswith(".") and not is_temp_file(rest)
        if "/" not in rest and visible and name.endswith(TFRECORD_SUFFIX):
            found.append(root + name)
    return sorted(found)


def plan_tiles(
    tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    options: TileOptions | None = None,
    **kwargs: Unpack[PlanKwargs],
) -> TilePlan:
    """Open, check and weigh the TFRecords of a tile dataset.

    ``tfrecords`` may be a folder (its ``*.tfrecords`` files, sorted). The
    TFRecords of stale slides of an extraction run folder (see
    :mod:`tilestream.runfolder`), given as a folder or by path, are left out
    with a warning naming each; per-file ``weights``, ``clip`` and ``indices``
    may still name them.

    With ``on_error="skip"``, a file that cannot be opened for its data (cut
    short, corrupt framing, no readable record, an index that does not fit
    it) is left out with a warning and recorded in
    :attr:`TilePlan.skipped_files`; a corrupt first record is passed over for
    the next readable one. Missing, empty and gzip-compressed files are errors
    either way.

    The options are those of :class:`~tilestream.loaders.options.TileOptions`
    that choose, weigh and label records (``labels``, ``label_column``,
    ``weights``, ``balance``, ``clip``, ``indices``, ``on_error``), as keyword
    arguments or in ``options`` (whose other fields are kept in
    :attr:`TilePlan.options`, unused here).

    Raises
    ------
    TFRecordError, EmptyTFRecordsError, AnnotationError, ConfigError
        Whatever is wrong, naming the file concerned.
    """
    opts = resolve_options(options, kwargs, where="plan_tiles", accepts=PlanKwargs)
    all_paths = list_tfrecords(tfrecords, opts.storage_options)
    if not all_paths:
        where = f" in {os.fspath(tfrecords)}" if isinstance(tfrecords, str | os.PathLike) else ""
        raise EmptyTFRecordsError(f"no TFRecord files given{where}")
    if len(set(all_paths)) != len(all_paths):
        raise ConfigError("the same TFRecord is listed more than once")
    files = select_current(
        all_paths,
        opts.indices,
        clip=opts.clip,
        weights=opts.weights,
        storage_options=opts.storage_options,
    )
    sources, slides, skipped = _open(
        files.paths,
        files.indices,
        files.caps,
        skip=opts.on_error == "skip",
        storage_options=opts.storage_options,
    )
    keep = [i for i, p in enumerate(files.paths) if p not in skipped]
    paths = [sources[j].path for j in range(len(sources))]
    label_map, names = load_labels(opts.labels, opts.label_column)
    balance = opts.balance
    read = [i for i, src in enumerate(sources) if len(src)]  # files not clipped to nothing
    if label_map is not None:
        check_labels(label_map, [slides[i] for i in read], [paths[i] for i in read])
    w: np.ndarray | None = None
    if balance is not None:
        cats = [label_map[slides[i]] for i in read] if label_map is not None else None
        if balance == "category" and cats is None:
            raise ConfigError("balance='category' needs labels=")
        w = np.zeros(len(sources))
        w[read] = balance_weights(balance, [len(sources[i]) for i in read], cats)
    elif files.weights is not None:
        w = normalize_weights(files.weights[keep], paths)
    return TilePlan(sources, slides, label_map, names, w, files.left_out, skipped, opts)
