"""Slideflow's ``sf.io`` TFRecord functions, same names and semantics, without TensorFlow.

Differences from Slideflow, all in the direction of failing clearly: a
corrupt file raises our :mod:`tilestream.errors` instead of logging and
returning ``0``; a location that is not in the file raises
:class:`~tilestream.errors.RecordNotFoundError` instead of returning
``(False, False)``; an index is checked against its TFRecord before use.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord import TFRecordWriter, serialized_record
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
>>> with TFRecordWriter(path, index=False) as w:
...     w.write(serialized_record("s", b"\\x89PNG\\r\\n\\x1a\\n...", 5, 6))
>>> detect_tfrecord_format(path)
(['image_raw', 'slide', 'loc_x', 'loc_y'], 'png')
>>> get_tfrecord_length(path), get_locations_from_tfrecord(path)
(1, [(5, 6)])
>>> get_tfrecord_by_index(path, 0)["slide"]
's'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tilestream.errors import EmptyTFRecordsError, InvalidTFRecordIndex, RecordNotFoundError
from tilestream.tfrecord._decode import decode_example
from tilestream.tfrecord.example import encode_example
from tilestream.tfrecord.feature import Feature
from tilestream.tfrecord.image import decode_image, detect_image_format
from tilestream.tfrecord.index import (
    find_index,
    load_index,
    max_records,
    read_index_file,
    scan_index,
)
from tilestream.tfrecord.reader import iter_records
from tilestream.tfrecord.remote import RemoteObject, local_path, remote_name
from tilestream.tfrecord.remote_index import remote_index
from tilestream.tfrecord.tfrecord_file import IMAGE_KEYS, TFRecord, record_to_dict

__all__ = [
    "decode_image",
    "detect_tfrecord_format",
    "get_locations_from_tfrecord",
    "get_tfrecord_by_index",
    "get_tfrecord_by_location",
    "get_tfrecord_length",
    "read_and_return_record",
    "tfrecord_has_locations",
]

PathLike = str | os.PathLike[str]
Options = Mapping[str, Any] | None


def _remote(tfr: PathLike, storage_options: Options) -> RemoteObject | None:
    """The remote object a URL names (``None`` for a local path)."""
    if remote_name(tfr) is None:
        return None
    return RemoteObject.open(tfr, storage_options)


def _size(tfr: PathLike, storage_options: Options) -> int:
    obj = _remote(tfr, storage_options)
    return os.path.getsize(local_path(tfr)) if obj is None else obj.size


def detect_tfrecord_format(
    tfr: PathLike, *, storage_options: Options = None
) -> tuple[list[str], str | None] | tuple[None, None]:
    """Feature names and image format of a TFRecord, from its first record.

    Every function here takes a path or a URL (``s3://``, ``gs://``,
    ``http(s)://``, ``file://``) with ``storage_options``.

    Returns
    -------
    tuple
        ``(fields, img_format)``: the feature names of the first record and
        ``'jpeg'``/``'png'``/... of its ``image_raw`` (or ``image/encoded``),
        ``None`` without an image; ``(None, None)`` for an empty file.
    """
    if _size(tfr, storage_options) == 0:
        return None, None
    it = iter_records(tfr, storage_options=storage_options)
    try:
        first = next(iter(it), None)
    finally:
        it.close()
    if first is None:
        return None, None
    record = record_to_dict(first, path=os.fspath(tfr), record=0)
    img_format = None
    for key in IMAGE_KEYS:
        value = record.get(key)
        if isinstance(value, bytes):
            img_format = detect_image_format(value)
            break
    return list(record), img_format


def get_tfrecord_length(tfrecord: PathLike, *, storage_options: Options = None) -> int:
    """Number of records: from a fresh index when there is one, else by scanning the framing."""
    obj = _remote(tfrecord, storage_options)
    if obj is not None:
        return 0 if obj.size == 0 else len(remote_index(obj, locations=False))
    tfrecord = local_path(tfrecord)
    if os.path.getsize(tfrecord) == 0:
        return 0
    if find_index(tfrecord) is not None:
        return len(load_index(tfrecord, write=False, locations=False))
    return len(scan_index(tfrecord, locations=False))


def get_tfrecord_by_index(
    tfrecord: PathLike,
    index: int,
    compression_type: str | None = None,
    *,
    index_array: npt.NDArray[Any] | None = None,
    storage_options: Options = None,
) -> dict[str, Any]:
    """Read record number ``index`` as a dict (``slide`` str, ``image_raw`` bytes, ints int).

    Raises
    ------
    EmptyTFRecordsError
        The file is empty.
    InvalidTFRecordIndex
        ``index`` is out of range, or the index does not match the file.
    """
    del compression_type  # detected from the file
    if _size(tfrecord, storage_options) == 0:
        raise EmptyTFRecordsError(f"{os.fspath(tfrecord)} is empty")
    arr = index_array if index_array is not None else None
    tfr = TFRecord(tfrecord, arr, create_index=False, storage_options=storage_options)
    try:
        n = len(tfr)
        if not -n <= int(index) < n:
            raise InvalidTFRecordIndex(
                f"Index {index} is invalid for tfrecord {os.fspath(tfrecord)} (size: {n})",
                path=tfrecord,
            )
        return tfr[int(index)]
    finally:
        tfr.close()


def get_tfrecord_by_location(
    tfrecord: PathLike,
    location: tuple[int, int] | list[int],
    decode: bool = True,
    *,
    locations_array: list[tuple[int, int]] | None = None,
    index_array: npt.NDArray[Any] | None = None,
    storage_options: Options = None,
) -> tuple[str, bytes | npt.NDArray[np.uint8]]:
    """``(slide, image)`` of the tile at ``location``; the image decoded unless ``decode=False``.

    Raises
    ------
    IndexError
        ``location`` is not a pair of ints (Slideflow's check).
    RecordNotFoundError
        No record has that location.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.tfrecord import TFRecordWriter, serialized_record
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
    >>> with TFRecordWriter(path) as w:
    ...     w.write(serialized_record("s", b"jpeg bytes", 0, 512), location=(0, 512))
    >>> get_tfrecord_by_location(path, (0, 512), decode=False)
    ('s', b'jpeg bytes')
    """
    if isinstance(location, list):
        location = tuple(location)  # type: ignore[assignment]
    if (
        not isinstance(location, tuple)
        or len(location) != 2
        or not all(isinstance(v, (int, np.integer)) for v in location)
    ):
        raise IndexError(f"index must be a tuple of two ints. Got: {location}")
    x, y = int(location[0]), int(location[1])
    if locations_array is not None:
        try:
            i = list(map(tuple, locations_array)).index((x, y))
        except ValueError:
            raise RecordNotFoundError(f"no record at location ({x}, {y})", path=tfrecord) from None
        rec = get_tfrecord_by_index(
            tfrecord, i, index_array=index_array, storage_options=storage_options
        )
        image = rec["image_raw"]
        return rec["slide"], decode_image(image) if decode else image
    tfr = TFRecord(tfrecord, index_array, create_index=False, storage_options=storage_options)
    try:
        return tfr.get_record_by_xy(x, y, decode=decode)
    finally:
        tfr.close()


def get_locations_from_tfrecord(
    filename: PathLike, *, storage_options: Options = None
) -> list[tuple[int, int]]:
    """``(loc_x, loc_y)`` of every record, from the index when it has them."""
    if _remote(filename, storage_options) is not None:
        tfr = TFRecord(filename, create_index=False, storage_options=storage_options)
        if tfr.locations is not None:
            return tfr.locations
        return [(r["loc_x"], r["loc_y"]) for r in tfr]
    filename = local_path(filename)
    index = find_index(filename)
    if index is not None:
        idx = load_index(filename, write=False)
        if idx.locations is not None:
            return [(x, y) for x, y in idx.locations.tolist()]
    out: list[tuple[int, int]] = []
    for i, data in enumerate(iter_records(filename)):
        rec = record_to_dict(data, path=os.fspath(filename), record=i)
        out.append((rec["loc_x"], rec["loc_y"]))
    return out


def tfrecord_has_locations(
    filename: PathLike,
    check_x: bool = True,
    check_y: bool = False,
    *,
    storage_options: Options = None,
) -> bool:
    """Whether the records store ``loc_x`` (and, with ``check_y``, ``loc_y``)."""
    if _remote(filename, storage_options) is not None:
        if get_tfrecord_length(filename, storage_options=storage_options) == 0:
            raise EmptyTFRecordsError(f"{os.fspath(filename)} has no records")
        first = get_tfrecord_by_index(filename, 0, storage_options=storage_options)
        return ((not check_x) or "loc_x" in first) and ((not check_y) or "loc_y" in first)
    filename = local_path(filename)
    index = find_index(filename)
    if index is not None and index.name.endswith(".npz"):
        try:
            idx = read_index_file(index, max_records=max_records(filename))
        except InvalidTFRecordIndex:  # damaged: the records themselves tell
            idx = None
        if idx is not None and idx.locations is not None:
            return True
    if get_tfrecord_length(filename) == 0:
        raise EmptyTFRecordsError(f"{os.fspath(filename)} has no records")
    record = get_tfrecord_by_index(filename, 0)
    return ((not check_x) or "loc_x" in record) and ((not check_y) or "loc_y" in record)


def read_and_return_record(
    record: bytes,
    parser: Callable[[bytes], Mapping[str, Any]] | None = None,
    assign_slide: str | bytes | None = None,
) -> bytes:
    """Re-serialize a record, optionally under another slide name.

    As Slideflow's TensorFlow backend: the result is a serialized Example
    ready for :class:`~tilestream.tfrecord.TFRecordWriter`. Without a
    ``parser`` every feature is kept losslessly; with one, the features it
    returns are encoded (types inferred).

    Examples
    --------
    >>> from tilestream.tfrecord import serialized_record, parse_example
    >>> rec = serialized_record("old", b"img", 1, 2)
    >>> parse_example(read_and_return_record(rec, assign_slide="new"))["slide"]
    b'new'
    """
    if parser is None:
        features: dict[str, Any] = dict(decode_example(record))
    else:
        features = dict(parser(record))
    if assign_slide:
        name = assign_slide.encode("utf-8") if isinstance(assign_slide, str) else assign_slide
        features["slide"] = Feature.bytes_list([name])
    return encode_example(features)
