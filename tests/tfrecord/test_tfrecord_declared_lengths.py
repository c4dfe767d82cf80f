"""A record header's length is a promise: memory follows the bytes, not the promise.

A GZIP stream whose first record declares 2 GiB while the stream decodes to
far less, an uncompressed file object declaring a length beyond its end, a
pipe doing the same: the reader raises
:class:`~tilestream.errors.TruncatedRecordError` (or stops, with
``allow_truncated``) having allocated about what the stream really held,
in time linear in it. Real records larger than the read buffer still read
back intact, CRC-checked. The tests reading a file by name run once per ``storage`` kind
(``local``; ``s3`` and ``http`` read the same bytes from SeaweedFS).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _remote import Remote
from tilestream.errors import CorruptRecordError, TruncatedRecordError
from tilestream.tfrecord import frame, iter_records, masked_crc32c

GIB2 = 2**31


def _header(length: int) -> bytes:
    head = struct.pack("<Q", length)
    return head + struct.pack("<I", masked_crc32c(head))


def _gzip_claim(path: Path, declared: int, zeros: int) -> Path:
    """A GZIP TFRecord: one header declaring ``declared`` bytes, then ``zeros`` zero bytes."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = [c.compress(_header(declared))]
    block = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(c.compress(block))
    parts.append(c.compress(bytes(zeros & ((1 << 20) - 1))))
    parts.append(c.flush())
    path.write_bytes(b"".join(parts))
    return path


def _peak(fn: Any) -> tuple[Any, int, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        try:
            out = fn()
        except (TruncatedRecordError, CorruptRecordError) as exc:
            out = exc
        return out, tracemalloc.get_traced_memory()[1], time.perf_counter() - t0
    finally:
        tracemalloc.stop()


def test_gzip_declaring_2gib_with_little_data_fails_fast(tmp_path: Path, storage: Remote) -> None:
    path = _gzip_claim(tmp_path / "a.tfrecord.gz", GIB2, 1000)
    name = storage.name(path)
    err, peak, took = _peak(lambda: list(iter_records(name, **storage.kw)))
    assert isinstance(err, TruncatedRecordError) and err.record == 0
    assert peak < 16 << 20 and took < 2, (peak, took)


def test_gzip_memory_follows_the_decoded_bytes_not_the_declared(
    tmp_path: Path, storage: Remote
) -> None:
    real = 48 << 20
    path = _gzip_claim(tmp_path / "a.tfrecord.gz", GIB2, real)
    assert path.stat().st_size < 1 << 20
    name = storage.name(path)
    err, peak, took = _peak(lambda: list(iter_records(name, **storage.kw)))
    assert isinstance(err, TruncatedRecordError) and took < 30
    assert f"{real + 12} of {GIB2 + 16} bytes present" in str(err)
    assert peak < real + (20 << 20), peak  # the bytes held, one piece of slack
    it = iter_records(name, **storage.kw, allow_truncated=True)
    assert list(it) == [] and it.truncated_at == 0


def test_a_file_object_declaring_past_its_end_fails_before_reading(tmp_path: Path) -> None:
    data = frame(b"ok") + _header(GIB2) + bytes(1 << 20)
    err, peak, _ = _peak(lambda: list(iter_records(io.BytesIO(data))))
    assert isinstance(err, TruncatedRecordError) and err.record == 1
    assert "declares 2147483648 data bytes" in str(err)
    assert peak < 8 << 20, peak
    f = io.BytesIO(b"junk" + data)
    f.seek(4)  # read from the current position: the size is what follows it
    it = iter_records(f, allow_truncated=True)
    assert list(it) == [b"ok"] and it.truncated_at == 18


def _pipe(data: bytes) -> Iterator[Any]:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(data)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    with os.fdopen(r, "rb") as f:
        yield f
    t.join(10)


def test_a_pipe_declaring_past_its_end_holds_only_what_arrived() -> None:
    data = frame(b"ok") + _header(GIB2) + bytes(3 << 20)
    for f in _pipe(data):
        err, peak, _ = _peak(lambda f=f: list(iter_records(f)))
        assert isinstance(err, TruncatedRecordError) and err.record == 1
        assert peak < 24 << 20, peak


@pytest.mark.parametrize("compression", ["gzip", "zlib", None])
def test_records_larger_than_the_buffer_read_back(
    tmp_path: Path, storage: Remote, compression: str | None
) -> None:
    big = [os.urandom(n) for n in (9 << 20, 5, (4 << 20) + 3, 1 << 20)]
    raw = b"".join(frame(p) for p in big)
    data = {
        "gzip": gzip.compress(raw),
        "zlib": zlib.compress(raw),
        None: raw,
    }[compression]
    assert list(iter_records(io.BytesIO(data))) == big
    path = tmp_path / "a.tfrecords"
    path.write_bytes(data)
    name = storage.name(path)
    assert list(iter_records(name, **storage.kw)) == big
    for f in _pipe(data):
        assert list(iter_records(f)) == big


def test_a_corrupt_large_record_is_reported() -> None:
    raw = bytearray(frame(b"a") + frame(os.urandom(9 << 20)))
    raw[-100] ^= 1
    with pytest.raises(CorruptRecordError, match="data CRC") as info:
        list(iter_records(io.BytesIO(gzip.compress(bytes(raw)))))
    assert info.value.record == 1 and info.value.offset == 17
    assert len(list(iter_records(io.BytesIO(gzip.compress(bytes(raw))), verify=False))) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.timeout(60)  # a reader that opens the pipe twice waits forever
def test_a_named_pipe_is_read_not_judged_by_its_zero_size(tmp_path: Path) -> None:
    fifo = tmp_path / "f.tfrecords"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(frame(b"a") + frame(b"bb") + _header(GIB2) + bytes(100))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    it = iter_records(fifo, allow_truncated=True)
    assert list(it) == [b"a", b"bb"] and it.truncated_at == 35
    t.join(10)
