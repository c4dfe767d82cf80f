"""A cheap content fingerprint of a slide file, so that resume notices a changed slide.

A slide read from a server (a DICOMweb URL) has the fingerprint of its
series instead: its instances' UIDs and metadata, not the server's address
(:func:`tilestream.extract.remote.series_fingerprint`).

:func:`source_fingerprint` records, for the slide file an extraction read:

- its size and modification time (``mtime_ns``);
- ``head``/``tail``: SHA-256 of its first and last MiB (all of a file up to 2 MiB);
- ``structure``, for TIFF-family files (SVS, TIFF, NDPI, SCN, BIF, ...; told
  by their first bytes, not their name): SHA-256 of every IFD (image file
  directory) reachable from the header, following the IFD chain and SubIFDs,
  with the values of every tag stored outside it: the tile/strip offsets and
  byte counts, JPEG tables, image descriptions, ... At most
  :data:`MAX_STRUCTURE_BYTES` are read and :data:`MAX_IFDS` directories
  visited; past those, ``structure_truncated`` is true and the rest is unseen;
- ``companions``, for formats whose image lives in several files: the name,
  size and modification time of each other file of the slide (the ``.dcm``
  files beside a DICOM file; the files in a ``.mrxs`` slide's folder) and the
  head hash of each (first 64 KiB).

A slide that is an object in a store or on a web server (``s3://``,
``gs://``, ``http(s)://``) has :func:`object_fingerprint`: its size and
version (the ETag), from one ``HEAD`` request; any rewrite of the object
changes it.

Two fingerprints are compared as a whole (:func:`fingerprint_matches`).

What it sees: any change of size or modification time; any change within the
first or last MiB; for TIFF-family files, any change to the directories, tags
and per-tile offsets and byte counts, so any tile re-encoded to a different
length, moved, added or removed anywhere in the file, and any metadata
change; a companion file added, removed, resized, touched or changed in its
first 64 KiB.

What it cannot see: a change in the interior of the file (past the first
MiB, before the last one, outside the TIFF directories) that keeps the size,
the modification time (restored, e.g. with ``touch -r`` or ``os.utime``),
and, for TIFF files, every tile's offset and byte count: for example bytes of
one tile's JPEG data overwritten in place with the same number of bytes; for
non-TIFF formats (DICOM, MRXS data files) any interior change that keeps size
and mtime; parts of the TIFF structure beyond the caps above. Reading the whole
file would see everything, at the cost of reading every slide again on every
resume; this reads a few MiB per slide. Copying slides without keeping their
modification times (``cp`` without ``-p``) changes the fingerprint and so
re-extracts them.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "s.bin"
>>> _ = p.write_bytes(b"x" * 10)
>>> fp = source_fingerprint(p)
>>> sorted(fp), fp["size"]
(['head', 'mtime_ns', 'size', 'structure', 'tail', 'version'], 10)
>>> fingerprint_matches(fp, p)
True
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilestream.errors import SlideError, SlideNotFoundError
from tilestream.extract.remote import is_dicomweb_url, url_fingerprint, url_fingerprint_matches
from tilestream.slide.remote import open_source
from tilestream.storage import is_url, redact_url

__all__ = [
    "MAX_IFDS",
    "MAX_STRUCTURE_BYTES",
    "OBJECT_FINGERPRINT_VERSION",
    "file_sha256",
    "fingerprint_matches",
    "object_fingerprint",
    "source_fingerprint",
]

log = logging.getLogger(__name__)

#: Bumped when what a fingerprint holds changes (an older one then never matches).
VERSION = 1
_MIB = 1 << 20
#: The most bytes of TIFF directories and their out-of-line tag values read per file.
MAX_STRUCTURE_BYTES = 32 * _MIB
#: The most TIFF directories (IFDs) visited per file.
MAX_IFDS = 4096
_COMPANION_HEAD = 64 << 10
_MAX_COMPANIONS = 10_000
_SUBIFDS = 330
# TIFF field type -> bytes per value
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8,
               11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip


def _pread(fd: int, size: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, size - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


class _TiffWalker:
    """Hash a TIFF's directories and out-of-line tag values, within the caps."""

    def __init__(self, fd: int, size: int, head: bytes) -> None:
        self.fd, self.size = fd, size
        self.order = "<" if head[:2] == b"II" else ">"
        self.big = struct.unpack(self.order + "H", head[2:4])[0] == 43
        self.budget = MAX_STRUCTURE_BYTES
        self.truncated = False
        self.digest = hashlib.sha256()

    def _read(self, size: int, offset: int) -> bytes | None:
        if offset < 0 or offset + size > self.size:
            return None
        if size > self.budget:
            self.truncated = True
            return None
        self.budget -= size
        return _pread(self.fd, size, offset)

    def walk(self, first: int) -> None:
        big, o = self.big, self.order
        count_fmt, entry_size = (o + "Q", 20) if big else (o + "H", 12)
        next_fmt = o + ("Q" if big else "I")
        count_size, off_size = (8, 8) if big else (2, 4)
        todo: list[int] = [first]
        seen: set[int] = set()
        while todo:
            offset = todo.pop()
            if offset == 0 or offset in seen:
                continue
            if len(seen) >= MAX_IFDS:
                self.truncated = True
                return
            seen.add(offset)
            raw_count = self._read(count_size, offset)
            if raw_count is None:
                continue
            n = struct.unpack(count_fmt, raw_count)[0]
            body = self._read(n * entry_size + off_size, offset + count_size)
            if body is None:
                continue
            self.digest.update(raw_count + body)
            for i in range(n):
                self._entry(body[i * entry_size : (i + 1) * entry_size], todo)
            todo.append(struct.unpack(next_fmt, body[n * entry_size :])[0])

    def _entry(self, entry: bytes, todo: list[int]) -> None:
        o = self.order
        if self.big:
            tag, typ, count, value = struct.unpack(o + "HHQ8s", entry)
            inline, off_fmt = 8, o + "Q"
        else:
            tag, typ, count, value = struct.unpack(o + "HHI4s", entry)
            inline, off_fmt = 4, o + "I"
        nbytes = _TYPE_SIZES.get(typ, 1) * count
        if nbytes <= inline:
            data: bytes | None = value[:nbytes]
        else:
            data = self._read(nbytes, struct.unpack(off_fmt, value)[0])
            if data is not None:
                self.digest.update(data)
        if tag == _SUBIFDS and data is not None and typ in (4, 13, 16, 18):
            width = 8 if typ in (16, 18) else 4
            fmt = o + ("Q" if width == 8 else "I") * (len(data) // width)
            todo.extend(struct.unpack(fmt, data[: len(data) // width * width]))


def _tiff_structure(fd: int, size: int) -> tuple[str | None, bool]:
    head = _pread(fd, 16, 0)
    if len(head) < 8 or head[:4] not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return None, False
    walker = _TiffWalker(fd, size, head)
    if walker.big:
        first = struct.unpack(walker.order + "Q", head[8:16])[0] if len(head) == 16 else 0
    else:
        first = struct.unpack(walker.order + "I", head[4:8])[0]
    walker.walk(first)
    return walker.digest.hexdigest(), walker.truncated


def _companions(path: Path) -> list[Path]:
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        folder, pattern = path.parent, "*"
        keep = [p for p in folder.glob(pattern) if p.suffix.lower() == ".dcm" and p != path]
    elif suffix == ".mrxs":
        data_dir = path.with_suffix("")
        keep = list(data_dir.rglob("*")) if data_dir.is_dir() else []
    else:
        return []
    return sorted(p for p in keep if p.is_file())[:_MAX_COMPANIONS]


def _companions_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for p in _companions(path):
        st = p.stat()
        with open(p, "rb") as f:
            head = f.read(_COMPANION_HEAD)
        rel = os.fspath(p.relative_to(path.parent))
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        digest.update(hashlib.sha256(head).digest())
    return digest.hexdigest()


#: Bumped when what an object's fingerprint holds changes.
OBJECT_FINGERPRINT_VERSION = 1


def object_fingerprint(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The fingerprint of a slide object (``s3://``, ``gs://``, ``http(s)://``): its size and version.

    The version is the store's ETag (or size and modification time where it
    has none: :func:`tilestream.slide.remote.remote_slide_version`): any
    rewrite of the object changes it, so it sees every change, inside the
    object too. One ``HEAD`` request; no bytes read.

    Raises
    ------
    SlideError
        From the store (:func:`tilestream.slide.remote.open_source`).
    """
    source = open_source(url, storage_options)
    return {
        "kind": "object",
        "version": OBJECT_FINGERPRINT_VERSION,
        "url": source.url,
        "size": source.stat.size,
        "object_version": source.stat.version,
    }


def _object_matches(recorded: Any, url: str, storage_options: Mapping[str, Any] | None) -> bool:
    if not isinstance(recorded, dict) or recorded.get("kind") != "object":
        return False
    if recorded.get("version") != OBJECT_FINGERPRINT_VERSION:
        return False
    try:
        return object_fingerprint(url, storage_options) == recorded
    except SlideNotFoundError:
        return False
    except SlideError as exc:  # cannot ask now: the slide could not be extracted either
        log.warning("cannot check whether %s changed (%s); kept as complete", redact_url(url), exc)
        return True


def source_fingerprint(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The fingerprint of the slide file at ``path`` (see the module doc), or of a slide URL.

    A DICOMweb series: :func:`~tilestream.extract.remote.url_fingerprint`; an
    object in a store or on a web server: :func:`object_fingerprint`.

    Raises
    ------
    OSError
        When the file cannot be read (for a URL: a
        :class:`~tilestream.errors.SlideError` or
        :class:`~tilestream.errors.StorageError`, when the server cannot answer).
    """
    if is_dicomweb_url(path):
        return url_fingerprint(str(path))
    if is_url(path):
        return object_fingerprint(str(path), storage_options)
    p = Path(path)
    fd = os.open(p, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        size = st.st_size
        head = _pread(fd, min(size, _MIB), 0)
        tail = _pread(fd, min(size, _MIB), max(0, size - _MIB))
        structure, truncated = _tiff_structure(fd, size)
    finally:
        os.close(fd)
    out: dict[str, Any] = {
        "version": VERSION,
        "size": size,
        "mtime_ns": st.st_mtime_ns,
        "head": hashlib.sha256(head).hexdigest(),
        "tail": hashlib.sha256(tail).hexdigest(),
        "structure": structure,
    }
    if truncated:
        out["structure_truncated"] = True
    if _companions(p):
        out["companions"] = _companions_digest(p)
    return out


def fingerprint_matches(
    recorded: Any,
    path: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the file at ``path`` still has the fingerprint ``recorded``.

    Compares size and modification time first (one ``stat``), and reads the
    file only when they match. An unreadable file, or a record made by
    another version of the fingerprint, never matches. A slide URL: see
    :func:`~tilestream.extract.remote.url_fingerprint_matches` (a server that
    cannot answer now leaves a complete slide complete); an object: its size
    and ETag (a missing object never matches; a store that cannot answer now
    leaves the slide complete, with a warning).
    """
    if is_dicomweb_url(path):
        return url_fingerprint_matches(recorded, str(path))
    if is_url(path):
        return _object_matches(recorded, str(path), storage_options)
    if not isinstance(recorded, dict) or recorded.get("version") != VERSION:
        return False
    try:
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != (recorded.get("size"), recorded.get("mtime_ns")):
            return False
        return source_fingerprint(path) == recorded
    except OSError:
        return False


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a whole (small) file, e.g. a slide's index or coordinates table."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()
