"""Tile locations in indexes: found in the records when the writer is not told them.

``TFRecordWriter.write(record)`` without ``location=`` reads the record's own
``loc_x``/``loc_y`` (compiled ``tile_location``, else the index scanner's
Python reader), so the index it writes has ``locations`` exactly as
``create_index`` would make them. ``TFRecord`` completes an older index that
lacks them by reading the records once and rewrites it atomically (in memory
where the folder is read-only). The reading tests of an old index also run on copies in
SeaweedFS (``storage``: ``s3``, ``http``), where the old index lies beside the object.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tilestream.tfrecord.writer as writer_module
from _readonly import run_read_only
from _remote import Remote
from tilestream.tfrecord import (
    TFRecord,
    TFRecordIndex,
    TFRecordWriter,
    _locations,
    create_index,
    encode_example,
    index_path_for,
    index_staleness,
    load_index,
    read_index_file,
    save_index,
    serialized_record,
)
from tilestream.tfrecord._locations import _python_location
from tilestream.tfrecord.wire import encode_varint

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def native() -> ModuleType:
    from tilestream.tfrecord import _native

    return _native


@pytest.fixture(params=["compiled", "python"])
def core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(_locations, "_native", None)
        monkeypatch.setattr(writer_module, "_tile_location", None)
    return str(request.param)


def _tiles(n: int = 12) -> list[tuple[bytes, tuple[int, int]]]:
    out = []
    for i in range(n):
        x, y = (i % 4) * 256, -(i // 4) * 512
        out.append((serialized_record("s", bytes([i]) * (40 + i), x, y), (x, y)))
    return out


def test_the_writer_reads_locations_from_tile_records(tmp_path: Path, core: str) -> None:
    path = tmp_path / "a.tfrecords"
    tiles = _tiles()
    with TFRecordWriter(path) as w:
        for rec, _ in tiles:
            w.write(rec)
    idx = read_index_file(index_path_for(path))
    assert idx.locations is not None
    assert idx.locations.tolist() == [list(loc) for _, loc in tiles]
    np.testing.assert_array_equal(idx.locations, create_index(path, write=False).locations)
    with TFRecord(path) as tfr:
        assert tfr.get_record_by_xy(256, -1024)[1] == bytes([9]) * 49


def test_given_and_read_locations_mix(tmp_path: Path) -> None:
    path = tmp_path / "a.tfrecords"
    tiles = _tiles()
    with TFRecordWriter(path) as w:
        for i, (rec, loc) in enumerate(tiles):
            w.write(rec, location=loc if i % 2 else None)
    assert read_index_file(index_path_for(path)).locations.tolist() == [  # type: ignore[union-attr]
        list(loc) for _, loc in tiles
    ]


def test_records_that_are_not_tiles_keep_an_index_without_locations(
    tmp_path: Path, core: str
) -> None:
    path = tmp_path / "a.tfrecords"
    with TFRecordWriter(path) as w:
        w.write(serialized_record("s", b"i", 0, 0))
        w.write(encode_example({"label": [3]}))
        w.write(serialized_record("s", b"i", 256, 0))
    assert read_index_file(index_path_for(path)).locations is None
    with TFRecordWriter(path) as w:
        w.write(b"not an example at all")
    assert read_index_file(index_path_for(path)).locations is None


_loc = st.integers(-(2**63), 2**63 - 1)


@st.composite
def tile_like(draw: st.DrawFn) -> bytes:
    feats: dict[str, object] = {
        "image_raw": draw(st.binary(max_size=300)),
        "slide": draw(st.sampled_from([b"s", b"slide-1"])),
        "loc_x": draw(_loc),
        "loc_y": draw(_loc),
    }
    keys = draw(st.permutations(list(feats)))
    drop = draw(st.sampled_from([None, None, "loc_x", "loc_y"]))
    data = encode_example({k: feats[k] for k in keys if k != drop})
    if draw(st.booleans()):  # a second loc_x entry: the last one wins (protobuf maps)
        data = _concat(data, encode_example({"loc_x": draw(_loc)}))
    if draw(st.booleans()):
        b = bytearray(data)
        i = draw(st.integers(0, len(b) - 1))
        b[i] ^= 1 << draw(st.integers(0, 7))
        data = bytes(b)
    return data


def _concat(a: bytes, b: bytes) -> bytes:
    """Two Examples' Features merged into one Features message (protobuf concatenation)."""
    inner = _inner(a) + _inner(b)
    return b"\x0a" + encode_varint(len(inner)) + inner


def _inner(x: bytes) -> bytes:
    pos = 1
    n = 0
    shift = 0
    while True:
        c = x[pos]
        pos += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            break
    assert pos + n == len(x)
    return x[pos:]


@FUZZ
@given(data=tile_like())
def test_tile_location_agrees_with_the_index_scanner(native: ModuleType, data: bytes) -> None:
    fast = native.tile_location(data)
    slow = _python_location(data, 0, len(data), "x", 0, 0)
    if fast is not None:
        assert fast == slow
    assert isinstance(fast, (tuple, type(None)))


# --------------------------------------------------------------------------- old indexes


def _old_index(tmp_path: Path) -> Path:
    """A TFRecord with an up-to-date index that has no ``locations`` (as older writers left)."""
    path = tmp_path / "a.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        for rec, _ in _tiles():
            w.write(rec)
    full = create_index(path, write=False)
    save_index(TFRecordIndex(full.array), index_path_for(path), tfrecord=path)
    assert read_index_file(index_path_for(path)).locations is None
    return path


def test_an_old_index_is_completed_and_upgraded(tmp_path: Path, storage: Remote) -> None:
    path = _old_index(tmp_path)
    with TFRecord(storage.name(path), **storage.kw) as tfr:  # (remote: the old index beside it)
        assert tfr.get_record_by_xy(768, -1024)[1] == bytes([11]) * 51
    if not storage.local:  # an object's index is completed in the local cache
        return
    idx = read_index_file(index_path_for(path))
    assert idx.locations is not None and idx.locations[11].tolist() == [768, -1024]
    assert index_staleness(path, idx) is None  # still current: not rebuilt next time
    assert load_index(path).locations is not None


def test_an_explicit_or_in_memory_index_is_completed_but_not_written(
    tmp_path: Path, storage: Remote
) -> None:
    path = _old_index(tmp_path)
    before = index_path_for(path).read_bytes()
    name = storage.name(path)
    with TFRecord(name, index=index_path_for(path), **storage.kw) as tfr:
        assert tfr.index_of(512, 0) == 2
    with TFRecord(name, create_index=False, **storage.kw) as tfr:
        assert tfr.index_of(512, 0) == 2
    assert index_path_for(path).read_bytes() == before


def test_an_old_index_in_a_read_only_folder_is_completed_in_memory(tmp_path: Path) -> None:
    path = _old_index(tmp_path)
    before = index_path_for(path).read_bytes()
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from tilestream.tfrecord import TFRecord\n"
        f"with TFRecord({str(path)!r}) as t: print(t.index_of(512, 0))\n"
    )
    out = run_read_only(tmp_path, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert "using them in memory" in out.stderr
    assert index_path_for(path).read_bytes() == before
