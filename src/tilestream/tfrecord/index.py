"""TFRecord indexes: record offsets and lengths (and tile locations) for random access.

Formats read and written:

- ``<name>.index.npz`` (Slideflow, the default): ``arr_0`` int64 ``(n, 2)``
  start offset and total record length including the 16 framing bytes;
  ``locations`` int64 ``(n, 2)`` ``(loc_x, loc_y)`` when the records have
  them. tilestream adds ``tfrecord_size`` and ``tfrecord_mtime_ns`` (ignored
  by Slideflow) to detect a TFRecord that changed after its index was made.
- ``<name>.index.npy`` (older Slideflow): the ``(n, 2)`` array alone.
- ``<name>.index`` text, one ``offset length`` line per record, as NVIDIA DALI
  and the ``tfrecord`` PyPI package read (older Slideflow too).

An index is checked before it is used: its arrays' headers against what
the TFRecord's size allows (before anything is allocated), its TFRecord's
size and mtime (when recorded), and that its records tile the file exactly.
A stale, damaged or implausible index is rebuilt (a warning is logged),
never trusted silently.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord.example import serialized_record
>>> from tilestream.tfrecord.writer import TFRecordWriter
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with TFRecordWriter(d / "a.tfrecords", index=False) as w:
...     for x in (0, 256):
...         w.write(serialized_record("a", b"img", x, 512))
>>> idx = create_index(d / "a.tfrecords")
>>> idx.array.tolist(), idx.locations.tolist()
([[0, 89], [89, 90]], [[0, 512], [256, 512]])
>>> load_index(d / "a.tfrecords").path.name
'a.index.npz'
>>> export_text_index(d / "a.tfrecords").read_text()
'0 89\\n89 90\\n'
"""

from __future__ import annotations

import io
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tilestream._util.atomic import atomic_write
from tilestream.errors import ConfigError, InvalidTFRecordIndex
from tilestream.tfrecord._locations import record_location
from tilestream.tfrecord._npyfile import READ_ERRORS, ArrayLimit, BadArrayFile, read_npy, read_npz
from tilestream.tfrecord._staleness import INFLATE_RATIO, index_staleness, max_records
from tilestream.tfrecord.framing import (
    HEADER_SIZE,
    OFFSETS,
    CompressionArg,
    FrameCursor,
    Source,
    detect_compression,
    iter_frames,
    normalize_compression,
)
from tilestream.tfrecord.reader import RecordIterator

__all__ = [
    "IndexFormat",
    "TFRecordIndex",
    "create_index",
    "export_text_index",
    "find_index",
    "index_path_for",
    "index_staleness",
    "load_index",
    "max_records",
    "read_index_file",
    "save_index",
    "scan_buffer",
    "scan_index",
]

log = logging.getLogger(__name__)

IndexFormat = Literal["npz", "npy", "text"]
ProgressCallback = Callable[[int, int], None]
_SUFFIX: dict[str, str] = {"npz": ".index.npz", "npy": ".index.npy", "text": ".index"}


