"""Manifests: the number of records in every TFRecord under a folder, kept in ``manifest.json``.

The format is Slideflow's (``{relative path: {"total": n}}``) with three more
keys per entry: ``size`` and ``mtime_ns`` of the file when it was counted (a
count is reused only while both still match), and ``error`` for a file that
could not be read (its ``total`` is 0). Unlike Slideflow, an unreadable or
empty TFRecord is recorded, **never deleted**.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tilestream._util.atomic import is_temp_file, write_json_atomic
from tilestream.errors import TileStreamError

__all__ = [
    "TFRECORD_SUFFIXES",
    "find_tfrecords",
    "read_manifest",
    "unreadable",
    "update_manifest_at_dir",
]

log = logging.getLogger(__name__)

TFRECORD_SUFFIXES = (".tfrecords", ".tfrecord", ".record", ".tfrec", ".gz")


def find_tfrecords(
    directory: str | os.PathLike[str], *, suffixes: Sequence[str] = TFRECORD_SUFFIXES
) -> list[Path]:
    """TFRecord files under ``directory`` (recursively, sorted), without hidden or temporary files."""
    root = Path(directory)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or is_temp_file(name) or not name.endswith(tuple(suffixes)):
                continue
            out.append(Path(dirpath) / name)
    return out


def read_manifest(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A manifest file's entries; ``{}`` when it is missing or not a JSON object of objects."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def unreadable(manifest: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{relative path: reason}`` of the entries that could not be read."""
    return {k: str(v["error"]) for k, v in manifest.items() if v.get("error")}


def _count(path: Path) -> int:
    from tilestream.tfrecord import get_tfrecord_length

    return get_tfrecord_length(path)


def update_manifest_at_dir(
    directory: str | os.PathLike[str],
    force_update: bool = False,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    write: bool = True,
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
        cannot be written is logged, not an error.
    suffixes
        File name endings that mark a TFRecord.
    progress
        ``progress(done, total)`` after each file.

    Returns
    -------
    dict
        ``{relative path: {"total": n, "size": bytes, "mtime_ns": ns}}``, with
        ``"error": reason`` (and ``total`` 0) for files that could not be read.
        Entries of files that no longer exist are dropped from the manifest;
        no file is ever deleted.
    """
    root = Path(directory)
    mpath = Path(manifest_path) if manifest_path is not None else root / "manifest.json"
    prior = read_manifest(mpath)
    files = find_tfrecords(root, suffixes=suffixes) if root.is_dir() else []
    manifest: dict[str, dict[str, Any]] = {}
    for i, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except OSError as exc:
            manifest[rel] = {"total": 0, "error": f"cannot stat: {exc.strerror or exc}"}
            continue
        old = prior.get(rel)
        fresh = (
            not force_update
            and old is not None
            and old.get("size") == st.st_size
            and old.get("mtime_ns") == st.st_mtime_ns
            and isinstance(old.get("total"), int)
        )
        if fresh:
            assert old is not None
            manifest[rel] = old
        else:
            entry: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            try:
                entry["total"] = _count(path)
            except (TileStreamError, OSError, EOFError) as exc:
                entry["total"] = 0
                entry["error"] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "unreadable TFRecord %s (kept, recorded in the manifest): %s", path, exc
                )
            else:
                if entry["total"] == 0:
                    entry["error"] = "empty TFRecord (no records)"
            manifest[rel] = {"total": entry.pop("total"), **entry}
        if progress is not None:
            progress(i + 1, len(files))
    if write and manifest != prior and root.is_dir():
        try:
            write_json_atomic(mpath, manifest)
        except OSError as exc:
            log.info("cannot write manifest %s (%s); counts kept in memory", mpath, exc)
    return manifest
