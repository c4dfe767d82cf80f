"""Whether an index still describes its TFRecord, and how many records a TFRecord can hold.

Used by :mod:`.index` (which exports both functions) before an index file
is trusted: an index whose arrays declare more rows than
:func:`max_records` allows is rejected unread, and :func:`index_staleness`
tells why an index is stale.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from tilestream.tfrecord._npyfile import ArrayLimit, BadArrayFile, read_npz
from tilestream.tfrecord.framing import FRAME_OVERHEAD, HEADER_SIZE, detect_compression

if TYPE_CHECKING:
    from tilestream.tfrecord.index import TFRecordIndex

__all__ = ["INFLATE_RATIO", "index_staleness", "max_records"]

#: A deflate stream decodes to at most 1032 times its size (zlib's technical notes).
INFLATE_RATIO = 1032


def max_records(tfrecord: str | os.PathLike[str]) -> int:
    """The most records ``tfrecord`` can hold: each takes 16 bytes of framing at least.

    A compressed file's bytes can decode to at most 1032 times as many.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tfrecords"
    >>> _ = path.write_bytes(bytes(100))
    >>> max_records(path)
    6
    """
    with open(tfrecord, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        compressed = size > 0 and detect_compression(f.read(HEADER_SIZE)) is not None
    return (size * INFLATE_RATIO if compressed else size) // FRAME_OVERHEAD


def _stored_stat(index: TFRecordIndex) -> tuple[int, int] | None:
    path = index.path
    if index.tfrecord_stat is not None or path is None or not path.name.endswith(".npz"):
        return index.tfrecord_stat
    try:  # an index made by hand with a path: read the two numbers alone
        z = read_npz(
            path, {"tfrecord_size": ArrayLimit(1, 0), "tfrecord_mtime_ns": ArrayLimit(1, 0)}
        )
    except (BadArrayFile, OSError):
        return None
    if "tfrecord_size" in z and "tfrecord_mtime_ns" in z:
        return int(z["tfrecord_size"].item()), int(z["tfrecord_mtime_ns"].item())
    return None


def index_staleness(tfrecord: str | os.PathLike[str], index: TFRecordIndex) -> str | None:
    """Why ``index`` does not describe ``tfrecord`` (``None`` when it does).

    Checks the recorded size and mtime (tilestream indexes), that the
    TFRecord is not newer than an index without them, and that the records
    tile a plain file exactly (first at 0, each where the previous ends, the
    last ending at the file size: a changed record count shows here).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.tfrecord import TFRecordWriter, serialized_record
    >>> from tilestream.tfrecord.index import create_index, read_index_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tfrecords"
    >>> with TFRecordWriter(path, index=False) as w:
    ...     w.write(serialized_record("t", b"img", 512, 256))
    >>> index = create_index(path)
    >>> index_staleness(path, index) is None
    True
    >>> _ = path.write_bytes(path.read_bytes() * 2)
    >>> index_staleness(path, read_index_file(index.path))
    'the TFRecord is 180 bytes, the index was made for 90'
    """
    st = os.stat(tfrecord)
    path = index.path
    stored = _stored_stat(index)
    if stored is not None:
        if stored[0] != st.st_size:
            return f"the TFRecord is {st.st_size} bytes, the index was made for {stored[0]}"
        if stored[1] != st.st_mtime_ns:
            return "the TFRecord was modified after its index was made"
    elif path is not None and os.stat(path).st_mtime_ns < st.st_mtime_ns:
        return "the TFRecord is newer than its index"
    arr = index.array
    with open(tfrecord, "rb") as f:
        compressed = detect_compression(f.read(HEADER_SIZE)) is not None
    if compressed:
        return None if stored is not None else "compressed TFRecord without a recorded size"
    if len(arr) == 0:
        return None if st.st_size == 0 else "the index is empty but the TFRecord is not"
    offs, lens = arr[:, 0], arr[:, 1]
    if offs[0] != 0 or np.any(lens < 16) or np.any(offs[1:] != offs[:-1] + lens[:-1]):
        return "the index's records do not follow each other"
    if int(offs[-1] + lens[-1]) != st.st_size:
        return (
            f"the index covers {int(offs[-1] + lens[-1])} bytes in {len(arr)} records, "
            f"the TFRecord has {st.st_size}"
        )
    return None
