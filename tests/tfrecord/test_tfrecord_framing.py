"""Framing: reading and writing records, compression, and every kind of bad file.

The tests that read a file by name run once per ``storage`` kind: ``local``, and ``s3`` and
``http`` reading the same bytes from SeaweedFS (``storage.name(path)`` is then their URL).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from _remote import Remote
from tilestream.errors import (
    ConfigError,
    CorruptRecordError,
    TFRecordError,
    TruncatedRecordError,
)
from tilestream.tfrecord import TFRecordWriter, frame, iter_records, serialized_record
from tilestream.tfrecord._crc import crc32c, masked_crc32c
from tilestream.tfrecord.reader import RecordIterator

PAYLOADS = [b"", b"a", b"\r\n" * 50, bytes(range(256)) * 40, b"z" * 300_000]


def _write(path: Path, payloads: list[bytes], compression: str | None = None) -> Path:
    with TFRecordWriter(path, compression=compression, index=False) as w:
        for p in payloads:
            w.write(p)
    return path


def test_crc32c_known_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    # mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8, mod 2**32
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_frame_layout() -> None:
    f = frame(b"hello")
    assert len(f) == 5 + 16
    assert struct.unpack("<Q", f[:8])[0] == 5
    assert struct.unpack("<I", f[8:12])[0] == masked_crc32c(f[:8])
    assert f[12:17] == b"hello"
    assert struct.unpack("<I", f[17:])[0] == masked_crc32c(b"hello")


@pytest.mark.parametrize("compression", [None, "gzip", "zlib"])
def test_write_then_read_round_trip(
    tmp_path: Path, storage: Remote, compression: str | None
) -> None:
    path = _write(tmp_path / "r.tfrecord", PAYLOADS, compression)
    assert list(iter_records(storage.name(path), **storage.kw)) == PAYLOADS  # auto-detected
    assert list(iter_records(storage.name(path), compression=compression, **storage.kw)) == PAYLOADS
    with open(path, "rb") as f:
        assert list(iter_records(f)) == PAYLOADS
    if compression == "gzip":
        assert gzip.decompress(path.read_bytes()) == b"".join(frame(p) for p in PAYLOADS)
    elif compression == "zlib":
        assert zlib.decompress(path.read_bytes()) == b"".join(frame(p) for p in PAYLOADS)
    else:
        assert path.read_bytes() == b"".join(frame(p) for p in PAYLOADS)


def test_tensorflow_compression_spellings(tmp_path: Path, storage: Remote) -> None:
    path = _write(tmp_path / "r.tfrecord", [b"x"], "GZIP")
    assert list(iter_records(storage.name(path), compression="GZIP", **storage.kw)) == [b"x"]
    plain = _write(tmp_path / "p.tfrecord", [b"y"], "")
    assert list(iter_records(storage.name(plain), compression="", **storage.kw)) == [b"y"]
    with pytest.raises(ConfigError):
        iter_records(storage.name(plain), compression="bz2", **storage.kw)  # type: ignore[arg-type]


def test_small_chunks_exercise_the_refill_path() -> None:
    data = b"".join(frame(p) for p in PAYLOADS)
    it = RecordIterator(io.BytesIO(data), chunk_size=7)
    assert list(it) == PAYLOADS
    assert it.records == len(PAYLOADS)
    assert it.offset == len(data)


def test_record_length_that_looks_like_a_zlib_header_is_not_misdetected() -> None:
    payload = b"q" * 0x178  # length bytes 78 01 ... : a valid zlib header
    data = frame(payload)
    assert data[:2] == b"\x78\x01"
    assert list(iter_records(io.BytesIO(data))) == [payload]


def test_reading_from_the_current_position_of_a_file_object(tmp_path: Path) -> None:
    data = b"JUNKJUNK" + frame(b"one") + frame(b"two")
    f = io.BytesIO(data)
    f.seek(8)
    assert list(iter_records(f)) == [b"one", b"two"]
    assert not f.closed


def test_text_file_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="binary"):
        list(iter_records(io.StringIO("abc")))  # type: ignore[arg-type]


def test_empty_file_has_no_records(tmp_path: Path, storage: Remote) -> None:
    empty = tmp_path / "empty.tfrecords"
    empty.write_bytes(b"")
    assert list(iter_records(storage.name(empty), **storage.kw)) == []
    assert list(iter_records(io.BytesIO(b""))) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("source_kind", ["path", "fileobj"])
@pytest.mark.parametrize("cut", [1, 4, 5, 11, 15])
def test_truncated_last_record(tmp_path: Path, storage: Remote, source_kind: str, cut: int) -> None:
    data = frame(b"first") + frame(b"second record")
    path = tmp_path / "t.tfrecords"
    path.write_bytes(data[:-cut])
    src = path if source_kind == "path" else io.BytesIO(data[:-cut])
    with pytest.raises(TruncatedRecordError) as info:
        list(iter_records(storage.name(src) if source_kind == "path" else src, **storage.kw))
    err = info.value
    assert err.record == 1
    assert err.offset == 21
    if source_kind == "path":
        assert err.path == storage.name(path)
        assert storage.name(path) in str(err)


def test_truncated_inside_header(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "t.tfrecords"
    path.write_bytes(frame(b"first") + b"\x05\x00\x00")
    with pytest.raises(TruncatedRecordError, match="header") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert (info.value.record, info.value.offset) == (1, 21)


def test_allow_truncated_reads_intact_records_and_reports_where(
    tmp_path: Path, storage: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    data = frame(b"a") + frame(b"bb") + frame(b"ccc")
    path = tmp_path / "t.tfrecords"
    path.write_bytes(data[:-2])
    seen: list[TruncatedRecordError] = []
    with caplog.at_level(logging.WARNING, logger="tilestream.tfrecord.reader"):
        it = iter_records(
            storage.name(path), allow_truncated=True, on_truncated=seen.append, **storage.kw
        )
        assert list(it) == [b"a", b"bb"]
    assert it.truncated_at == 17 + 18
    assert it.records == 2
    assert isinstance(it.error, TruncatedRecordError)
    assert seen == [it.error]
    assert "t.tfrecords" in caplog.text
    assert "2 intact records" in caplog.text


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_truncated_compressed_stream(tmp_path: Path, storage: Remote, compression: str) -> None:
    path = _write(tmp_path / "c.tfrecord", [os.urandom(5000) for _ in range(10)], compression)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TruncatedRecordError) as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert info.value.path == storage.name(path)
    it = iter_records(storage.name(path), allow_truncated=True, **storage.kw)
    got = list(it)
    assert 0 < len(got) < 10
    assert it.truncated_at is not None


def test_corrupt_gzip_stream(tmp_path: Path, storage: Remote) -> None:
    path = _write(tmp_path / "c.tfrecord", [os.urandom(5000) for _ in range(10)], "gzip")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecordError) as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert info.value.path == storage.name(path)


def test_flipped_payload_byte_fails_data_crc(tmp_path: Path, storage: Remote) -> None:
    data = bytearray(frame(b"first") + frame(b"second"))
    data[21 + 12 + 2] ^= 0x10
    path = tmp_path / "f.tfrecords"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="data CRC") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert (info.value.record, info.value.offset, info.value.path) == (1, 21, storage.name(path))
    assert list(iter_records(storage.name(path), verify=False, **storage.kw))[1] == b"sesond"


def test_flipped_length_byte_fails_length_crc(tmp_path: Path, storage: Remote) -> None:
    data = bytearray(frame(b"first") + frame(b"second"))
    data[21] ^= 0x01
    path = tmp_path / "f.tfrecords"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="length CRC") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert (info.value.record, info.value.offset) == (1, 21)


def test_wrong_data_crc_field(tmp_path: Path) -> None:
    data = bytearray(frame(b"payload"))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="data CRC"):
        list(iter_records(io.BytesIO(bytes(data))))


def test_absurd_length_is_not_allocated(tmp_path: Path, storage: Remote) -> None:
    header = struct.pack("<Q", 2**62)
    data = header + struct.pack("<I", masked_crc32c(header)) + b"tiny"
    path = tmp_path / "huge.tfrecords"
    path.write_bytes(data)
    with pytest.raises(TruncatedRecordError, match="declares") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert info.value.record == 0
    # Unknown size (a stream): read what exists, then report truncation.
    with pytest.raises(TruncatedRecordError):
        list(iter_records(io.BytesIO(data)))
    gz = tmp_path / "huge.gz"
    gz.write_bytes(gzip.compress(data))
    with pytest.raises(TruncatedRecordError):
        list(iter_records(storage.name(gz), **storage.kw))


def test_absurd_length_without_crc_check(tmp_path: Path) -> None:
    data = struct.pack("<Q", 2**64 - 1) + b"\x00" * 40
    with pytest.raises(TruncatedRecordError):
        list(iter_records(io.BytesIO(data), verify=False))


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.4 this is not a TFRecord at all....", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, b"abc"],
)
def test_non_tfrecord_file(tmp_path: Path, storage: Remote, content: bytes) -> None:
    path = tmp_path / "not.tfrecords"
    path.write_bytes(content)
    with pytest.raises(TFRecordError) as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert storage.name(path) in str(info.value)
    assert isinstance(info.value, CorruptRecordError)
    assert info.value.record == 0


def test_missing_file_is_file_not_found(tmp_path: Path, storage: Remote) -> None:
    name = str(tmp_path / "nope.tfrecords") if storage.local else storage.url("nope.tfrecords")
    with pytest.raises(FileNotFoundError):
        list(iter_records(name, **storage.kw))


# --------------------------------------------------------------------------- writer


def test_writer_is_atomic_and_discards_on_error(tmp_path: Path) -> None:
    path = tmp_path / "a.tfrecords"

    def write_then_fail() -> None:
        with TFRecordWriter(path) as w:
            w.write(b"x")
            assert not path.exists()  # nothing under the final name while writing
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # temp file removed, no index


def test_writer_keeps_existing_file_until_complete(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.tfrecords", [b"old"])

    def write_then_fail() -> None:
        with TFRecordWriter(path) as w:
            w.write(b"new")
            raise ValueError("fail")

    with pytest.raises(ValueError, match="fail"):
        write_then_fail()
    assert list(iter_records(path)) == [b"old"]


def test_writer_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    w = TFRecordWriter(tmp_path / "a.tfrecords")
    w.write(b"1")
    w.close()
    w.close()
    assert w.count == 1
    with pytest.raises(ConfigError, match="closed"):
        w.write(b"2")


def test_writer_rejects_auto_compression(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        TFRecordWriter(tmp_path / "a.tfrecords", compression="auto")


def test_writer_index_and_locations(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "slide.tfrecords"
    recs = [serialized_record("slide", bytes([i]) * (i + 1), i * 10, -i) for i in range(5)]
    with TFRecordWriter(path) as w:
        for i, r in enumerate(recs):
            w.write(r, location=(i * 10, -i))
    with np.load(tmp_path / "slide.index.npz") as z:
        arr, locs = z["arr_0"], z["locations"]
    assert arr.dtype == np.int64
    assert arr.shape == (5, 2)
    assert arr[:, 1].tolist() == [len(r) + 16 for r in recs]
    assert arr[0, 0] == 0
    assert arr[-1].sum() == path.stat().st_size
    assert locs.tolist() == [[i * 10, -i] for i in range(5)]
    data = path.read_bytes()
    for (off, n), rec in zip(arr.tolist(), recs, strict=True):
        assert data[off + 12 : off + n - 4] == rec


def test_writer_without_locations_omits_them(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "s.tfrecords"
    with TFRecordWriter(path) as w:
        w.write(b"a", location=(1, 2))
        w.write(b"b")
    with np.load(tmp_path / "s.index.npz") as z:
        assert "locations" not in z.files
        assert z["arr_0"].tolist() == [[0, 17], [17, 17]]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_writer_takes_buffers_as_bytes(tmp_path: Path, compression: str | None) -> None:
    records = [serialized_record("s", bytes(range(256)) * (i + 1), i, -i) for i in range(5)]
    with TFRecordWriter(tmp_path / "a.tfrecords", compression=compression) as w:
        for r in records:
            w.write(r)
    reused = bytearray(max(map(len, records)))
    with TFRecordWriter(tmp_path / "b.tfrecords", compression=compression) as w:
        for i, r in enumerate(records):
            reused[: len(r)] = r
            view = memoryview(reused)[: len(r)]
            w.write(view if i % 2 else bytearray(view))
            reused[:] = b"\xff" * len(reused)  # the writer kept no reference to the buffer
    a, b = (tmp_path / "a.tfrecords").read_bytes(), (tmp_path / "b.tfrecords").read_bytes()
    if compression is None:
        assert a == b
    assert list(iter_records(tmp_path / "b.tfrecords")) == records


def test_writer_refuses_a_strided_buffer(tmp_path: Path) -> None:
    with TFRecordWriter(tmp_path / "a.tfrecords") as w, pytest.raises(ConfigError, match="contig"):
        w.write(memoryview(b"abcdef")[::2])


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_writer_starting_writeback_as_it_goes_writes_the_same_file(
    tmp_path: Path, compression: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [serialized_record("s", os.urandom(300 + 97 * i), i, i) for i in range(40)]
    with TFRecordWriter(tmp_path / "a.tfrecords", compression=compression) as w:
        for r in records:
            w.write(r, location=(1, 2))
    monkeypatch.setattr(TFRecordWriter, "writeback_bytes", 1000)  # every few records
    with TFRecordWriter(tmp_path / "b.tfrecords", compression=compression) as w:
        for r in records:
            w.write(r, location=(1, 2))
        assert w._written_back > 0  # the writeback path ran
    a = tmp_path / "a.tfrecords"
    b = tmp_path / "b.tfrecords"
    assert list(iter_records(b)) == records
    if compression is None:
        assert a.read_bytes() == b.read_bytes()
    with np.load(tmp_path / "a.index.npz") as ia, np.load(tmp_path / "b.index.npz") as ib:
        assert ia["arr_0"].tolist() == ib["arr_0"].tolist()
        assert ia["locations"].tolist() == ib["locations"].tolist()


def test_writer_interrupted_after_writeback_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writeback already started for part of the file: an error still discards all of it."""
    monkeypatch.setattr(TFRecordWriter, "writeback_bytes", 1000)
    path = tmp_path / "a.tfrecords"
    path.write_bytes(b"the user's old file")
    started: list[int] = []

    def write_then_fail() -> None:
        with TFRecordWriter(path) as w:
            for i in range(50):
                w.write(serialized_record("s", os.urandom(500), i, i), location=(i, i))
            started.append(w._written_back)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert started[0] > 0  # writeback had started for part of the file
    assert path.read_bytes() == b"the user's old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tfrecords"]
