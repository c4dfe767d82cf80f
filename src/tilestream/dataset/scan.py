"""The TFRecords of a :class:`~tilestream.dataset.Dataset`: found, counted, checked.

:func:`scan_tfrecords` looks at the dataset's TFRecord sources once: folders
through their manifest (:func:`~tilestream.dataset.manifest.scan_manifest`,
searched recursively, counts reused where fresh, nothing written), single
files counted directly. The TFRecords of stale slides of run folders are left
out (logged at WARNING, see :mod:`tilestream.runfolder`); unreadable and empty
ones are recorded, never deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilestream.dataset.manifest import scan_manifest
from tilestream.errors import ConfigError, TileStreamError
from tilestream.runfolder import TFRECORD_SUFFIX, stale_files
from tilestream.storage import store_for
from tilestream.tfrecord.remote import RemoteObject, local_path, remote_name
from tilestream.tfrecord.remote_index import remote_index

__all__ = ["TFRecordScan", "remote_tfrecords", "scan_tfrecords", "split_sources"]

log = logging.getLogger(__name__)


@dataclass
class TFRecordScan:
    """What :func:`scan_tfrecords` found.

    Attributes
    ----------
    files
        ``{slide: TFRecord}``.
    counts
        ``{slide: records}``.
    unreadable
        ``{path: reason}`` of the TFRecords that could not be read or are empty.
    missing
        The sources given that do not exist.
    stale
        ``{path: reason}`` of the TFRecords of stale slides, left out.
    """

    files: dict[str, Path | str]
    counts: dict[str, int]
    unreadable: dict[str, str]
    missing: list[str]
    stale: dict[str, str]

    def add(self, name: str, path: Path | str, total: int, error: str | None, *, hint: str) -> None:
        """Record slide ``name``'s TFRecord; a second one for the slide is a ConfigError."""
        if name in self.files:
            raise ConfigError(
                f"two TFRecords for slide {name!r}: {self.files[name]} and {path}{hint}",
                path=path,
            )
        self.files[name] = path
        self.counts[name] = total
        if error:
            self.unreadable[os.fspath(path)] = error


def split_sources(
    value: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None,
) -> tuple[list[Path], list[str]]:
    """Local paths (``file://`` URLs included) and remote URLs of a dataset's sources.

    >>> split_sources(["/data/a", "s3://b/run/", "file:///data/c"])
    ([PosixPath('/data/a'), PosixPath('/data/c')], ['s3://b/run/'])
    """
    if value is None:
        return [], []
    items = [value] if isinstance(value, str | os.PathLike) else list(value)
    paths: list[Path] = []
    urls: list[str] = []
    for item in items:
        text = local_path(os.fspath(item))
        if remote_name(text) is not None:
            urls.append(text)
        else:
            paths.append(Path(text))
    return paths, urls


def remote_tfrecords(
    url: str, run_folder: str | None, storage_options: Mapping[str, Any] | None
) -> list[str]:
    """The ``.tfrecords`` objects of a URL: itself, or those under it as a prefix (recursively)."""
    if url.endswith(TFRECORD_SUFFIX):
        return [url]
    store, key = store_for(url, storage_options)
    prefix = key.rstrip("/")
    root = url[: len(url) - len(key)] if key and url.endswith(key) else url.rstrip("/") + "/"
    keys = [k for k in store.list(prefix) if k.endswith(TFRECORD_SUFFIX)]
    if run_folder:
        sub = f"{prefix}/{run_folder}/" if prefix else f"{run_folder}/"
        inside = [k for k in keys if k.startswith(sub)]
        keys = inside or keys
    return [root + k for k in sorted(keys)]


def _scan_remote(
    scan: TFRecordScan,
    urls: Sequence[str],
    run_folder: str | None,
    storage_options: Mapping[str, Any] | None,
    hint: str,
) -> None:
    """Add the remote TFRecords: counted from their indexes (cached locally by ETag)."""
    for url in urls:
        try:
            found = remote_tfrecords(url, run_folder, storage_options)
        except FileNotFoundError:
            scan.missing.append(url)
            continue
        if not found:
            scan.missing.append(url)
        stale = stale_files(found, storage_options=storage_options)
        for path, why in stale.items():
            log.warning("leaving out %s: %s (outputs kept, not deleted)", path, why)
        scan.stale.update({u: stale[Path(u)] for u in found if Path(u) in stale})
        for file_url in (u for u in found if Path(u) not in stale):
            obj = RemoteObject.open(file_url, storage_options)
            try:
                total, error = len(remote_index(obj)), None
            except (TileStreamError, OSError) as exc:
                total, error = 0, f"{type(exc).__name__}: {exc}"
            if total == 0 and error is None:
                error = "empty TFRecord (no records)"
            name = obj.key.rsplit("/", 1)[-1][: -len(TFRECORD_SUFFIX)]
            scan.add(name, obj.url, total, error, hint=hint)


def _sources(
    sources: Sequence[Path], run_folder: str | None
) -> tuple[list[Path], list[Path], list[str]]:
    """Folders to search (a folder's ``run_folder`` when it has one), single files, missing."""
    folders: list[Path] = []
    files: list[Path] = []
    missing: list[str] = []
    for src in sources:
        if src.is_file():
            files.append(src)
        elif src.is_dir():
            sub = src / run_folder if run_folder else None
            folders.append(sub if sub is not None and sub.is_dir() else src)
        else:
            missing.append(os.fspath(src))
    return folders, files, missing


def _count_single(path: Path) -> tuple[int, str | None]:
    from tilestream.tfrecord import get_tfrecord_length

    try:
        total = get_tfrecord_length(path)
    except (TileStreamError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    return total, ("empty TFRecord (no records)" if total == 0 else None)


def scan_tfrecords(
    sources: Sequence[Path],
    run_folder: str | None = None,
    urls: Sequence[str] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> TFRecordScan:
    """The per-slide TFRecords of ``sources`` (folders, searched recursively, or files).

    A folder holding the sub-folder ``run_folder`` (``<tile_px>px_<tile_um>``,
    :func:`tilestream.runfolder.run_folder_name`) is read from there. ``urls``
    are TFRecords or prefixes in object storage (``s3://bucket/run/``, listed
    recursively with :meth:`Store.list <tilestream.storage.Store.list>`; the
    ``run_folder`` under a prefix when it has one), counted from their indexes
    (fetched once and cached locally by ETag).

    Raises
    ------
    ConfigError
        Two TFRecords for one slide.
    """
    folders, singles, missing = _sources(sources, run_folder)
    scan = TFRecordScan({}, {}, {}, missing, {})
    hint = "" if run_folder else " (several tile sizes? give tile_px and tile_um to pick one)"
    for folder in folders:
        found = scan_manifest(folder, suffixes=(TFRECORD_SUFFIX,))
        scan.stale.update({os.fspath(folder / rel): why for rel, why in found.stale.items()})
        for rel, entry in found.entries.items():
            path = folder / rel
            name = path.name[: -len(TFRECORD_SUFFIX)]
            scan.add(name, path, int(entry["total"]), entry.get("error"), hint=hint)
    single_stale = stale_files(singles)
    for path, why in single_stale.items():
        log.warning("leaving out %s: %s (outputs kept, not deleted)", path, why)
        scan.stale[os.fspath(path)] = why
    for path in singles:
        if path not in single_stale:
            total, error = _count_single(path)
            scan.add(path.name.split(".")[0], path, total, error, hint=hint)
    _scan_remote(scan, urls, run_folder, storage_options, hint)
    return scan
