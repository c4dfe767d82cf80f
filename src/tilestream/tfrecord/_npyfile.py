"""Defensive reading of ``.npy`` / ``.npz`` index files.

``np.load`` trusts a file's header: an ``.npy`` header declaring a
``(2**28, 2)`` array makes it allocate 4 GiB before it finds the data
missing, and a cut ``.npz`` raises a bare :class:`zipfile.BadZipFile`. Here
each member's header is read first and its shape and dtype checked against
what the caller can need (:class:`ArrayLimit`); only then are exactly the
declared bytes read (never more than the member actually yields). Every
problem is a :class:`BadArrayFile` (a ``ValueError``) with a short reason.

Examples
--------
>>> import io, numpy as np
>>> buf = io.BytesIO()
>>> np.save(buf, np.arange(4).reshape(2, 2))
>>> _ = buf.seek(0)
>>> read_npy(buf, ArrayLimit(rows=2, cols=2)).tolist()
[[0, 1], [2, 3]]
>>> _ = buf.seek(0)
>>> read_npy(buf, ArrayLimit(rows=1, cols=2))
Traceback (most recent call last):
...
tilestream.tfrecord._npyfile.BadArrayFile: array of shape (2, 2) is larger than the 1 rows this TFRecord could need
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npformat

__all__ = ["ArrayLimit", "BadArrayFile", "read_npy", "read_npz"]

#: Errors that reading a damaged file can raise (zlib/zip/npy/struct/IO).
READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,  # a zip compression method Python lacks
    RuntimeError,  # an encrypted zip member
    UnicodeDecodeError,
)


class BadArrayFile(ValueError):
    """An ``.npy``/``.npz`` file (or member) is damaged or implausible."""


@dataclass(frozen=True)
class ArrayLimit:
    """The largest array a member may declare: ``rows`` by ``cols`` (``cols=0``: a scalar)."""

    rows: int
    cols: int


def read_npy(fp: IO[bytes], limit: ArrayLimit) -> npt.NDArray[Any]:
    """Read one ``.npy`` stream after checking its header against ``limit``."""
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npformat.read_array_header_2_0(fp)
    else:  # pragma: no cover - read_magic accepts only these
        raise BadArrayFile(f"unknown .npy version {version}")
    if dtype.hasobject or dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise BadArrayFile(f"array has dtype {dtype}, not a number")
    count = math.prod(shape)
    if limit.cols == 0:
        if count != 1 or len(shape) > 1:
            raise BadArrayFile(f"array of shape {shape} where one number belongs")
    elif len(shape) > 2 or (len(shape) == 2 and shape[1] != limit.cols):
        raise BadArrayFile(f"array of shape {shape}, not (n, {limit.cols})")
    elif count > limit.rows * limit.cols:
        raise BadArrayFile(
            f"array of shape {shape} is larger than the {limit.rows} rows this TFRecord could need"
        )
    want = count * dtype.itemsize
    data = fp.read(want)  # bounded by the checked shape
    if len(data) != want:
        raise BadArrayFile(f"array data cut short ({len(data)} of {want} bytes)")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npz(
    path: str | os.PathLike[str], limits: Mapping[str, ArrayLimit]
) -> dict[str, npt.NDArray[Any]]:
    """The members of an ``.npz`` named in ``limits`` that it holds, each checked first.

    Members not named are not read.

    Raises
    ------
    BadArrayFile
        The archive or a member is damaged, or a member is larger than its limit.
    """
    out: dict[str, npt.NDArray[Any]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for key, limit in limits.items():
                member = key + ".npy"
                if member not in names:
                    continue
                with zf.open(member) as fp:
                    out[key] = read_npy(fp, limit)
    except BadArrayFile:
        raise
    except READ_ERRORS as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise BadArrayFile(f"{type(exc).__name__}: {exc}") from None
    return out
