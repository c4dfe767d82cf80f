"""The frame checks of ``tilestream.tfrecord.framing``, over bytes, a memory map and ``os.pread``.

Every reader loop, ``TFRecord``, the index scan and the loaders' ``read_record``
use these; a storage backend holding bytes from elsewhere walks frames with
them too, whole or piece by piece.
"""

from __future__ import annotations

import mmap
import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilestream.errors import CorruptRecordError, TruncatedRecordError
from tilestream.loaders.records import read_record
from tilestream.tfrecord._crc import crc32c, mask, masked_crc32c, masked_crc32c_py
from tilestream.tfrecord.framing import (
    OFFSETS,
    FrameCursor,
    check_payload,
    footer,
    frame,
    header,
    iter_frames,
    payload_of,
    read_header,
)

PAYLOADS = [b"", b"a", b"bc" * 100, bytes(range(256)) * 40]


def framed(payloads: list[bytes]) -> bytes:
    return b"".join(frame(p) for p in payloads)


def starts(payloads: list[bytes]) -> list[int]:
    out, pos = [], 0
    for p in payloads:
        out.append(pos)
        pos += len(p) + 16
    return out


def test_frame_is_header_payload_footer() -> None:
    assert frame(b"xyz") == header(3) + b"xyz" + footer(b"xyz")
    assert read_header(header(3), 0) == 3


def test_good_frames_over_bytes() -> None:
    data = framed(PAYLOADS)
    cursor = FrameCursor()
    assert list(iter_frames(data, cursor)) == PAYLOADS
    assert (cursor.record, cursor.offset) == (len(PAYLOADS), len(data))
    assert list(iter_frames(data, FrameCursor(), take=OFFSETS)) == starts(PAYLOADS)
    spans = list(iter_frames(data, FrameCursor(), take=lambda a, b, n, off: (a, b, n, off)))
    assert [data[a:b] for a, b, _, _ in spans] == PAYLOADS
    assert [(n, off) for _, _, n, off in spans] == list(enumerate(starts(PAYLOADS)))
    for p, off in zip(PAYLOADS, starts(PAYLOADS), strict=True):
        assert payload_of(data[off:]) == p
        assert read_header(data, off) == len(p)
        check_payload(memoryview(data), off + 12, off + 12 + len(p))


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x04
    return bytes(out)


@pytest.mark.parametrize("record", [0, 2, 3])
def test_a_bad_length_crc_names_the_record_and_offset(record: int) -> None:
    data = framed(PAYLOADS)
    off = starts(PAYLOADS)[record]
    bad = flip(data, off + 9)  # the length's CRC
    with pytest.raises(CorruptRecordError, match="length CRC mismatch") as info:
        list(iter_frames(bad, FrameCursor(), path="f.tfrecords"))
    assert (info.value.path, info.value.record, info.value.offset) == ("f.tfrecords", record, off)
    with pytest.raises(CorruptRecordError, match="length CRC mismatch"):
        read_header(bad, off)
    with pytest.raises(CorruptRecordError, match="length CRC mismatch"):
        payload_of(bad[off:])
    # unchecked headers pass (the data CRC of a changed length would still differ)
    assert payload_of(flip(data, off + 9)[off:], verify=False) == PAYLOADS[record]


@pytest.mark.parametrize("record", [1, 2, 3])
def test_a_bad_data_crc_names_the_record_and_offset(record: int) -> None:
    data = framed(PAYLOADS)
    off = starts(PAYLOADS)[record]
    bad = flip(data, off + 12)  # the first payload byte
    with pytest.raises(CorruptRecordError, match="data CRC mismatch") as info:
        list(iter_frames(bad, FrameCursor(), path="f"))
    assert (info.value.record, info.value.offset) == (record, off)
    with pytest.raises(CorruptRecordError, match="data CRC mismatch") as info:
        check_payload(bad, off + 12, off + 12 + len(PAYLOADS[record]), record=record)
    assert info.value.offset == off
    # verify=False lets it through; check_header=True still checks the lengths
    got = list(iter_frames(bad, FrameCursor(), verify=False, check_header=True))
    assert got[record] != PAYLOADS[record] and len(got) == len(PAYLOADS)


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 13, 100, 4 + 12 + 10240 - 1])
def test_truncated_data_is_reported_or_left_for_later(cut: int) -> None:
    data = framed(PAYLOADS)
    last = starts(PAYLOADS)[-1]
    short = data[: len(data) - cut]
    what = "header" if len(short) - last < 12 else "declares"
    with pytest.raises(TruncatedRecordError, match=what) as info:
        list(iter_frames(short, FrameCursor(), path="f"))
    assert (info.value.record, info.value.offset) == (len(PAYLOADS) - 1, last)
    cursor = FrameCursor()
    assert list(iter_frames(short, cursor, final=False)) == PAYLOADS[:-1]
    assert (cursor.record, cursor.offset) == (len(PAYLOADS) - 1, last)
    with pytest.raises(TruncatedRecordError):
        payload_of(short[last:])


