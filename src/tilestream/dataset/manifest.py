"""Manifests: the number of records in every TFRecord under a folder, kept in ``manifest.json``.

The format is Slideflow's (``{relative path: {"total": n}}``) with more keys
per entry: ``size`` and ``mtime_ns`` of the file when it was counted (a count
is reused only while both still match), ``error`` for a file that could not be
read (its ``total`` is 0), and ``verified: true`` once every record was read
with its data CRC checked (``verify=True``; ``tilestream manifest --verify``).
Without verification a count comes from the record framing (lengths and their
CRCs) or from a fresh index: a record whose data was damaged is counted as
healthy. Unlike Slideflow, an unreadable or empty TFRecord is recorded,
**never deleted**.

The TFRecords of stale slides in extraction run folders (see
:mod:`tilestream.runfolder`: a slide that failed or was interrupted on a rerun,
or was extracted under another config) are left out, each logged at WARNING;
:func:`scan_manifest` returns them with their reasons. A ``manifest.json``
that cannot be parsed is never used nor silently replaced: counts are made
again with a warning, and a write keeps the old file as
``manifest.json.unparseable``.

TFRecords are found by :func:`tilestream.runfolder.find_tfrecords` (recursively);
``find_tfrecords`` and ``TFRECORD_SUFFIXES`` stay importable from here as its aliases.

Reading writes nothing unless asked: :class:`~tilestream.dataset.Dataset`
calls :func:`scan_manifest` with ``write=False``.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord import TFRecordWriter, serialized_record
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with TFRecordWriter(d / "s1.tfrecords") as w:
...     for x in (0, 256):
...         w.write(serialized_record("s1", b"img", x, 0), location=(x, 0))
>>> _ = (d / "bad.tfrecords").write_bytes(b"not a tfrecord")
>>> m = update_manifest_at_dir(d)
>>> m["s1.tfrecords"]["total"], m["bad.tfrecords"]["total"], "error" in m["bad.tfrecords"]
(2, 0, True)
>>> sorted(p.name for p in d.iterdir())
['bad.tfrecords', 'manifest.json', 's1.index.npz', 's1.tfrecords']
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream._util.atomic import write_json_atomic
from tilestream.errors import TileStreamError
from tilestream.runfolder import (
    MANIFEST_FILE,
    TFRECORD_SUFFIXES,
    find_tfrecords,
    stale_files,
)

__all__ = [
    "TFRECORD_SUFFIXES",
    "ManifestScan",
    "counted_entry",
    "find_tfrecords",
    "read_manifest",
    "scan_manifest",
    "unreadable",
    "update_manifest_at_dir",
]

log = logging.getLogger(__name__)


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """A manifest's entries, and why the file could not be used (``None``: fine or missing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"cannot be read ({exc})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, f"is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return {}, f"holds a JSON {type(data).__name__}, not an object"
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}, None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A manifest file's entries; ``{}`` when it is missing or not a JSON object of objects."""
    return _load(Path(path))[0]


