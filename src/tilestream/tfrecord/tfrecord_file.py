"""Random access to the records of one TFRecord file: :class:`TFRecord`.

The file is memory-mapped (a compressed file is decompressed into memory
once) and its index loaded on first use; records are cut straight out of the
map. Each access checks the record's header against the index, so an index
that lies raises :class:`~tilestream.errors.InvalidTFRecordIndex` instead of
returning garbage. The object pickles by path, for DataLoader workers.

Examples
--------
>>> import tempfile, pathlib, pickle
>>> from tilestream.tfrecord import TFRecordWriter, serialized_record
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
>>> with TFRecordWriter(path) as w:
...     for i in range(3):
...         w.write(serialized_record("s", b"\\xff\\xd8\\xff" + bytes([i]), i * 256, 0),
...                 location=(i * 256, 0))
>>> with TFRecord(path) as tfr:
...     len(tfr), tfr.fields, tfr.img_format, tfr[-1]["loc_x"], tfr[1]["slide"]
(3, ['image_raw', 'slide', 'loc_x', 'loc_y'], 'jpeg', 512, 's')
>>> tfr.get_record_by_xy(256, 0)[1]
b'\\xff\\xd8\\xff\\x01'
>>> len(pickle.loads(pickle.dumps(tfr)))
3
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, cast, overload

import numpy as np
import numpy.typing as npt

from tilestream.errors import (
    CorruptRecordError,
    EmptyTFRecordsError,
    InvalidTFRecordIndex,
    RecordNotFoundError,
)
from tilestream.tfrecord._decode import TILES, parse_at
from tilestream.tfrecord._explicit import check_explicit, explicit_index
from tilestream.tfrecord._locations import record_location
from tilestream.tfrecord.framing import (
    HEADER_SIZE,
    check_payload,
    detect_compression,
    frame,
    read_header,
)
from tilestream.tfrecord.image import decode_image, detect_image_format
from tilestream.tfrecord.index import (
    TFRecordIndex,
    load_index,
    save_index,
    scan_buffer,
)
from tilestream.tfrecord.reader import iter_records
from tilestream.tfrecord.remote import RecordBlocks, RemoteObject, local_path, remote_name
from tilestream.tfrecord.remote_index import remote_index

__all__ = ["TFRecord", "record_to_dict"]

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image_raw", "image/encoded")


def record_to_dict(
    data: bytes | mmap.mmap,
    *,
    path: str | None = None,
    record: int | None = None,
    start: int = 0,
    end: int | None = None,
) -> dict[str, Any]:
    """Decode a record as :class:`TFRecord` returns it.

    Values as :func:`~tilestream.tfrecord.parse_example` gives them
    (single values unwrapped), with ``slide`` as ``str``.

    Examples
    --------
    >>> from tilestream.tfrecord import serialized_record
    >>> record_to_dict(serialized_record(b"slide", b"img", 1, 2))
    {'image_raw': b'img', 'slide': 'slide', 'loc_x': 1, 'loc_y': 2}
    """
    out = parse_at(data, start, len(data) if end is None else end, path=path, record=record)
    slide = out.get("slide")
    if isinstance(slide, bytes):
        try:
            out["slide"] = slide.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptRecordError(
                f"slide name is not UTF-8 ({exc})", path=path, record=record
            ) from None
    return out


class TFRecord:
    """One TFRecord file with random access by record number and tile location.

    Parameters
    ----------
    path
        The TFRecord file (plain, GZIP or ZLIB), or its URL (``s3://``,
        ``gs://``, ``http(s)://``, ``file://``). A remote TFRecord is read by
        ranged requests: its index is fetched or built once and cached locally
        by ETag (:mod:`tilestream.tfrecord.remote_index`); a record read right
        after the one before it fetches the next records with it (a block of up
        to 64 records or 4 MiB), any other record is fetched alone. A
        compressed remote TFRecord is read whole into memory.
    index
        An index file path or an ``(n, 2)`` array to use instead of the one
        found beside the file.
    create_index
        Write ``<name>.index.npz`` when it is missing or stale (default);
        with ``False`` a missing index is built in memory only.
    verify
        Check each record's data CRC the first time it is read after opening
        (default); later reads of the same record skip the check. The header
        is checked against the index on every read.
    storage_options
        Options of the store of a URL (credentials, endpoint); never logged
        or pickled into messages.

    Notes
    -----
    ``tfr[i]`` returns a dict (``slide`` as ``str``, ``image_raw`` as
    ``bytes``, ``loc_x``/``loc_y`` as ``int``, other features as
    :func:`~tilestream.tfrecord.parse_example` gives them);
    ``get_record_by_xy(x, y)`` returns ``(slide, image)`` like Slideflow.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        index: str | os.PathLike[str] | npt.NDArray[Any] | None = None,
        *,
        create_index: bool = True,
        verify: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        path = local_path(os.fspath(path))
        self._remote: RemoteObject | None = None
        if remote_name(path) is not None:
            self._remote = RemoteObject.open(path, storage_options)
            path = self._remote.url
        self.path = os.fspath(path)
        self._index_arg = index
        self.create_index = create_index
        self.verify = verify
        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        self._buf: mmap.mmap | bytes | None = None
        self._view: memoryview = memoryview(b"")
        self._checked = bytearray()  # records whose data CRC passed since opening
        self._fh: Any = None
        self._index: TFRecordIndex | None = None
        self._offs: list[int] = []
        self._lens: list[int] = []
        self._size = 0
        self._index_name: str | None = None
        self._xy: dict[tuple[int, int], int] | None = None
        self._fields: list[str] | None = None
        self._img_format: str | None = None
        self._locations_read = False
        self._blocks: RecordBlocks | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "remote": self._remote,
            "path": self.path,
            "index": self._index_arg,
            "create_index": self.create_index,
            "verify": self.verify,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._remote = state.get("remote")
        self.path = state["path"]
        self._index_arg = state["index"]
        self.create_index = state["create_index"]
        self.verify = state["verify"]
        self._reset()

    def _open(self) -> bytes | mmap.mmap:
        if self._buf is not None:
            return self._buf
        if self._remote is not None:
            return self._open_remote(self._remote)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            compression = detect_compression(f.read(HEADER_SIZE)) if size else None
            if compression is None and size:
                buf: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            elif compression is None:
                buf = b""
            else:
                buf = b"".join(frame(r) for r in iter_records(self.path))
        self._size = len(buf)
        try:
            self._index = self._load_index(buf, compressed=compression is not None)
        except BaseException:
            if isinstance(buf, mmap.mmap):
                buf.close()
            raise
        self._offs = self._index.offsets.tolist()
        self._lens = self._index.lengths.tolist()
        self._index_name = os.fspath(self._index.path) if self._index.path else self.path
        self._view = memoryview(buf)
        self._checked = bytearray(len(self._offs))
        self._buf = buf
        return buf

    def _open_remote(self, obj: RemoteObject) -> bytes:
        """Index a remote TFRecord (records are fetched on use); a compressed one is read whole."""
        size = obj.size
        compressed = size > 0 and detect_compression(obj.read_range(0, HEADER_SIZE)) is not None
        if compressed:
            with obj.reader() as raw:
                buf = b"".join(frame(r) for r in iter_records(cast(BinaryIO, raw)))
            self._size = len(buf)
            self._index = self._load_index(buf, compressed=True)
            self._view = memoryview(buf)
        else:
            self._size = size
            self._index = remote_index(obj, self._index_arg, name=self.path)
        self._offs = self._index.offsets.tolist()
        self._lens = self._index.lengths.tolist()
        self._index_name = os.fspath(self._index.path) if self._index.path else self.path
        self._checked = bytearray(len(self._offs))
        if not compressed:
            self._blocks = RecordBlocks(
                obj, self._offs, self._lens, verify=self.verify, index_name=self._index_name
            )
            buf = b""
        self._buf = buf
        return buf

    def _load_index(self, buf: bytes | mmap.mmap, *, compressed: bool) -> TFRecordIndex:
        arg = self._index_arg
        if arg is not None:
            index, what = explicit_index(arg, self.path, size=len(buf))
            check_explicit(
                index.array,
                len(buf),
                lambda offsets: [buf[o : o + HEADER_SIZE] for o in offsets],
                what=what,
                name=self.path,
            )
            return index
        if compressed or not buf:
            return scan_buffer(buf, self.path) if buf else _EMPTY
        return load_index(self.path, write=self.create_index)

    def close(self) -> None:
        """Release the memory map; the object reopens on next use."""
        buf = self._buf
        self._view.release()
        self._reset()
        if isinstance(buf, mmap.mmap):
            buf.close()

    def __enter__(self) -> TFRecord:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        view = getattr(self, "_view", None)
        if view is not None:
            view.release()
        buf = getattr(self, "_buf", None)
        if isinstance(buf, mmap.mmap):
            buf.close()

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        self._open()
        return len(self._offs)

    @property
    def length(self) -> int:
        """Number of records."""
        return len(self)

    @property
    def index(self) -> npt.NDArray[np.int64]:
        """The ``(n, 2)`` offset/length array (Slideflow's ``TFRecord.index``)."""
        self._open()
        assert self._index is not None
        return self._index.array

    def _locate(self, i: int) -> tuple[int, int, int]:
        """``(record number, start, end of payload)`` of record ``i``, checked against the file."""
        buf = self._open()
        n = len(self._offs)
        if i < 0:
            i += n
        if not 0 <= i < n:
            if n == 0:
                raise EmptyTFRecordsError(f"{self.path} has no records")
            raise InvalidTFRecordIndex(f"record {i} is out of range (file has {n})", path=self.path)
        off = self._offs[i]
        ln = self._lens[i]
        if off < 0 or ln < 16 or off + ln > self._size:
            raise self._lie(i, off, f"it spans bytes {off}..{off + ln} of a {self._size}-byte file")
        try:
            length = read_header(buf, off)
        except CorruptRecordError:
            raise self._lie(i, off, "no record starts there (length CRC mismatch)") from None
        if length + 16 != ln:
            raise self._lie(i, off, f"the index says {ln} bytes, the record header {length + 16}")
        end = off + ln - 4
        if self.verify and not self._checked[i]:
            check_payload(self._view, off + 12, end, path=self.path, record=i)
            self._checked[i] = 1
        return i, off + 12, end

    def _span(self, i: int) -> tuple[int, Any, int, int]:
        """``(record number, buffer, start, end)`` of record ``i``'s payload, checked."""
        if self._blocks is None:
            i, start, end = self._locate(i)
            return i, self._buf, start, end
        n = len(self._offs)
        if i < 0:
            i += n
        if not 0 <= i < n:
            if n == 0:  # as for a local file
                raise EmptyTFRecordsError(f"{self.path} has no records")
            raise InvalidTFRecordIndex(f"record {i} is out of range (file has {n})", path=self.path)
        buf, start, end = self._blocks.span(i)
        return i, buf, start, end

    def read_raw(self, i: int) -> bytes:
        """The raw payload of record ``i`` (a serialized Example)."""
        self._open()
        _, buf, start, end = self._span(i)
        return bytes(buf[start:end])

    def _lie(self, i: int, off: int, what: str) -> InvalidTFRecordIndex:
        return InvalidTFRecordIndex(
            f"index does not match {self.path}: record {i} at byte {off}: {what}; "
            "delete the index to rebuild it",
            path=self._index_name,
        )

    @overload
    def __getitem__(self, key: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, key: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, key: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        if not isinstance(key, (int, np.integer)):
            raise TypeError(f"TFRecord indices must be int or slice, not {type(key).__name__}")
        self._open()
        i, buf, start, end = self._span(int(key))
        return record_to_dict(buf, path=self.path, record=i, start=start, end=end)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"<TFRecord(path='{self.path}')>"

    def get_size(self) -> int:
        """Size of the file in bytes."""
        if self._remote is not None:
            return self._remote.size
        return os.path.getsize(self.path)

    # ------------------------------------------------------------------ format

    def _first(self) -> dict[str, Any]:
        if len(self) == 0:
            raise EmptyTFRecordsError(f"{self.path} has no records")
        return self[0]

    @property
    def fields(self) -> list[str]:
        """Feature names of the first record, in their stored order."""
        if self._fields is None:
            self._fields = list(self._first())
        return self._fields

    @property
    def img_format(self) -> str | None:
        """``'jpeg'`` or ``'png'`` (etc.) of the first record's image; ``None`` without one."""
        if self._img_format is None:
            first = self._first()
            for key in IMAGE_KEYS:
                value = first.get(key)
                if isinstance(value, bytes):
                    self._img_format = detect_image_format(value)
                    break
        return self._img_format

    @property
    def locations(self) -> list[tuple[int, int]] | None:
        """``(loc_x, loc_y)`` of every record, or ``None`` when the records have none.

        An index without locations (an older one) is completed by reading
        the records' ``loc_x``/``loc_y`` once; the index beside the file is
        then rewritten with them (atomically; in memory only where it cannot
        be written, or for an index given explicitly).
        """
        self._open()
        index = self._index
        assert index is not None
        if index.locations is None and not self._locations_read:
            index = self._add_locations(index)
        if index.locations is None:
            return None
        return [(x, y) for x, y in index.locations.tolist()]

    def _add_locations(self, index: TFRecordIndex) -> TFRecordIndex:
        self._locations_read = True
        if self._blocks is not None:
            locs = self._blocks.locations()
            if locs is not None:
                index = TFRecordIndex(index.array, locs, index.path, index.tfrecord_stat)
                self._index = index
            return index
        locs = _read_locations(self._view, self._offs, self._lens, self.path)
        if locs is None:
            return index
        index = TFRecordIndex(index.array, locs, index.path, index.tfrecord_stat)
        self._index = index
        self._save_locations(index)
        return index

    def _save_locations(self, index: TFRecordIndex) -> None:
        """Rewrite the automatic npz index with the locations found (atomically)."""
        out = index.path
        if self._index_arg is not None or not self.create_index or out is None:
            return
        if not out.name.endswith(".npz"):
            return
        try:
            save_index(index, out, tfrecord=self.path)
        except OSError as exc:
            log.info(
                "%s: cannot add locations to index %s (%s); using them in memory",
                self.path,
                out,
                exc,
            )
        else:
            log.debug("%s: added tile locations to index %s", self.path, out)

    def _xy_map(self) -> dict[tuple[int, int], int]:
        if self._xy is None:
            locs = self.locations
            if locs is None:
                raise RecordNotFoundError(
                    "the records have no loc_x/loc_y locations", path=self.path
                )
            xy: dict[tuple[int, int], int] = {}
            for i, loc in enumerate(locs):
                xy.setdefault(loc, i)  # the first record wins for duplicates
            self._xy = xy
        return self._xy

    def index_of(self, x: int, y: int) -> int:
        """Record number of the tile at ``(x, y)`` (O(1) after the first call)."""
        xy = self._xy_map()
        try:
            return xy[(x, y)]
        except KeyError:
            raise RecordNotFoundError(f"no record at location ({x}, {y})", path=self.path) from None

    def get_record_by_xy(
        self, x: int, y: int, decode: bool = False
    ) -> tuple[str, bytes | npt.NDArray[np.uint8]]:
        """``(slide, image)`` of the tile at ``(x, y)``; ``decode=True`` decodes the image.

        The record's own ``loc_x``/``loc_y`` are checked against the index.

        Raises
        ------
        RecordNotFoundError
            No record has that location (Slideflow returns ``(False, False)``).
        InvalidTFRecordIndex
            The index's locations do not match the records.
        """
        xy = self._xy if self._xy is not None else self._xy_map()
        i = xy.get((x, y))
        if i is None:
            raise RecordNotFoundError(f"no record at location ({x}, {y})", path=self.path)
        _, buf, start, end = self._span(i)
        try:
            rec = TILES.parse(buf, start, end)
        except IndexError:
            rec = None
        if rec is None:  # not tile-shaped, or malformed: the generic parser decides
            rec = parse_at(buf, start, end, path=self.path, record=i, fast=False)
        if rec.get("loc_x") != x or rec.get("loc_y") != y:
            at = (rec.get("loc_x"), rec.get("loc_y"))
            raise self._lie(i, self._offs[i], f"the record is at {at}, not ({x}, {y})")
        image = rec.get("image_raw")
        if not isinstance(image, bytes):
            raise RecordNotFoundError("the record has no image_raw", path=self.path)
        slide = rec.get("slide", b"")
        if isinstance(slide, bytes):
            try:
                slide = slide.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorruptRecordError(
                    f"slide name is not UTF-8 ({exc})", path=self.path, record=i
                ) from None
        return slide, decode_image(image) if decode else image


def _read_locations(
    view: memoryview, offs: list[int], lens: list[int], path: str
) -> npt.NDArray[np.int64] | None:
    """Every record's ``(loc_x, loc_y)``, or ``None`` as soon as one has none."""
    out = np.empty((len(offs), 2), np.int64)
    for i, (off, ln) in enumerate(zip(offs, lens, strict=True)):
        loc = record_location(view, off + 12, off + ln - 4, path, i, off)
        if loc is None:
            return None
        out[i] = loc
    return out


_EMPTY = TFRecordIndex(np.zeros((0, 2), np.int64), None, None)