@dataclass(frozen=True, eq=False)
class TFRecordIndex:
    """Offsets and lengths of the records of one TFRecord file.

    Attributes
    ----------
    array
        int64 ``(n, 2)``: start offset and total length (incl. 16 framing bytes).
    locations
        int64 ``(n, 2)`` tile ``(loc_x, loc_y)``, or ``None``.
    path
        The index file it was read from or written to, if any.
    tfrecord_stat
        ``(size, mtime_ns)`` of the TFRecord recorded in the index file
        (tilestream's npz indexes), or ``None``.
    """

    array: npt.NDArray[np.int64]
    locations: npt.NDArray[np.int64] | None = None
    path: Path | None = None
    tfrecord_stat: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """Start offset of every record."""
        return self.array[:, 0]

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Total length of every record, framing included."""
        return self.array[:, 1]


def index_path_for(tfrecord: str | os.PathLike[str], fmt: IndexFormat = "npz") -> Path:
    """Where the index of ``tfrecord`` lives: ``<name>.index.npz`` beside it.

    Examples
    --------
    >>> index_path_for("/data/slide1.tfrecords").as_posix()
    '/data/slide1.index.npz'
    >>> index_path_for("x.tfrecord.gz", "text").as_posix()
    'x.tfrecord.index'
    """
    if fmt not in _SUFFIX:
        raise ConfigError(f"index format must be 'npz', 'npy' or 'text', not {fmt!r}")
    p = Path(tfrecord)
    stem = p.name.rsplit(".", 1)[0] if "." in p.name.lstrip(".") else p.name
    return p.with_name(stem + _SUFFIX[fmt])


def find_index(tfrecord: str | os.PathLike[str]) -> Path | None:
    """The existing index of ``tfrecord``: ``.index.npz``, else ``.index.npy``, else ``.index``."""
    formats: tuple[IndexFormat, ...] = ("npz", "npy", "text")
    for fmt in formats:
        p = index_path_for(tfrecord, fmt)
        if p.is_file():
            return p
    return None


def _check_array(arr: Any, name: str, path: Path) -> npt.NDArray[np.int64]:
    a = np.asarray(arr)
    if a.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if a.ndim == 1 and a.shape[0] == 2:
        a = a.reshape(1, 2)
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "iuf":
        raise InvalidTFRecordIndex(
            f"index {name} must be an integer (n, 2) array, not {a.dtype} {a.shape}", path=path
        )
    return a.astype(np.int64)


def _row_limit(index_path: Path, max_records: int | None) -> int:
    """Rows an index may hold: what its own bytes can decode to, and ``max_records``."""
    own = os.stat(index_path).st_size * INFLATE_RATIO // 8 + 1
    return own if max_records is None else min(own, max(int(max_records), 0))


def read_index_file(
    index_path: str | os.PathLike[str], *, max_records: int | None = None
) -> TFRecordIndex:
    """Read an index file in any supported format (by its suffix).

    Array headers are checked before anything is allocated: an index
    declaring more rows than ``max_records`` (what its TFRecord could hold,
    see :func:`load_index`) or than its own bytes could hold is rejected
    unread.

    Raises
    ------
    InvalidTFRecordIndex
        The file is damaged, cannot be parsed, does not hold an ``(n, 2)``
        integer table, or declares more records than ``max_records``.
    FileNotFoundError
        The file does not exist.
    """
    path = Path(index_path)
    stat: tuple[int, int] | None = None
    try:
        if path.stat().st_size == 0:
            return TFRecordIndex(np.zeros((0, 2), np.int64), None, path)
        rows = _row_limit(path, max_records)
        if path.name.endswith(".npz"):
            z = read_npz(path, _npz_limits(rows))
            if "arr_0" not in z:
                raise InvalidTFRecordIndex("index has no 'arr_0' array", path=path)
            arr = _check_array(z["arr_0"], "arr_0", path)
            locs = _check_array(z["locations"], "locations", path) if "locations" in z else None
            if "tfrecord_size" in z and "tfrecord_mtime_ns" in z:
                stat = int(z["tfrecord_size"].item()), int(z["tfrecord_mtime_ns"].item())
        elif path.name.endswith(".npy"):
            with open(path, "rb") as f:
                arr = _check_array(read_npy(f, ArrayLimit(rows, 2)), "array", path)
            locs = None
        else:
            arr, locs = _read_text_index(path, rows), None
    except InvalidTFRecordIndex:
        raise
    except (BadArrayFile, *READ_ERRORS) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InvalidTFRecordIndex(f"damaged or implausible index ({exc})", path=path) from None
    if locs is not None and len(locs) != len(arr):
        raise InvalidTFRecordIndex(
            f"index has {len(arr)} records but {len(locs)} locations", path=path
        )
    return TFRecordIndex(arr, locs, path, stat)


def _npz_limits(rows: int) -> dict[str, ArrayLimit]:
    one = ArrayLimit(1, 0)
    return {
        "arr_0": ArrayLimit(rows, 2),
        "locations": ArrayLimit(rows, 2),
        "tfrecord_size": one,
        "tfrecord_mtime_ns": one,
    }


def _read_text_index(path: Path, rows: int) -> npt.NDArray[np.int64]:
    text = path.read_text(encoding="ascii")
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if any(len(r) != 2 for r in lines):
        raise InvalidTFRecordIndex("text index lines must be 'offset length'", path=path)
    if len(lines) > rows:
        raise InvalidTFRecordIndex(
            f"index lists {len(lines)} records, more than the TFRecord could hold", path=path
        )
    return _check_array(np.array(lines, dtype=np.int64), "table", path)


def save_index(
    index: TFRecordIndex,
    index_path: str | os.PathLike[str],
    *,
    tfrecord: str | os.PathLike[str] | None = None,
    fmt: IndexFormat | None = None,
) -> Path:
    """Write ``index`` atomically; the format follows the suffix unless ``fmt`` is given.

    With ``tfrecord``, its size and mtime are stored too (npz only) so a later
    change of the TFRecord is noticed.
    """
    path = Path(index_path)
    if fmt is None:
        fmt = (
            "npz" if path.name.endswith(".npz") else "npy" if path.name.endswith(".npy") else "text"
        )
    if fmt == "npz":
        arrays: dict[str, Any] = {"arr_0": index.array.astype(np.int64)}
        if index.locations is not None:
            arrays["locations"] = index.locations.astype(np.int64)
        if tfrecord is not None:
            st = os.stat(tfrecord)
            arrays["tfrecord_size"] = np.int64(st.st_size)
            arrays["tfrecord_mtime_ns"] = np.int64(st.st_mtime_ns)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        payload = buf.getvalue()
    elif fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, index.array.astype(np.int64))
        payload = buf.getvalue()
    elif fmt == "text":
        payload = "".join(f"{o} {n}\n" for o, n in index.array.tolist()).encode("ascii")
    else:
        raise ConfigError(f"index format must be 'npz', 'npy' or 'text', not {fmt!r}")
    with atomic_write(path, "wb") as f:
        f.write(payload)
    return path


# --------------------------------------------------------------------------- scanning


def scan_index(
    tfrecord: str | os.PathLike[str],
    *,
    locations: bool = True,
    compression: CompressionArg | str = "auto",
    verify: bool = False,
    progress: ProgressCallback | None = None,
) -> TFRecordIndex:
    """Build the index of a TFRecord in memory, without writing it.

    Only the framing is read (plus, with ``locations``, the ``loc_x``/``loc_y``
    features of each record), so a plain file is indexed at about disk speed.
    Length CRCs are always checked; ``verify=True`` checks data CRCs too.

    Parameters
    ----------
    progress
        Called as ``progress(bytes_done, bytes_total)`` now and then.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.tfrecord import TFRecordWriter, serialized_record
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tfrecords"
    >>> with TFRecordWriter(path, index=False) as w:
    ...     w.write(serialized_record("t", b"img", 512, 256))
    >>> scan_index(path).array.tolist()
    [[0, 90]]
    """
    path = os.fspath(tfrecord)
    comp = normalize_compression(compression)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_SIZE)
        if comp == "auto":
            comp = detect_compression(head)
        if comp is None and size > 0:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return scan_buffer(m, path, locations=locations, verify=verify, progress=progress)
    if size == 0:
        return TFRecordIndex(np.zeros((0, 2), np.int64), None)
    return _scan_stream(path, comp, locations, verify, progress)


def scan_buffer(
    buf: mmap.mmap | bytes,
    path: str | None = None,
    *,
    locations: bool = True,
    verify: bool = False,
    progress: ProgressCallback | None = None,
) -> TFRecordIndex:
    """The index of the whole (uncompressed) TFRecord data in ``buf``, from any source.

    Length CRCs are always checked; ``verify=True`` checks data CRCs too.
    ``path`` names the data in errors.

    Examples
    --------
    >>> from tilestream.tfrecord.framing import frame
    >>> scan_buffer(frame(b"a") + frame(b"bc"), locations=False).array.tolist()
    [[0, 17], [17, 18]]
    """
    size = len(buf)
    cursor = FrameCursor()
    want_locs = locations
    step = 64 << 20

    def located(start: int, stop: int, record: int, offset: int) -> int:
        nonlocal want_locs
        if want_locs:
            loc = record_location(buf, start, stop, path or "", record, offset)
            if loc is None:
                want_locs = False
            else:
                locs.append(loc)
        return offset

    locs: list[tuple[int, int]] = []
    offsets: list[int] = []
    take = located if locations else OFFSETS
    walk = iter_frames(buf, cursor, path=path, verify=verify, check_header=True, take=take)
    if progress is None:
        offsets.extend(walk)
    else:
        for off in walk:
            offsets.append(off)
            if off >= step:
                progress(off, size)
                step = off + (64 << 20)
        progress(size, size)
    return _make_index(offsets, size, locs if want_locs else None)


def _make_index(
    offsets: list[int], total: int, locs: list[tuple[int, int]] | None
) -> TFRecordIndex:
    arr = np.empty((len(offsets), 2), dtype=np.int64)
    if offsets:
        arr[:, 0] = offsets
        arr[:-1, 1] = np.diff(arr[:, 0])
        arr[-1, 1] = total - offsets[-1]
    loc_arr = None
    if locs is not None and offsets:
        loc_arr = np.array(locs, dtype=np.int64).reshape(-1, 2)
    return TFRecordIndex(arr, loc_arr)


def _scan_stream(
    source: Source,
    comp: str | None,
    want_locs: bool,
    verify: bool,
    progress: ProgressCallback | None,
) -> TFRecordIndex:
    """The index of a (possibly compressed) stream: a path or a binary file, read once."""
    it = RecordIterator(source, compression=comp, verify=verify)
    path = it.path or ""
    offsets: list[int] = []
    locs: list[tuple[int, int]] | None = [] if want_locs else None
    for i, data in enumerate(it):
        start = it.offset - len(data) - 16
        offsets.append(start)
        if locs is not None:
            loc = record_location(data, 0, len(data), path, i, start)
            if loc is None:
                locs = None
            else:
                locs.append(loc)
    if progress is not None:
        progress(it.offset, it.offset)
    return _make_index(offsets, it.offset, locs)


def create_index(
    tfrecord: str | os.PathLike[str],
    *,
    locations: bool = True,
    index_path: str | os.PathLike[str] | None = None,
    fmt: IndexFormat = "npz",
    write: bool = True,
    compression: CompressionArg | str = "auto",
    verify: bool = False,
    progress: ProgressCallback | None = None,
) -> TFRecordIndex:
    """Index a TFRecord file and (by default) write the index beside it.

    Parameters
    ----------
    tfrecord
        The TFRecord file.
    locations
        Also record each tile's ``(loc_x, loc_y)`` (npz only) when every
        record has both.
    index_path
        Where to write; default :func:`index_path_for` ``(tfrecord, fmt)``.
    fmt
        ``"npz"`` (Slideflow), ``"npy"`` (older Slideflow) or ``"text"``
        (``offset length`` lines for DALI and the ``tfrecord`` package).
    write
        Write the file (atomically); with ``False`` only return the index.
    verify
        Check data CRCs as well as length CRCs.
    progress
        ``progress(bytes_done, bytes_total)`` callback.

    Returns
    -------
    TFRecordIndex

    Raises
    ------
    CorruptRecordError, TruncatedRecordError
        The file is not a valid TFRecord.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.tfrecord import TFRecordWriter, serialized_record
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tfrecords"
    >>> with TFRecordWriter(path, index=False) as w:
    ...     w.write(serialized_record("t", b"img", 512, 256))
    >>> idx = create_index(path)
    >>> idx.path.name, idx.array.tolist(), idx.locations.tolist()
    ('t.index.npz', [[0, 90]], [[512, 256]])
    >>> create_index(path, fmt="text").path.read_text()
    '0 90\\n'
    """
    index = scan_index(
        tfrecord,
        locations=locations and fmt == "npz",
        compression=compression,
        verify=verify,
        progress=progress,
    )
    if not write:
        return index
    out = Path(index_path) if index_path is not None else index_path_for(tfrecord, fmt)
    save_index(index, out, tfrecord=tfrecord, fmt=fmt)
    return TFRecordIndex(index.array, index.locations, out)


def export_text_index(
    tfrecord: str | os.PathLike[str], index_path: str | os.PathLike[str] | None = None
) -> Path:
    """Write the plain-text ``offset length`` index read by NVIDIA DALI and ``tfrecord``."""
    index = create_index(tfrecord, fmt="text", index_path=index_path, locations=False)
    assert index.path is not None
    return index.path


def load_index(
    tfrecord: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | None = None,
    rebuild: bool = True,
    write: bool = True,
    locations: bool = True,
) -> TFRecordIndex:
    """Load the index of ``tfrecord``, creating or rebuilding it when needed.

    Parameters
    ----------
    tfrecord
        The TFRecord file.
    index_path
        A specific index file; default :func:`find_index`.
    rebuild
        Build a missing, unreadable or stale index (default). With ``False``
        those raise :class:`~tilestream.errors.InvalidTFRecordIndex`.
    write
        Save a rebuilt index as ``<name>.index.npz`` (skipped, with an info
        log, where the folder is read-only: the index is then used in memory).
    locations
        Record tile locations when building.

    An index that is damaged (a cut zip, a bad ``.npy`` header) or
    implausible (declaring more records than the TFRecord's size allows,
    see :func:`max_records`) is stale like an outdated one: rebuilt, with a
    warning naming it; its arrays are never allocated.

    Raises
    ------
    InvalidTFRecordIndex
        The index is missing, unreadable or stale and ``rebuild`` is off.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.tfrecord import TFRecordWriter, serialized_record
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tfrecords"
    >>> with TFRecordWriter(path, index=False) as w:
    ...     w.write(serialized_record("t", b"img", 512, 256))
    >>> len(load_index(path))  # no index yet: built and saved
    1
    >>> find_index(path).name
    't.index.npz'
    >>> with TFRecordWriter(path, index=False) as w:  # the file changes...
    ...     for x in (0, 256):
    ...         w.write(serialized_record("t", b"img", x, 0))
    >>> len(load_index(path))  # ...so the stale index is rebuilt
    2
    """
    found = Path(index_path) if index_path is not None else find_index(tfrecord)
    reason = "no index file"
    if found is not None:
        try:
            index = read_index_file(found, max_records=max_records(tfrecord))
            stale = index_staleness(tfrecord, index)
        except InvalidTFRecordIndex as exc:
            stale = exc.message
        if stale is None:
            return index
        reason = f"stale index {found}: {stale}"
        if not rebuild:
            raise InvalidTFRecordIndex(stale, path=found)
        log.warning("%s: %s; rebuilding it", os.fspath(tfrecord), reason)
    elif not rebuild:
        raise InvalidTFRecordIndex("no index file", path=tfrecord)
    index = scan_index(tfrecord, locations=locations)
    if not write:
        return index
    out = index_path_for(tfrecord, "npz")
    try:
        save_index(index, out, tfrecord=tfrecord)
    except OSError as exc:
        log.info("%s: cannot write index %s (%s); using it in memory", tfrecord, out, exc)
        return index
    return TFRecordIndex(index.array, index.locations, out)