@settings(max_examples=150, deadline=timedelta(seconds=2), database=None)
@given(
    st.lists(st.binary(max_size=400), max_size=12),
    st.lists(st.integers(1, 700), min_size=1, max_size=30),
)
def test_frames_read_in_pieces_are_the_frames_of_the_whole(
    payloads: list[bytes], pieces: list[int]
) -> None:
    # as a storage backend that fetches byte ranges: keep the partial frame, append the next range
    data = framed(payloads)
    cursor = FrameCursor()
    got: list[bytes] = []
    held = b""
    base = pos = 0
    i = 0
    while pos < len(data):
        step = pieces[i % len(pieces)]
        i += 1
        held += data[pos : pos + step]
        pos += step
        got += iter_frames(held, cursor, base=base, final=pos >= len(data))
        used = cursor.offset - base
        held, base = held[used:], cursor.offset
    assert got == payloads
    assert cursor.record == len(payloads)


def test_frames_over_a_memory_map_and_pread(tmp_path: Path) -> None:
    path = tmp_path / "f.tfrecords"
    data = framed(PAYLOADS)
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert list(iter_frames(m, FrameCursor(), path=str(path))) == PAYLOADS
    fd = os.open(path, os.O_RDONLY)
    try:
        for n, (p, off) in enumerate(zip(PAYLOADS, starts(PAYLOADS), strict=True)):
            assert read_record(fd, str(path), n, off, len(p) + 16) == p
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda d, off: flip(d, off + 9), CorruptRecordError, "length CRC mismatch"),
        (lambda d, off: flip(d, off + 12), CorruptRecordError, "data CRC mismatch"),
        (lambda d, off: d[: off + 100], TruncatedRecordError, "declares"),
        (lambda d, off: d[: off + 7], TruncatedRecordError, "header"),
    ],
    ids=["length-crc", "data-crc", "cut-in-payload", "cut-in-header"],
)
def test_read_record_errors_name_file_record_and_offset(
    tmp_path: Path, change: object, error: type[Exception], match: str
) -> None:
    path = tmp_path / "f.tfrecords"
    off = starts(PAYLOADS)[3]
    path.write_bytes(change(framed(PAYLOADS), off))  # type: ignore[operator]
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(error, match=match) as info:
            read_record(fd, str(path), 3, off, len(PAYLOADS[3]) + 16)
    finally:
        os.close(fd)
    err = info.value
    assert isinstance(err, CorruptRecordError)
    assert (err.path, err.record, err.offset) == (str(path), 3, off)
    assert str(path) in str(err) and f"record 3 at byte {off}" in str(err)


@settings(max_examples=200, deadline=timedelta(seconds=2), database=None)
@given(st.binary(max_size=70_000), st.integers(0, 16))
def test_masked_crc32c_is_the_mask_of_crc32c(data: bytes, skip: int) -> None:
    # the compiled core's one-call version (where built) and the Python one agree, on any buffer
    view = memoryview(data)[skip:]
    want = mask(crc32c(data[skip:]))
    assert masked_crc32c(view) == masked_crc32c_py(view) == want
    assert masked_crc32c(bytearray(data[skip:])) == want


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_the_loaders_refuse_compressed_files_by_their_framing(
    tmp_path: Path, compression: str
) -> None:
    # the sniff is framing's detect_compression: ZLIB is named as well as GZIP
    from tilestream.errors import UnsupportedRecordError
    from tilestream.loaders.records import file_size
    from tilestream.tfrecord import TFRecordWriter

    path = tmp_path / "c.tfrecords"
    with TFRecordWriter(path, compression=compression, index=False) as w:
        w.write(b"payload")
    with pytest.raises(UnsupportedRecordError, match=f"{compression}-compressed"):
        file_size(str(path))
    plain = tmp_path / "p.tfrecords"
    plain.write_bytes(framed(PAYLOADS))
    assert file_size(str(plain)) == len(framed(PAYLOADS))
