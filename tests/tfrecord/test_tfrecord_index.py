"""Indexes: Slideflow npz/npy/text formats, locations, staleness, lying indexes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import missing  # tests/conftest.py: skip here, fail under CI=true
from tilestream.errors import InvalidTFRecordIndex, TruncatedRecordError
from tilestream.tfrecord import (
    TFRecord,
    TFRecordIndex,
    TFRecordWriter,
    create_index,
    export_text_index,
    find_index,
    index_path_for,
    index_staleness,
    iter_records,
    load_index,
    read_index_file,
    save_index,
    scan_index,
    serialized_record,
)


def _make(path: Path, n: int = 6, *, index: bool = False, compression: str | None = None) -> Path:
    with TFRecordWriter(path, index=index, compression=compression) as w:
        for i in range(n):
            w.write(serialized_record("s", bytes([i]) * (100 + 37 * i), i * 256, -i * 512))
    return path


def _expected(path: Path) -> np.ndarray:
    rows, pos = [], 0
    for rec in iter_records(path):
        rows.append([pos, len(rec) + 16])
        pos += len(rec) + 16
    return np.array(rows, dtype=np.int64)


def test_index_path_naming() -> None:
    assert index_path_for("/d/a.tfrecords").as_posix() == "/d/a.index.npz"
    assert index_path_for("/d/a.tfrecords", "npy").as_posix() == "/d/a.index.npy"
    assert index_path_for("/d/a.tfrecords", "text").as_posix() == "/d/a.index"
    assert index_path_for("/d/noext").as_posix() == "/d/noext.index.npz"


def test_create_index_npz_is_slideflow_compatible(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    idx = create_index(path)
    assert idx.path == tmp_path / "a.index.npz"
    with np.load(idx.path) as z:
        assert z["arr_0"].dtype == np.int64
        np.testing.assert_array_equal(z["arr_0"], _expected(path))
        assert z["locations"].dtype == np.int64
        assert z["locations"].tolist() == [[i * 256, -i * 512] for i in range(6)]
        assert int(z["tfrecord_size"]) == path.stat().st_size


def test_index_without_locations(tmp_path: Path) -> None:
    path = tmp_path / "plain.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        w.write(b"not an example \xff")
        w.write(serialized_record("s", b"x", 1, 2))
    idx = create_index(path)
    assert idx.locations is None
    with np.load(idx.path) as z:
        assert "locations" not in z.files
    assert create_index(path, locations=False).locations is None


def test_npy_and_text_formats_round_trip(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    npy = create_index(path, fmt="npy")
    assert npy.path == tmp_path / "a.index.npy"
    np.testing.assert_array_equal(np.load(npy.path), _expected(path))
    text = export_text_index(path)
    assert text == tmp_path / "a.index"
    lines = text.read_text().splitlines()
    assert [list(map(int, ln.split())) for ln in lines] == _expected(path).tolist()
    for p in (npy.path, text):
        np.testing.assert_array_equal(read_index_file(p).array, _expected(path))


def test_text_index_is_what_the_tfrecord_package_writes(tmp_path: Path) -> None:
    # The tfrecord package registers tensorflow.Example in protobuf's default
    # pool, which breaks a later TensorFlow import: run it in its own process.
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tfrecord") is None:
        missing("the tfrecord package is not installed (pip install -e '.[test]')")
    path = _make(tmp_path / "a.tfrecords")
    theirs = tmp_path / "theirs.index"
    code = "import sys; from tfrecord.tools.tfrecord2idx import create_index; create_index(*sys.argv[1:])"
    subprocess.run([sys.executable, "-c", code, str(path), str(theirs)], check=True, timeout=120)
    ours = export_text_index(path, tmp_path / "ours.index")
    np.testing.assert_array_equal(
        np.loadtxt(theirs, dtype=np.int64), np.loadtxt(ours, dtype=np.int64)
    )


def test_find_index_prefers_npz(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    assert find_index(path) is None
    export_text_index(path)
    assert find_index(path) == tmp_path / "a.index"
    create_index(path)
    assert find_index(path) == tmp_path / "a.index.npz"


def test_load_index_creates_missing_index(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    idx = load_index(path)
    assert idx.path == tmp_path / "a.index.npz"
    assert len(idx) == 6
    with pytest.raises(InvalidTFRecordIndex, match="no index"):
        load_index(_make(tmp_path / "b.tfrecords"), rebuild=False)


def test_load_index_reads_older_slideflow_formats(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    later = time.time() + 5
    np.save(tmp_path / "a.index.npy", _expected(path))
    os.utime(tmp_path / "a.index.npy", (later, later))
    idx = load_index(path, rebuild=False)
    assert idx.path == tmp_path / "a.index.npy"
    np.testing.assert_array_equal(idx.array, _expected(path))
    np.savez(tmp_path / "a.index.npz", _expected(path))  # Slideflow's own: arr_0 only
    os.utime(tmp_path / "a.index.npz", (later, later))
    assert load_index(path, rebuild=False).path == tmp_path / "a.index.npz"


def test_stale_index_after_append_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _make(tmp_path / "a.tfrecords", 3, index=True)
    old = read_index_file(tmp_path / "a.index.npz")
    _make(path, 5)  # rewritten with more records, old index left behind
    assert index_staleness(path, old) is not None
    with pytest.raises(InvalidTFRecordIndex):
        load_index(path, rebuild=False)
    idx = load_index(path)
    assert len(idx) == 5
    assert "rebuilding" in caplog.text
    assert len(read_index_file(tmp_path / "a.index.npz")) == 5  # rewritten on disk


def test_stale_by_mtime_only(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 3, index=True)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    reason = index_staleness(path, read_index_file(tmp_path / "a.index.npz"))
    assert reason is not None
    assert "modified" in reason


def test_stale_foreign_index_by_record_count(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 4)
    arr = _expected(path)
    later = time.time() + 5
    np.savez(tmp_path / "a.index.npz", arr[:3])  # a Slideflow-style index missing a record
    os.utime(tmp_path / "a.index.npz", (later, later))
    reason = index_staleness(path, read_index_file(tmp_path / "a.index.npz"))
    assert reason is not None
    assert "3 records" in reason
    assert len(load_index(path)) == 4


def test_unreadable_index_is_rebuilt(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 2)
    (tmp_path / "a.index.npz").write_bytes(b"garbage, not a zip")
    with pytest.raises(InvalidTFRecordIndex) as info:
        read_index_file(tmp_path / "a.index.npz")
    assert "a.index.npz" in str(info.value)
    assert len(load_index(path)) == 2


def test_malformed_index_tables(tmp_path: Path) -> None:
    bad = tmp_path / "x.index"
    bad.write_text("1 2 3\n")
    with pytest.raises(InvalidTFRecordIndex, match="offset length"):
        read_index_file(bad)
    np.save(tmp_path / "y.index.npy", np.zeros((3, 3)))
    with pytest.raises(InvalidTFRecordIndex, match=r"\(n, 2\)"):
        read_index_file(tmp_path / "y.index.npy")
    np.savez(tmp_path / "z.index.npz", np.zeros((2, 2), np.int64), locations=np.zeros((3, 2)))
    with pytest.raises(InvalidTFRecordIndex, match="locations"):
        read_index_file(tmp_path / "z.index.npz")


def test_lying_explicit_index_is_caught_on_opening(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 4)
    arr = _expected(path)
    lie = arr.copy()
    lie[2, 0] += 5  # record 2 does not start there
    with pytest.raises(InvalidTFRecordIndex, match="do not follow") as info:
        len(TFRecord(path, lie))
    assert str(path) in str(info.value)
    lie = arr.copy()
    lie[3, 1] = 10**9  # beyond the end of the file
    with pytest.raises(InvalidTFRecordIndex, match="cover"):
        len(TFRecord(path, lie))


def test_lying_index_is_caught_on_access(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 4)
    arr = _expected(path)
    lie = np.concatenate([arr[:2], [[arr[2, 0], arr[2, 1] + arr[3, 1]]]])  # 2 and 3 as one
    idx = save_index(TFRecordIndex(lie), index_path_for(path), tfrecord=path)
    assert index_staleness(path, read_index_file(idx)) is None  # it tiles the file
    with TFRecord(path) as tfr:
        assert tfr[1]["loc_x"] == 256
        with pytest.raises(InvalidTFRecordIndex, match="record 2 at byte") as info:
            tfr[2]
        assert str(path) in str(info.value)


def test_lying_locations_are_caught(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 3)
    idx = create_index(path)
    later = time.time() + 5
    np.savez(idx.path, idx.array, locations=idx.locations[::-1])  # swapped tiles
    os.utime(idx.path, (later, later))
    with TFRecord(path) as tfr, pytest.raises(InvalidTFRecordIndex, match="not"):
        tfr.get_record_by_xy(0, 0)


def test_compressed_index_offsets_are_in_the_uncompressed_stream(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecord.gz", 5, index=True, compression="gzip")
    idx = load_index(path, rebuild=False)  # fresh: size and mtime recorded
    assert idx.path == tmp_path / "a.tfrecord.index.npz"
    scanned = scan_index(path)
    np.testing.assert_array_equal(idx.array, scanned.array)
    assert scanned.locations is not None
    assert scanned.locations.tolist() == [[i * 256, -i * 512] for i in range(5)]


def test_truncated_file_cannot_be_indexed(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 3)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(TruncatedRecordError) as info:
        create_index(path)
    assert info.value.record == 2
    assert not (tmp_path / "a.index.npz").exists()


def test_empty_file_index(tmp_path: Path) -> None:
    path = tmp_path / "e.tfrecords"
    path.write_bytes(b"")
    idx = create_index(path)
    assert len(idx) == 0
    assert len(load_index(path, rebuild=False)) == 0


def test_progress_callback(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    calls: list[tuple[int, int]] = []
    create_index(path, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (path.stat().st_size, path.stat().st_size)


def test_unwritable_index_stays_in_memory(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords", 3)
    (tmp_path / "a.index.npz").mkdir()  # the index name is taken: it cannot be written
    idx = load_index(path)
    assert len(idx) == 3
    assert idx.path is None
    with TFRecord(path) as tfr:
        assert tfr[2]["loc_x"] == 512
