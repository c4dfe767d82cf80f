"""The slide-file fingerprint: what it sees, what it cannot see, and that it stays cheap."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilestream.extract import fingerprint
from tilestream.extract.fingerprint import fingerprint_matches, source_fingerprint

MIB = 1 << 20
TILES = 64
TILE_BYTES = 1000


def _crafted_tiff(*, pad: int = 2 * MIB) -> tuple[bytearray, int, int]:
    """A little-endian TIFF whose one IFD and tile arrays lie in the file's interior.

    Returns the bytes, the offset of the TileByteCounts array and of the tile data.
    """
    ifd = 8 + pad
    n = 4
    offsets_at = ifd + 2 + n * 12 + 4
    counts_at = offsets_at + 4 * TILES
    data_at = counts_at + 4 * TILES
    entries = [
        (256, 4, 1, 1024),  # ImageWidth
        (257, 4, 1, 1024),  # ImageLength
        (324, 4, TILES, offsets_at),  # TileOffsets
        (325, 4, TILES, counts_at),  # TileByteCounts
    ]
    buf = bytearray(b"II*\0" + struct.pack("<I", ifd)) + bytes(pad)
    buf += struct.pack("<H", n) + b"".join(struct.pack("<HHII", *e) for e in entries)
    buf += struct.pack("<I", 0)
    buf += struct.pack(f"<{TILES}I", *(data_at + TILE_BYTES * i for i in range(TILES)))
    buf += struct.pack(f"<{TILES}I", *([TILE_BYTES] * TILES))
    buf += bytes(range(256)) * (TILE_BYTES * TILES // 256) + bytes(TILE_BYTES * TILES % 256)
    buf += bytes(2 * MIB)
    return buf, counts_at, data_at


def _rewrite_keeping_stat(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_sees_a_tile_reencoded_in_the_interior(tmp_path: Path) -> None:
    data, counts_at, _ = _crafted_tiff()
    path = tmp_path / "s.tif"
    path.write_bytes(data)
    before = source_fingerprint(path)
    assert before["structure"] is not None
    assert MIB < counts_at < len(data) - MIB  # neither in the head nor in the tail
    struct.pack_into("<I", data, counts_at + 4 * 7, TILE_BYTES - 3)  # tile 7 now shorter
    _rewrite_keeping_stat(path, bytes(data))
    assert not fingerprint_matches(before, path)
    assert source_fingerprint(path)["structure"] != before["structure"]


def test_cannot_see_a_same_length_change_of_tile_bytes(tmp_path: Path) -> None:
    """The documented blind spot: interior pixel bytes changed in place, stat restored."""
    data, _, data_at = _crafted_tiff()
    path = tmp_path / "s.tif"
    path.write_bytes(data)
    before = source_fingerprint(path)
    data[data_at + 5 * TILE_BYTES + 10] ^= 0xFF
    _rewrite_keeping_stat(path, bytes(data))
    assert fingerprint_matches(before, path)


@pytest.mark.parametrize("where", ["head", "tail"])
def test_sees_changes_in_the_first_and_last_mib(tmp_path: Path, where: str) -> None:
    data = bytearray(os.urandom(3 * MIB))
    path = tmp_path / "s.bin"
    path.write_bytes(data)
    before = source_fingerprint(path)
    assert before["structure"] is None  # not a TIFF
    data[100 if where == "head" else -100] ^= 1
    _rewrite_keeping_stat(path, bytes(data))
    assert not fingerprint_matches(before, path)


def test_sees_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(b"x" * 100)
    before = source_fingerprint(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not fingerprint_matches(before, path)  # touched: same bytes, re-extracted
    path.write_bytes(b"x" * 101)
    assert not fingerprint_matches(before, path)
    path.unlink()
    assert not fingerprint_matches(before, path)


def test_an_older_record_never_matches(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(b"x")
    st = path.stat()
    assert not fingerprint_matches({"size": st.st_size, "mtime_ns": st.st_mtime_ns}, path)
    assert not fingerprint_matches(None, path)


def test_structure_reads_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, _, _ = _crafted_tiff(pad=0)
    path = tmp_path / "s.tif"
    path.write_bytes(data)
    assert "structure_truncated" not in source_fingerprint(path)
    monkeypatch.setattr(fingerprint, "MAX_STRUCTURE_BYTES", 100)
    assert source_fingerprint(path)["structure_truncated"] is True


def test_ifd_loops_and_long_chains_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an IFD whose next-IFD offset points at itself
    loop = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 8)
    (tmp_path / "loop.tif").write_bytes(loop)
    assert source_fingerprint(tmp_path / "loop.tif")["structure"] is not None
    # a chain of 50 empty IFDs, visited up to MAX_IFDS
    chain = bytearray(b"II*\0" + struct.pack("<I", 8))
    for i in range(50):
        nxt = 8 + 6 * (i + 1) if i < 49 else 0
        chain += struct.pack("<H", 0) + struct.pack("<I", nxt)
    (tmp_path / "chain.tif").write_bytes(chain)
    assert "structure_truncated" not in source_fingerprint(tmp_path / "chain.tif")
    monkeypatch.setattr(fingerprint, "MAX_IFDS", 10)
    assert source_fingerprint(tmp_path / "chain.tif")["structure_truncated"] is True


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from([b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]),
    body=st.binary(max_size=400),
)
def test_any_bytes_after_a_tiff_header_fingerprint_quietly(
    tmp_path: Path, header: bytes, body: bytes
) -> None:
    path = tmp_path / "fuzz.tif"
    path.write_bytes(header + body)
    fp = source_fingerprint(path)
    assert fp == source_fingerprint(path)
    assert fingerprint_matches(fp, path)


def test_dicom_series_files_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "level0.dcm").write_bytes(b"a" * 100)
    (tmp_path / "level1.dcm").write_bytes(b"b" * 100)
    before = source_fingerprint(tmp_path / "level0.dcm")
    assert "companions" in before
    _rewrite_keeping_stat(tmp_path / "level1.dcm", b"c" * 100)
    assert not fingerprint_matches(before, tmp_path / "level0.dcm")


def test_real_slide_fingerprint_is_stable_and_sees_its_tiff(cmu_slide: Path) -> None:
    fp = source_fingerprint(cmu_slide)
    assert fp["structure"] is not None and fp["size"] == cmu_slide.stat().st_size
    assert fingerprint_matches(fp, cmu_slide)
