"""Every real TFRecord in the shared test data (written by TensorFlow and other tools).

Expected record counts, keys and values are those stated in the data set's SOURCES.md.
The reading tests run once per ``storage`` kind: ``local``, and ``s3`` and ``http`` reading
the same files from SeaweedFS (``storage.name(path)`` is then a copy's URL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _remote import Remote
from tilestream.errors import CorruptRecordError, TruncatedRecordError, UnsupportedRecordError
from tilestream.tfrecord import (
    TFRecord,
    create_index,
    decode_example,
    decode_image,
    detect_tfrecord_format,
    get_tfrecord_length,
    iter_examples,
    iter_records,
)

pytestmark = pytest.mark.testdata

COUNTS = {
    "raccoon_test.record": 40,
    "tfx_mnist.tfrecord": 1000,
    "datumaro_tf_detection_api_dataset/train.tfrecord": 1,
    "datumaro_tf_detection_api_dataset/val.tfrecord": 1,
    "datumaro_tf_detection_api_dataset/test.tfrecord": 1,
    "tfx_penguin_train_data_tfrecord-00000-of-00001.gz": 234,
    "tfx_sequence_eval_data_tfrecord_eval.gz": 4500,
    "tfx_tfjs_next_page_data.tfrecord.gz": 100,
    "torchdata_example.tfrecord": 4,
    "torchdata_sequence_example.tfrecord": 4,
    **{
        f"tfx_csv_example_gen_unlabelled/data_tfrecord-{i:05d}-of-00012.gz": (
            204 if i == 9 else 205
        )
        for i in range(12)
    },
}
SEQUENCE_FILES = ["tfx_sequence_eval_data_tfrecord_eval.gz", "torchdata_sequence_example.tfrecord"]


@pytest.mark.parametrize(("name", "count"), sorted(COUNTS.items()))
def test_record_counts_and_every_record_decodes(
    tfrecords_dir: Path, storage: Remote, name: str, count: int
) -> None:
    path = tfrecords_dir / name
    records = list(iter_records(storage.name(path), **storage.kw))  # CRCs verified
    assert len(records) == count
    assert get_tfrecord_length(storage.name(path), **storage.kw) == count
    if name in SEQUENCE_FILES:
        for i, rec in enumerate(records):
            with pytest.raises(UnsupportedRecordError, match="SequenceExample") as info:
                decode_example(rec, path=path, record=i)
            assert info.value.path == str(path)
    else:
        for rec in records:
            assert decode_example(rec)


def test_all_files_are_covered(tfrecords_dir: Path) -> None:
    found = {
        p.relative_to(tfrecords_dir).as_posix()
        for p in tfrecords_dir.rglob("*")
        if p.is_file() and p.suffix not in {".md", ".pbtxt"} and "corrupted" not in p.parts
    }
    assert found == set(COUNTS)


def test_sharded_set_total(tfrecords_dir: Path, storage: Remote) -> None:
    shards = sorted((tfrecords_dir / "tfx_csv_example_gen_unlabelled").glob("*.gz"))
    assert len(shards) == 12
    assert sum(sum(1 for _ in iter_records(storage.name(s), **storage.kw)) for s in shards) == 2459


def test_raccoon_od_api_schema(tfrecords_dir: Path, storage: Remote) -> None:
    path = tfrecords_dir / "raccoon_test.record"
    recs = list(iter_examples(storage.name(path), squeeze=False, **storage.kw))
    keys = {
        "image/height",
        "image/width",
        "image/filename",
        "image/source_id",
        "image/encoded",
        "image/format",
        "image/object/bbox/xmin",
        "image/object/bbox/xmax",
        "image/object/bbox/ymin",
        "image/object/bbox/ymax",
        "image/object/class/text",
        "image/object/class/label",
    }
    for rec in recs:
        assert set(rec) == keys
        assert rec["image/format"] == [b"jpg"]
        assert set(rec["image/object/class/text"]) == {b"raccoon"}
        assert set(rec["image/object/class/label"].tolist()) == {1}
        for k in ("xmin", "xmax", "ymin", "ymax"):
            v = rec[f"image/object/bbox/{k}"]
            assert v.dtype == np.float32
            assert np.all((v >= 0) & (v <= 1))
        img = decode_image(rec["image/encoded"][0])
        assert img.shape == (rec["image/height"][0], rec["image/width"][0], 3)
    assert (315, 639) in {(r["image/height"][0], r["image/width"][0]) for r in recs}
    # 38 CR LF pairs inside binary data: nothing translated newlines.
    assert sum(r["image/encoded"][0].count(b"\r\n") for r in recs) <= 38
    assert path.read_bytes().count(b"\r\n") == 38


def test_raccoon_random_access_matches_sequential(
    tfrecords_dir: Path, storage: Remote, tmp_path: Path
) -> None:
    path = tfrecords_dir / "raccoon_test.record"
    seq = list(iter_examples(storage.name(path), **storage.kw))
    # read-only data: index in memory
    with TFRecord(storage.name(path), create_index=False, **storage.kw) as tfr:
        assert len(tfr) == 40
        assert tfr.img_format == "jpeg"
        assert tfr.locations is None
        for i in (0, 17, 39, -1):
            assert tfr[i]["image/encoded"] == seq[i]["image/encoded"]
        assert [r["image/source_id"] for r in tfr[5:8]] == [r["image/source_id"] for r in seq[5:8]]
    idx = create_index(path, write=False)
    assert len(idx) == 40
    assert int(idx.array[-1].sum()) == path.stat().st_size


def test_datumaro_edge_cases(tfrecords_dir: Path, storage: Remote) -> None:
    d = tfrecords_dir / "datumaro_tf_detection_api_dataset"
    (train,) = iter_examples(storage.name(d / "train.tfrecord"), squeeze=False, **storage.kw)
    assert train["image/object/class/text"] == [b"label_2", b"label_3", b""]
    assert train["image/object/class/label"].tolist() == [3, 4, 0]
    assert train["image/format"] == [b"jpeg"]
    assert decode_image(train["image/encoded"][0]).shape == (16, 16, 3)
    (val,) = iter_examples(storage.name(d / "val.tfrecord"), **storage.kw)
    assert decode_image(val["image/encoded"]).shape == (8, 8, 3)
    (test,) = iter_examples(storage.name(d / "test.tfrecord"), **storage.kw)
    assert not any(k.startswith("image/object") for k in test)
    img = decode_image(test["image/encoded"])
    assert img.shape == (test["image/height"], test["image/width"], 3)
    assert {img.shape[0], img.shape[1]} == {5, 4}


def test_mnist_float_pixels(tfrecords_dir: Path, storage: Remote) -> None:
    recs = list(iter_examples(storage.name(tfrecords_dir / "tfx_mnist.tfrecord"), **storage.kw))
    for r in recs:
        assert set(r) == {"image_floats", "image_class"}
        assert r["image_floats"].shape == (784,)
        assert r["image_floats"].dtype == np.float32
        assert 0 <= r["image_class"] <= 9
    assert len({r["image_class"] for r in recs}) == 10


def test_penguin_and_tfjs_gzip(tfrecords_dir: Path, storage: Remote) -> None:
    pen = list(
        iter_examples(
            storage.name(tfrecords_dir / "tfx_penguin_train_data_tfrecord-00000-of-00001.gz"),
            **storage.kw,
        )
    )
    for r in pen:
        assert set(r) == {
            "culmen_length_mm",
            "culmen_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "species",
        }
        assert isinstance(r["species"], int)
        assert isinstance(r["body_mass_g"], float)
    tfjs = list(
        iter_examples(
            storage.name(tfrecords_dir / "tfx_tfjs_next_page_data.tfrecord.gz"), **storage.kw
        )
    )
    for r in tfjs:
        assert isinstance(r["session_index"], int)
        assert isinstance(r["cur_page"], bytes)
        assert isinstance(r["label"], bytes)


def test_csv_example_gen_empty_features(tfrecords_dir: Path, storage: Remote) -> None:
    shard = tfrecords_dir / "tfx_csv_example_gen_unlabelled" / "data_tfrecord-00000-of-00012.gz"
    kinds: dict[str, set[str | None]] = {}
    for data in iter_records(storage.name(shard), **storage.kw):
        for name, feat in decode_example(data).items():
            kinds.setdefault(name, set()).add(feat.kind)
    assert kinds["pickup_census_tract"] == {None}  # always an empty Feature
    assert kinds["fare"] == {"float_list"}
    assert kinds["payment_type"] == {"bytes_list"}
    assert kinds["trip_start_timestamp"] == {"int64_list"}
    assert None in kinds["company"] or kinds["company"] == {"bytes_list"}


def test_torchdata_example_values(tfrecords_dir: Path, storage: Remote) -> None:
    recs = list(
        iter_examples(storage.name(tfrecords_dir / "torchdata_example.tfrecord"), **storage.kw)
    )
    for r in recs:
        assert r["x_byte"] == b"test str"
        assert r["x_int"].shape == (10,)
        assert r["x_float"].shape == (10,)
    # Values written by the fixture script: row k holds 10k..10k+9 and 100k + 10*j.
    assert recs[0]["x_int"].tolist() == list(range(0, 100, 10))
    assert recs[3]["x_float"].tolist() == [float(v) for v in range(30, 40)]


@pytest.mark.parametrize("name", SEQUENCE_FILES)
def test_sequence_examples_refused_clearly_but_iterable(
    tfrecords_dir: Path, storage: Remote, name: str
) -> None:
    path = tfrecords_dir / name
    with pytest.raises(UnsupportedRecordError, match="SequenceExample") as info:
        next(iter(iter_examples(storage.name(path), **storage.kw)))
    assert storage.name(path) in str(info.value)
    with TFRecord(storage.name(path), create_index=False, **storage.kw) as tfr:
        assert len(tfr) == COUNTS[name]
        assert tfr.read_raw(0)
        with pytest.raises(UnsupportedRecordError):
            tfr[0]


def test_corrupted_pets_file(tfrecords_dir: Path, storage: Remote) -> None:
    path = tfrecords_dir / "corrupted" / "pets_examples.domj07-corrupted.record"
    # record 0's header (18430 bytes, valid length CRC) is fine; its data CRC is not.
    with pytest.raises(CorruptRecordError, match="data CRC") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert (info.value.record, info.value.offset, info.value.path) == (0, 0, storage.name(path))
    # Without CRC checks record 0 comes out, then the garbage header at 18446
    # (absurd length) is reported, not allocated.
    it = iter_records(storage.name(path), verify=False, **storage.kw)
    first = next(it)
    assert len(first) == 18430
    with pytest.raises(TruncatedRecordError) as info2:
        next(it)
    assert (info2.value.record, info2.value.offset) == (1, 18446)
    # With CRCs on, the garbage header fails its length CRC when reached by index scan.
    with pytest.raises(CorruptRecordError):
        create_index(path, write=False)
    with pytest.raises(CorruptRecordError):
        detect_tfrecord_format(storage.name(path), **storage.kw)


def test_corrupted_serengeti_file_is_truncated(tfrecords_dir: Path, storage: Remote) -> None:
    path = (
        tfrecords_dir / "corrupted" / "snapshot_serengeti_sequence_examples.domj07-corrupted.record"
    )
    with pytest.raises(TruncatedRecordError, match="820669") as info:
        list(iter_records(storage.name(path), **storage.kw))
    assert (info.value.record, info.value.offset, info.value.path) == (0, 0, storage.name(path))
    it = iter_records(storage.name(path), allow_truncated=True, **storage.kw)
    assert list(it) == []
    assert it.truncated_at == 0
    with pytest.raises(TruncatedRecordError):
        TFRecord(storage.name(path), create_index=False, **storage.kw).read_raw(0)
