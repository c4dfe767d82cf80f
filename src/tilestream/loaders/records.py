"""Random access to the records of uncompressed TFRecord files, by index offsets.

The hot path of every loader: one ``os.pread`` per record (no Python file
object, no seek), the framing and both CRCs checked, errors naming the file,
the record number and its byte offset.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from tilestream.errors import (
    EmptyTFRecordsError,
    InvalidTFRecordIndex,
    TFRecordError,
    UnsupportedRecordError,
)
from tilestream.tfrecord.framing import HEADER_SIZE, detect_compression, payload_of
from tilestream.tfrecord.index import load_index
from tilestream.tfrecord.remote import RemoteObject
from tilestream.tfrecord.remote_index import remote_index, tiling_problem

__all__ = [
    "FileHandles",
    "file_size",
    "frame_sizes",
    "load_offsets",
    "read_record",
    "read_remote_record",
    "remote_offsets",
]

log = logging.getLogger(__name__)


def file_size(path: str) -> int:
    """Size of an existing, non-empty, uncompressed TFRecord file, or a clear error."""
    return _check_file(path)


def _check_file(path: str) -> int:
    """Size of an existing, uncompressed TFRecord file, or a clear error."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise TFRecordError("TFRecord file does not exist", path=path) from None
    except OSError as exc:
        raise TFRecordError(f"cannot read TFRecord file: {exc}", path=path) from exc
    if size == 0:
        raise EmptyTFRecordsError("TFRecord file is empty (0 bytes)", path=path)
    with open(path, "rb") as f:
        compression = detect_compression(f.read(HEADER_SIZE))
    if compression is not None:
        raise UnsupportedRecordError(
            "the loaders need uncompressed TFRecords for random access, and this one is "
            f"{compression}-compressed; decompress it first (e.g. "
            "tilestream.tfrecord.iter_records + TFRecordWriter)",
            path=path,
        )
    return size


def load_offsets(path: str, index: Any = None) -> np.ndarray:
    """Byte offsets of the records of ``path``.

    Parameters
    ----------
    path
        An uncompressed TFRecord file.
    index
        Offsets (an array, or an ``(n, 2)`` offset/length array), an index file
        (any format :func:`tilestream.tfrecord.read_index_file` reads; it must
        be up to date), or None: the index beside the file, created or rebuilt
        when missing or stale (:func:`tilestream.tfrecord.load_index`).

    Raises
    ------
    TFRecordError
        The file does not exist or cannot be read.
    EmptyTFRecordsError
        The file holds no records.
    InvalidTFRecordIndex
        The index does not fit the file.
    """
    size = _check_file(path)
    if isinstance(index, np.ndarray):
        offsets = np.asarray(index, dtype=np.int64)
        offsets = offsets[:, 0] if offsets.ndim == 2 else offsets
    elif index is not None:
        offsets = np.asarray(
            load_index(path, index_path=index, rebuild=False).offsets, dtype=np.int64
        )
    else:
        offsets = np.asarray(load_index(path).offsets, dtype=np.int64)
    _validate(path, offsets, size)
    if len(offsets) == 0:
        raise EmptyTFRecordsError("TFRecord file holds no records", path=path)
    return offsets


def remote_offsets(obj: RemoteObject, index: Any = None) -> tuple[np.ndarray, int]:
    """Record offsets of a remote TFRecord and its size, as :func:`load_offsets` gives them.

    The index is the one cached for the object's version, else the one
    beside it, else a scan (:func:`tilestream.tfrecord.remote_index.remote_index`);
    ``index`` may give offsets or a local index file instead.

    Raises
    ------
    StorageNotFoundError
        The object does not exist (naming its URL; a ``FileNotFoundError``).
    EmptyTFRecordsError, UnsupportedRecordError, InvalidTFRecordIndex
        As for a local file.
    """
    url = obj.url
    size = obj.size
    if size == 0:
        raise EmptyTFRecordsError("TFRecord file is empty (0 bytes)", path=url)
    if isinstance(index, np.ndarray):
        offsets = np.asarray(index, dtype=np.int64)
        offsets = offsets[:, 0] if offsets.ndim == 2 else offsets
    else:
        found = remote_index(obj, index, name=url)
        if tiling_problem(found, size) is not None:  # records of a decompressed stream
            raise UnsupportedRecordError(
                "the loaders need uncompressed TFRecords for random access, and this one is "
                "compressed; decompress it first (e.g. tilestream.tfrecord.iter_records + "
                "TFRecordWriter)",
                path=url,
            )
        offsets = np.asarray(found.offsets, dtype=np.int64)
    _validate(url, offsets, size)
    if len(offsets) == 0:
        raise EmptyTFRecordsError("TFRecord file holds no records", path=url)
    return offsets, size


def _validate(path: str, offsets: np.ndarray, size: int) -> None:
    if offsets.ndim != 1 or (len(offsets) and (offsets[0] != 0 or np.any(np.diff(offsets) <= 12))):
        raise InvalidTFRecordIndex("index offsets do not describe this file", path=path)
    if len(offsets) and offsets[-1] >= size:
        raise InvalidTFRecordIndex(
            f"index points past the end of the file ({offsets[-1]} >= {size} bytes)", path=path
        )


class FileHandles:
    """A small LRU of open file descriptors, so thousands of files stay cheap."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._fds: OrderedDict[str, int] = OrderedDict()

    def get(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        if len(self._fds) >= self.capacity:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise TFRecordError(f"cannot open TFRecord file: {exc}", path=path) from exc
        self._fds[path] = fd
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def frame_sizes(offsets: np.ndarray, file_size: int) -> np.ndarray:
    """Bytes each record's frame spans (header, payload, footer), from its offset."""
    return np.diff(np.append(offsets, file_size))


def read_record(
    fd: int, path: str, record: int, offset: int, nbytes: int, *, verify: bool = True
) -> bytes:
    """The payload of the record at ``offset`` spanning ``nbytes`` (framing and CRCs checked).

    One ``os.pread`` per record; the frame is checked by
    :func:`tilestream.tfrecord.framing.payload_of`, whose errors name the
    file, the record number and its byte offset.
    """
    return payload_of(
        os.pread(fd, nbytes, offset), path=path, record=record, offset=offset, verify=verify
    )


def read_remote_record(
    obj: RemoteObject, record: int, offset: int, nbytes: int, *, verify: bool = True
) -> bytes:
    """The payload of one record of a remote TFRecord: one ranged request, checked like a local one."""
    (data,) = obj.read_frames([(offset, nbytes)], first_record=record, verify=verify)
    return data