def unreadable(manifest: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{relative path: reason}`` of the entries that could not be read."""
    return {k: str(v["error"]) for k, v in manifest.items() if v.get("error")}


def _count(path: Path) -> int:
    from tilestream.tfrecord import get_tfrecord_length

    return get_tfrecord_length(path)


def _verified_count(path: Path) -> int:
    """Read every record, checking length and data CRCs (raises on the first bad one)."""
    from tilestream.tfrecord import scan_index

    return len(scan_index(path, locations=False, verify=True))


@dataclass
class ManifestScan:
    """What :func:`scan_manifest` found.

    Attributes
    ----------
    entries
        ``{relative path: entry}``: the manifest (current TFRecords only).
    stale
        ``{relative path: reason}``: TFRecords of stale slides of run folders, left out.
    problem
        Why the stored manifest file could not be used (``None`` when it was fine or absent).
    write_error
        Why a write that was asked for failed (``None``: written, unchanged, or not asked).
    """

    entries: dict[str, dict[str, Any]]
    stale: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    write_error: str | None = None


def _entry(path: Path, verify: bool) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError as exc:
        return {"total": 0, "error": f"cannot stat: {exc.strerror or exc}"}
    entry: dict[str, Any] = {"total": 0, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    count = _verified_count if verify else _count
    return counted_entry(entry, lambda: count(path), path, verify=verify)


def counted_entry(
    entry: dict[str, Any],
    count: Callable[[], int],
    where: str | os.PathLike[str],
    *,
    verify: bool,
    fatal: Callable[[BaseException], bool] | None = None,
) -> dict[str, Any]:
    """``entry`` with the ``total`` that ``count`` gives, or the ``error`` that kept it from one.

    An unreadable or empty TFRecord is kept and recorded (and logged, naming
    ``where``); an error that ``fatal`` accepts is raised instead.
    """
    try:
        entry["total"] = count()
    except (TileStreamError, OSError, EOFError) as exc:
        if fatal is not None and fatal(exc):
            raise
        entry["error"] = f"{type(exc).__name__}: {exc}"
        log.warning("unreadable TFRecord %s (kept, recorded in the manifest): %s", where, exc)
    else:
        if entry["total"] == 0:
            entry["error"] = "empty TFRecord (no records)"
    if verify:
        entry["verified"] = True
    return entry


def _is_fresh(old: dict[str, Any] | None, path: Path, verify: bool) -> bool:
    if old is None or not isinstance(old.get("total"), int):
        return False
    if verify and old.get("verified") is not True:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    return bool(old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns)


def _save(mpath: Path, manifest: dict[str, dict[str, Any]], problem: str | None) -> str | None:
    """Write the manifest; return why it could not be written (``None`` when it was)."""
    try:
        if problem is not None and mpath.exists():
            kept = mpath.with_name(mpath.name + ".unparseable")
            shutil.copyfile(mpath, kept)
            log.warning(
                "manifest %s %s; kept as %s and replaced by a new count", mpath, problem, kept
            )
        write_json_atomic(mpath, manifest)
    except OSError as exc:
        log.info("cannot write manifest %s (%s); counts kept in memory", mpath, exc)
        return f"cannot write {mpath}: {exc.strerror or exc}"
    return None


def scan_manifest(
    directory: str | os.PathLike[str],
    force_update: bool = False,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    write: bool = False,
    verify: bool = False,
    suffixes: Sequence[str] = TFRECORD_SUFFIXES,
    progress: Callable[[int, int], None] | None = None,
) -> ManifestScan:
    """Count the records of every current TFRecord under ``directory``.

    Parameters as :func:`update_manifest_at_dir`, except that nothing is
    written unless ``write=True``.

    Returns
    -------
    ManifestScan
        The entries, the stale TFRecords left out (with reasons) and the
        problem with the stored manifest, if any.
    """
    root = Path(directory)
    mpath = Path(manifest_path) if manifest_path is not None else root / MANIFEST_FILE
    prior, problem = _load(mpath)
    if problem is not None and not write:
        log.warning("manifest %s %s; counting again (the file is left as it is)", mpath, problem)
    files = find_tfrecords(root, suffixes=suffixes) if root.is_dir() else []
    stale = stale_files(files)
    for path, reason in stale.items():
        log.warning("leaving out %s: %s (outputs kept, not deleted)", path, reason)
    manifest: dict[str, dict[str, Any]] = {}
    current = [p for p in files if p not in stale]
    for i, path in enumerate(current):
        rel = path.relative_to(root).as_posix()
        old = prior.get(rel)
        if not force_update and _is_fresh(old, path, verify):
            assert old is not None
            manifest[rel] = old
        else:
            manifest[rel] = _entry(path, verify)
        if progress is not None:
            progress(i + 1, len(current))
    write_error = None
    if write and (manifest != prior or problem is not None) and root.is_dir():
        write_error = _save(mpath, manifest, problem)
    rel_stale = {p.relative_to(root).as_posix(): r for p, r in stale.items()}
    return ManifestScan(manifest, rel_stale, problem, write_error)


def update_manifest_at_dir(
    directory: str | os.PathLike[str],
    force_update: bool = False,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    write: bool = True,
    verify: bool = False,
    suffixes: Sequence[str] = TFRECORD_SUFFIXES,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Count the records of every TFRecord under ``directory`` and save the manifest.

    Parameters
    ----------
    directory
        Searched recursively; keys are paths relative to it (``/``-separated).
    force_update
        Recount every file, even when its recorded count is fresh.
    manifest_path
        Where the manifest is read and written (default ``directory/manifest.json``).
    write
        Save the manifest (atomically, and only when it changed). A folder that
        cannot be written is logged, not an error. Pass ``False`` to only read.
    verify
        Read every record and check its data CRC (files whose entry was not
        verified, or changed since, are read again); without it a count comes
        from the framing or a fresh index, and damaged record data goes unseen.
    suffixes
        File name endings that mark a TFRecord.
    progress
        ``progress(done, total)`` after each file.

    Returns
    -------
    dict
        ``{relative path: {"total": n, "size": bytes, "mtime_ns": ns}}``, with
        ``"error": reason`` (and ``total`` 0) for files that could not be read
        and ``"verified": True`` for files read with ``verify``. Entries of
        files that no longer exist are dropped from the manifest, and so are
        the TFRecords of stale slides of run folders (logged at WARNING; see
        :func:`scan_manifest`); no file is ever deleted.
    """
    return scan_manifest(
        directory,
        force_update,
        manifest_path=manifest_path,
        write=write,
        verify=verify,
        suffixes=suffixes,
        progress=progress,
    ).entries
