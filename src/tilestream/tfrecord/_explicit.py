"""Indexes a caller gives for a TFRecord: read, and checked against the file before use.

:func:`explicit_index` reads what the caller gave (an ``(n, 2)`` array or an
index file) and :func:`check_explicit` checks it as the automatic index is
checked, for a local file (its buffer) and for an object in a store (its
header bytes fetched by ranged reads) alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tilestream.errors import CorruptRecordError, InvalidTFRecordIndex
from tilestream.tfrecord.framing import read_header
from tilestream.tfrecord.index import TFRecordIndex, read_index_file

__all__ = ["EXPLICIT_SAMPLES", "check_explicit", "explicit_index"]


#: Record headers an explicit index is checked against on opening (spread over the file).
EXPLICIT_SAMPLES = 17


def explicit_index(
    given: str | os.PathLike[str] | npt.NDArray[Any], name: str, *, size: int
) -> tuple[TFRecordIndex, str]:
    """The index a caller gave for TFRecord ``name`` of ``size`` bytes, and what to call it.

    ``given`` is an ``(n, 2)`` array of offsets and lengths or an index file.

    Raises
    ------
    InvalidTFRecordIndex
        An array of another shape, or an index file that cannot be read (naming both files).
    """
    if isinstance(given, np.ndarray):
        arr = np.asarray(given, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidTFRecordIndex(
                f"the index array given for {name} has shape {arr.shape}, not (n, 2)"
            )
        return TFRecordIndex(arr, None, None), "the index array given"
    try:
        index = read_index_file(given, max_records=size // 16)
    except InvalidTFRecordIndex as exc:  # name the TFRecord too
        raise InvalidTFRecordIndex(
            f"index {os.fspath(given)} given for {name} cannot be used: {exc.message}"
        ) from None
    return index, f"index {os.fspath(given)}"


def check_explicit(
    arr: npt.NDArray[np.int64],
    size: int,
    headers: Callable[[Sequence[int]], Sequence[bytes]],
    *,
    what: str,
    name: str,
) -> None:
    """Check an explicit index as the automatic one is checked: count, size, framing.

    The records must tile the (uncompressed) file of ``size`` bytes exactly,
    and the headers of the first, the last and records spread between
    (:data:`EXPLICIT_SAMPLES` in all; ``headers(offsets)`` returns the
    12 header bytes at each offset) must declare the lengths the index gives
    them (each header is checked again when its record is read).

    Raises
    ------
    InvalidTFRecordIndex
        Naming the index (``what``) and the TFRecord (``name``).
    """
    problem = _explicit_problem(arr, size, headers)
    if problem is not None:
        raise InvalidTFRecordIndex(f"{what} does not describe {name}: {problem}")


def _explicit_problem(
    arr: npt.NDArray[np.int64], size: int, headers: Callable[[Sequence[int]], Sequence[bytes]]
) -> str | None:
    if len(arr) == 0:
        return None if size == 0 else f"it is empty but the file has {size} bytes"
    offs, lens = arr[:, 0], arr[:, 1]
    if offs[0] != 0 or np.any(lens < 16) or np.any(offs[1:] != offs[:-1] + lens[:-1]):
        return f"its {len(arr)} records do not follow each other from byte 0"
    if int(offs[-1] + lens[-1]) != size:
        return f"its {len(arr)} records cover {int(offs[-1] + lens[-1])} bytes, the file has {size}"
    # Headers at a spread of offsets: reading them all would touch every page of a large
    # file (or send a request per record) before the first record.
    picked = np.unique(np.linspace(0, len(arr) - 1, min(len(arr), EXPLICIT_SAMPLES)).astype(int))
    found = headers([int(offs[i]) for i in picked])
    for i, head in zip(picked.tolist(), found, strict=True):
        off, ln = int(offs[i]), int(lens[i])
        try:
            length = read_header(head, 0)
        except CorruptRecordError:
            return f"record {i} at byte {off}: no record starts there (length CRC mismatch)"
        if length + 16 != ln:
            return f"record {i} at byte {off}: the index says {ln} bytes, the record header {length + 16}"
    return None
