"""Manifests: counts of real TFRecords, reuse of fresh counts, unreadable files kept."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilestream.dataset import manifest as manifest_mod
from tilestream.dataset import read_manifest, update_manifest_at_dir
from tilestream.tfrecord import TFRecordWriter, serialized_record

pytestmark = pytest.mark.testdata

# Record counts from the data set's SOURCES.md (read with TensorFlow).
EXPECTED = {
    "raccoon_test.record": 40,
    "tfx_mnist.tfrecord": 1000,
    "tfx_penguin_train_data_tfrecord-00000-of-00001.gz": 234,
    "tfx_sequence_eval_data_tfrecord_eval.gz": 4500,
    "tfx_tfjs_next_page_data.tfrecord.gz": 100,
    "torchdata_example.tfrecord": 4,
    "torchdata_sequence_example.tfrecord": 4,
    "datumaro_tf_detection_api_dataset/train.tfrecord": 1,
    "datumaro_tf_detection_api_dataset/val.tfrecord": 1,
    "datumaro_tf_detection_api_dataset/test.tfrecord": 1,
}
CORRUPTED = (
    "corrupted/pets_examples.domj07-corrupted.record",
    "corrupted/snapshot_serengeti_sequence_examples.domj07-corrupted.record",
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_tfrecords_counted_and_corrupted_recorded_not_deleted(
    tfrecords_dir: Path, tmp_path: Path
) -> None:
    before = {rel: _digest(tfrecords_dir / rel) for rel in CORRUPTED}
    out = tmp_path / "manifest.json"
    manifest = update_manifest_at_dir(tfrecords_dir, manifest_path=out)
    for rel, n in EXPECTED.items():
        assert manifest[rel]["total"] == n, rel
        assert "error" not in manifest[rel]
    shards = [k for k in manifest if k.startswith("tfx_csv_example_gen_unlabelled/")]
    assert len(shards) == 12 and sum(manifest[k]["total"] for k in shards) == 2459
    assert "CorruptRecordError" in manifest[CORRUPTED[0]]["error"]
    assert "record 1 at byte 18446" in manifest[CORRUPTED[0]]["error"]
    assert "TruncatedRecordError" in manifest[CORRUPTED[1]]["error"]
    assert manifest[CORRUPTED[0]]["total"] == 0
    for rel, digest in before.items():  # still there, unchanged
        assert _digest(tfrecords_dir / rel) == digest
    assert read_manifest(out) == manifest
    assert not (tfrecords_dir / "manifest.json").exists()


def test_fresh_counts_reused_changed_files_recounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    for name, n in (("s1", 3), ("s2", 2)):
        with TFRecordWriter(sub / f"{name}.tfrecords") as w:
            for i in range(n):
                w.write(serialized_record(name, b"img", i, 0), location=(i, 0))
    first = update_manifest_at_dir(tmp_path)
    assert {k: v["total"] for k, v in first.items()} == {
        "a/b/s1.tfrecords": 3,
        "a/b/s2.tfrecords": 2,
    }

    counted: list[str] = []
    real_count = manifest_mod._count

    def spy(path: Path) -> int:
        counted.append(path.name)
        return real_count(path)

    monkeypatch.setattr(manifest_mod, "_count", spy)
    mtime = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert update_manifest_at_dir(tmp_path) == first
    assert counted == []  # every count was fresh
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == mtime  # unchanged: not rewritten

    with TFRecordWriter(sub / "s2.tfrecords") as w:
        for i in range(5):
            w.write(serialized_record("s2", b"img", i, 0))
    again = update_manifest_at_dir(tmp_path)
    assert counted == ["s2.tfrecords"] and again["a/b/s2.tfrecords"]["total"] == 5
    update_manifest_at_dir(tmp_path, force_update=True)
    assert sorted(counted[1:]) == ["s1.tfrecords", "s2.tfrecords"]


def test_unreadable_and_empty_files_are_kept(tmp_path: Path, tfrecords_dir: Path) -> None:
    shutil.copy(tfrecords_dir / CORRUPTED[1], tmp_path / "trunc.tfrecords")
    (tmp_path / "empty.tfrecords").write_bytes(b"")
    (tmp_path / ".hidden.tfrecords").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a tfrecord")
    manifest = update_manifest_at_dir(tmp_path)
    assert set(manifest) == {"trunc.tfrecords", "empty.tfrecords"}
    assert manifest["empty.tfrecords"] == {
        "total": 0,
        "size": 0,
        "mtime_ns": (tmp_path / "empty.tfrecords").stat().st_mtime_ns,
        "error": "empty TFRecord (no records)",
    }
    assert "TruncatedRecordError" in manifest["trunc.tfrecords"]["error"]
    names = sorted(os.listdir(tmp_path))
    assert names == [
        ".hidden.tfrecords",
        "empty.tfrecords",
        "manifest.json",
        "notes.txt",
        "trunc.tfrecords",
    ]
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


def test_entries_of_removed_files_leave_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"gone.tfrecords": {"total": 9}}))
    assert update_manifest_at_dir(tmp_path) == {}
    assert read_manifest(tmp_path / "manifest.json") == {}


def _write(path: Path, n: int) -> None:
    with TFRecordWriter(path) as w:
        for i in range(n):
            w.write(serialized_record(path.stem, bytes([i]) * 64, i * 64, 0), location=(i * 64, 0))


def _flip_data_byte(path: Path, record: int) -> None:
    """Flip one byte of record ``record``'s data: its length and length CRC stay intact."""
    data = bytearray(path.read_bytes())
    pos = 0
    for _ in range(record):
        pos += 12 + int.from_bytes(data[pos : pos + 8], "little") + 4
    data[pos + 12 + 10] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_reads_every_record_and_records_crc_errors(tmp_path: Path) -> None:
    _write(tmp_path / "good.tfrecords", 4)
    _write(tmp_path / "bad.tfrecords", 4)
    _flip_data_byte(tmp_path / "bad.tfrecords", 2)
    quick = update_manifest_at_dir(tmp_path, write=False)
    assert quick["bad.tfrecords"]["total"] == 4 and "error" not in quick["bad.tfrecords"]
    assert not quick["bad.tfrecords"].get("verified")  # counted from the framing only
    checked = update_manifest_at_dir(tmp_path, verify=True)
    assert checked["good.tfrecords"] == {**checked["good.tfrecords"], "total": 4, "verified": True}
    assert "error" not in checked["good.tfrecords"]
    bad = checked["bad.tfrecords"]
    assert bad["total"] == 0 and "CorruptRecordError" in bad["error"] and "record 2" in bad["error"]
    assert read_manifest(tmp_path / "manifest.json") == checked
    # a verified count of an unchanged file is reused; a plain update keeps the verdict
    assert update_manifest_at_dir(tmp_path) == checked
    assert update_manifest_at_dir(tmp_path, verify=True) == checked


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_unparseable_manifest_is_kept_aside_with_a_warning(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path / "s1.tfrecords", 3)
    mpath = tmp_path / "manifest.json"
    mpath.write_text(text)
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        assert update_manifest_at_dir(tmp_path, write=False)["s1.tfrecords"]["total"] == 3
    assert mpath.read_text() == text
    assert [r for r in caplog.records if str(mpath) in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        manifest = update_manifest_at_dir(tmp_path)
    assert read_manifest(mpath) == manifest
    kept = tmp_path / "manifest.json.unparseable"
    assert kept.read_text() == text
    assert [r for r in caplog.records if str(kept) in r.getMessage()]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    data=st.data(),
)
def test_verify_finds_any_damaged_data_byte(
    tmp_path: Path, sizes: list[int], data: st.DataObject
) -> None:
    """Without --verify a damaged record is counted as healthy; with it, it never is."""
    folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / "s.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        for n in sizes:
            w.write(bytes(range(256)) * (n // 256) + bytes(n % 256))
    record = data.draw(st.integers(0, len(sizes) - 1), label="record")
    offset = data.draw(st.integers(0, sizes[record] - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    raw = bytearray(path.read_bytes())
    pos = sum(12 + n + 4 for n in sizes[:record]) + 12 + offset
    raw[pos] ^= flip
    path.write_bytes(bytes(raw))
    quick = update_manifest_at_dir(folder, write=False)["s.tfrecords"]
    assert quick["total"] == len(sizes) and "error" not in quick
    checked = update_manifest_at_dir(folder, write=False, verify=True)["s.tfrecords"]
    assert checked["total"] == 0 and checked["verified"] is True
    assert "CorruptRecordError" in checked["error"] and f"record {record}" in checked["error"]
