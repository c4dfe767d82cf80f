"""Interoperability of tilestream's TFRecord layer with real TensorFlow.

Every test here runs TensorFlow itself (the ``tf`` fixture: a skip without
TensorFlow, a failure under ``CI=true``) and checks, in both directions, that

* files tilestream writes are read by ``tf.data.TFRecordDataset`` and
  ``tf.io.parse_single_example`` / ``tf.train.Example`` with identical values
  (Slideflow tile schema and general Examples with every feature kind, empty
  lists, kind-less features, negative and extreme ints, unicode; plain, GZIP
  and ZLIB);
* files TensorFlow writes (``tf.io.TFRecordWriter`` + ``tf.train.Example``) are
  read by tilestream identically;
* tilestream's framing is byte-identical to TensorFlow's for the same payloads,
  and ``encode_example`` is byte-identical to ``SerializeToString``;
* the ``.index.npz`` tilestream writes matches offsets walked independently
  in TensorFlow's file;
* the real TensorFlow-written files of the shared test data read the same
  with both.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tilestream.errors import CorruptRecordError, TileStreamError, UnsupportedRecordError
from tilestream.tfrecord import (
    Feature,
    TFRecord,
    TFRecordWriter,
    create_index,
    decode_example,
    decode_image,
    encode_example,
    iter_records,
    serialized_record,
)

pytestmark = pytest.mark.tensorflow

COMPRESSIONS = [(None, ""), ("gzip", "GZIP"), ("zlib", "ZLIB")]
COMPRESSION_IDS = ["plain", "gzip", "zlib"]


# --------------------------------------------------------------------------- helpers


def tf_read(tf: ModuleType, path: Path, compression: str = "") -> list[bytes]:
    """Raw record payloads as TensorFlow's own reader returns them."""
    ds = tf.data.TFRecordDataset(str(path), compression_type=compression)
    return [bytes(r.numpy()) for r in ds]


def tf_write(tf: ModuleType, path: Path, payloads: Iterable[bytes], compression: str = "") -> None:
    """Write payloads with TensorFlow's own writer."""
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(str(path), options=options) as writer:
        for payload in payloads:
            writer.write(payload)


def ts_write(
    path: Path,
    payloads: Iterable[bytes],
    compression: str | None = None,
    locations: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Write payloads with tilestream's writer."""
    with TFRecordWriter(path, compression=compression) as writer:
        for i, payload in enumerate(payloads):
            writer.write(payload, location=None if locations is None else locations[i])


def walk_offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, total length) of every record of uncompressed TFRecord bytes, walked by hand."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length + 16))
        pos += length + 16
    assert pos == len(data)
    return out


def tf_feature(tf: ModuleType, kind: str | None, values: Sequence[Any]) -> Any:
    """A ``tf.train.Feature`` of the given kind (``None``: no kind set)."""
    if kind is None:
        return tf.train.Feature()
    if kind == "bytes_list":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))
    if kind == "float_list":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def tf_example(tf: ModuleType, spec: dict[str, tuple[str | None, Sequence[Any]]]) -> Any:
    features = {name: tf_feature(tf, kind, values) for name, (kind, values) in spec.items()}
    return tf.train.Example(features=tf.train.Features(feature=features))


def ours_feature(kind: str | None, values: Sequence[Any]) -> Feature:
    if kind is None:
        return Feature(None, [])
    if kind == "bytes_list":
        return Feature.bytes_list(values)
    if kind == "float_list":
        return Feature.float_list(values)
    return Feature.int64_list(values)


def feature_key(kind: str | None, values: Iterable[Any]) -> tuple[Any, ...]:
    """A comparable, bit-exact form of a feature (floats as float32 bit patterns)."""
    if kind == "float_list":
        arr = np.asarray(list(values), dtype=np.float32)
        arr[np.isnan(arr)] = np.float32("nan")  # NaN payloads may be quieted via double
        return (kind, tuple(arr.view(np.uint32).tolist()))
    if kind == "int64_list":
        return (kind, tuple(int(v) for v in values))
    return (kind, tuple(bytes(v) for v in values))


def ours_key(feature: Feature) -> tuple[Any, ...]:
    if feature.kind in ("float_list", "int64_list"):
        dtype = np.float32 if feature.kind == "float_list" else np.int64
        assert np.asarray(feature.value).dtype == dtype, feature
    return feature_key(feature.kind, feature.value)


def tf_key(feature: Any) -> tuple[Any, ...]:
    kind = feature.WhichOneof("kind")
    return feature_key(kind, getattr(feature, kind).value if kind else [])


def tf_example_keys(example: Any) -> dict[str, tuple[Any, ...]]:
    return {name: tf_key(f) for name, f in example.features.feature.items()}


def assert_same_example(ours: dict[str, Feature], theirs: Any) -> None:
    """Our decoded features equal TensorFlow's parsed ``tf.train.Example`` bit for bit."""
    assert {name: ours_key(f) for name, f in ours.items()} == tf_example_keys(theirs)


def wire_key_order(data: bytes) -> list[str]:
    """Feature names in the order they appear on the wire (independent mini-parser)."""

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        shift = result = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result, pos

    assert data[0] == 0x0A  # Example.features
    n, pos = varint(data, 1)
    features, keys = data[pos : pos + n], []
    pos = 0
    while pos < len(features):
        assert features[pos] == 0x0A  # Features.feature (map entry)
        n, pos = varint(features, pos + 1)
        entry = features[pos : pos + n]
        pos += n
        assert entry[0] == 0x0A  # entry.key
        klen, kpos = varint(entry, 1)
        keys.append(entry[kpos : kpos + klen].decode("utf-8"))
    return keys


# The feature set for general Examples: every kind, empty lists, a kind-less
# feature, extreme and negative ints, special floats, unicode keys and values.
GENERAL: dict[str, tuple[str | None, list[Any]]] = {
    "bytes_multi": ("bytes_list", [b"", b"\x00\xff\r\n", "ünïcødé ✓ 🧬".encode()]),
    "unicode_text": ("bytes_list", ["Gewebe - 組織 🔬".encode()]),
    "ints": ("int64_list", [0, 1, -1, 127, 128, 300, -300, 2**31, -(2**31), 2**63 - 1, -(2**63)]),
    "floats": (
        "float_list",
        [0.0, -0.0, 1.5, -2.25, 0.1, 3.4028234663852886e38, 1.401298464324817e-45, math.inf],
    ),
    "neg_inf_nan": ("float_list", [-math.inf, math.nan]),
    "many_floats": ("float_list", np.linspace(-1, 1, 257, dtype=np.float32).tolist()),
    "many_ints": ("int64_list", list(range(-500, 500, 7))),
    "empty_bytes": ("bytes_list", []),
    "empty_floats": ("float_list", []),
    "empty_ints": ("int64_list", []),
    "kindless": (None, []),
    "clé ünïcode/键": ("int64_list", [42]),
    "": ("bytes_list", [b"empty key"]),
}


def general_ours(spec: dict[str, tuple[str | None, list[Any]]]) -> dict[str, Feature]:
    return {name: ours_feature(kind, values) for name, (kind, values) in spec.items()}


@pytest.fixture(scope="module")
def jpeg_tiles(slides_dir: Path) -> list[bytes]:
    """Four real 256 px JPEG tiles cut from an H&E slide."""
    openslide = pytest.importorskip("openslide")
    simplejpeg = pytest.importorskip("simplejpeg")
    slide = openslide.OpenSlide(str(slides_dir / "CMU-1-Small-Region.svs"))
    try:
        region = np.asarray(slide.read_region((700, 1000), 0, (512, 512)).convert("RGB"))
    finally:
        slide.close()
    return [
        simplejpeg.encode_jpeg(
            np.ascontiguousarray(region[y : y + 256, x : x + 256]), quality=90, colorspace="RGB"
        )
        for y in (0, 256)
        for x in (0, 256)
    ]


# --------------------------------------------------------------------------- we write, TF reads


@pytest.mark.testdata
@pytest.mark.parametrize(("ours_c", "tf_c"), COMPRESSIONS, ids=COMPRESSION_IDS)
def test_slideflow_tiles_we_write_are_parsed_by_tf(
    tf: ModuleType, tmp_path: Path, jpeg_tiles: list[bytes], ours_c: str | None, tf_c: str
) -> None:
    path = tmp_path / "slide-ä.tfrecords"
    rows = [("slide-ä 組織", tile, 128 + 256 * i, -7 * i) for i, tile in enumerate(jpeg_tiles)]
    ts_write(path, [serialized_record(s, img, x, y) for s, img, x, y in rows], ours_c)
    spec = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "slide": tf.io.FixedLenFeature([], tf.string),
        "loc_x": tf.io.FixedLenFeature([], tf.int64),
        "loc_y": tf.io.FixedLenFeature([], tf.int64),
    }
    ds = tf.data.TFRecordDataset(str(path), compression_type=tf_c)
    parsed = [tf.io.parse_single_example(r, spec) for r in ds]
    assert len(parsed) == len(rows)
    for got, (slide, img, x, y) in zip(parsed, rows, strict=True):
        assert got["image_raw"].numpy() == img
        assert got["slide"].numpy().decode("utf-8") == slide
        assert int(got["loc_x"].numpy()) == x
        assert int(got["loc_y"].numpy()) == y
        # The image decodes to the same pixels as TensorFlow's accurate JPEG decoder.
        pixels = tf.io.decode_jpeg(got["image_raw"], dct_method="INTEGER_ACCURATE").numpy()
        ours = decode_image(img)
        assert ours.dtype == np.uint8
        assert ours.shape == pixels.shape == (256, 256, 3)
        assert np.array_equal(ours, pixels)


@pytest.mark.parametrize(("ours_c", "tf_c"), COMPRESSIONS, ids=COMPRESSION_IDS)
def test_general_examples_we_write_are_read_by_tf(
    tf: ModuleType, tmp_path: Path, ours_c: str | None, tf_c: str
) -> None:
    path = tmp_path / "general.tfrecords"
    examples = [
        general_ours(GENERAL),
        {"only_empty": Feature.bytes_list([])},
        {},  # an Example with no features at all
        {
            "inferred_str": "naïve - 🧫",  # type: ignore[dict-item]
            "inferred_bytes": b"\x00raw",
            "inferred_int": -(2**40),
            "inferred_bool": True,
            "inferred_float": 0.25,
            "inferred_np_int": np.int32(-5),
            "inferred_np_float": np.float64(2.5),
            "inferred_list_int": [3, -4, 5],
            "inferred_tuple_float": (1.0, -2.0),
            "inferred_list_bytes": [b"a", "b"],
            "inferred_array_f32": np.arange(6, dtype=np.float32).reshape(2, 3),
            "inferred_array_i64": np.array([[-1, 2], [3, -4]], dtype=np.int64),
        },
    ]
    expected_tf = [
        tf_example(tf, GENERAL),
        tf_example(tf, {"only_empty": ("bytes_list", [])}),
        tf.train.Example(),
        tf_example(
            tf,
            {
                "inferred_str": ("bytes_list", ["naïve - 🧫".encode()]),
                "inferred_bytes": ("bytes_list", [b"\x00raw"]),
                "inferred_int": ("int64_list", [-(2**40)]),
                "inferred_bool": ("int64_list", [1]),
                "inferred_float": ("float_list", [0.25]),
                "inferred_np_int": ("int64_list", [-5]),
                "inferred_np_float": ("float_list", [2.5]),
                "inferred_list_int": ("int64_list", [3, -4, 5]),
                "inferred_tuple_float": ("float_list", [1.0, -2.0]),
                "inferred_list_bytes": ("bytes_list", [b"a", b"b"]),
                "inferred_array_f32": ("float_list", [0, 1, 2, 3, 4, 5]),
                "inferred_array_i64": ("int64_list", [-1, 2, 3, -4]),
            },
        ),
    ]
    ts_write(path, [encode_example(ex) for ex in examples], ours_c)

    raw = tf_read(tf, path, tf_c)
    assert len(raw) == len(examples)
    for got, want in zip(raw, expected_tf, strict=True):
        parsed = tf.train.Example.FromString(got)
        assert tf_example_keys(parsed) == tf_example_keys(want)  # same keys, kinds, values
        # And with tilestream's decoder, compared value by value to TF's parse.
        assert_same_example(decode_example(got), parsed)

    # tf.io.parse_single_example (the graph-side parser) agrees too.
    spec = {
        "bytes_multi": tf.io.VarLenFeature(tf.string),
        "ints": tf.io.VarLenFeature(tf.int64),
        "floats": tf.io.VarLenFeature(tf.float32),
        "empty_bytes": tf.io.VarLenFeature(tf.string),
        "empty_floats": tf.io.VarLenFeature(tf.float32),
        "empty_ints": tf.io.VarLenFeature(tf.int64),
        "kindless": tf.io.VarLenFeature(tf.int64),
        "clé ünïcode/键": tf.io.FixedLenFeature([], tf.int64),
        "unicode_text": tf.io.FixedLenFeature([], tf.string),
    }
    parsed = tf.io.parse_single_example(raw[0], spec)
    assert parsed["bytes_multi"].values.numpy().tolist() == GENERAL["bytes_multi"][1]
    assert parsed["ints"].values.numpy().tolist() == GENERAL["ints"][1]
    floats = parsed["floats"].values.numpy()
    assert floats.view(np.uint32).tolist() == (
        np.array(GENERAL["floats"][1], dtype=np.float32).view(np.uint32).tolist()
    )
    for empty in ("empty_bytes", "empty_floats", "empty_ints", "kindless"):
        assert parsed[empty].values.shape == (0,)
    assert int(parsed["clé ünïcode/键"]) == 42
    assert parsed["unicode_text"].numpy().decode("utf-8") == "Gewebe - 組織 🔬"


# --------------------------------------------------------------------------- TF writes, we read


def _slideflow_tf_examples(tf: ModuleType, tiles: Sequence[bytes]) -> list[bytes]:
    return [
        tf_example(
            tf,
            {
                "image_raw": ("bytes_list", [tile]),
                "slide": ("bytes_list", ["TCGA-ü 01".encode()]),
                "loc_x": ("int64_list", [128 + 256 * i]),
                "loc_y": ("int64_list", [-(2**40) + i]),
            },
        ).SerializeToString()
        for i, tile in enumerate(tiles)
    ]


@pytest.mark.parametrize(("ours_c", "tf_c"), COMPRESSIONS, ids=COMPRESSION_IDS)
def test_files_tf_writes_are_read_identically(
    tf: ModuleType, tmp_path: Path, ours_c: str | None, tf_c: str
) -> None:
    path = tmp_path / "tf-written.tfrecords"
    payloads = [
        tf_example(tf, GENERAL).SerializeToString(),
        tf.train.Example().SerializeToString(),  # empty payload (0 bytes)
        tf_example(tf, {"big": ("bytes_list", [bytes(range(256)) * 4096])}).SerializeToString(),
        *[
            tf_example(
                tf, {"i": ("int64_list", [i, -i]), "f": ("float_list", [i / 3])}
            ).SerializeToString()
            for i in range(50)
        ],
    ]
    tf_write(tf, path, payloads, tf_c)

    assert list(iter_records(path, compression=ours_c)) == payloads
    assert list(iter_records(path, compression=ours_c, verify=False)) == payloads
    with path.open("rb") as fh:  # a binary file object works the same
        assert list(iter_records(fh, compression=ours_c)) == payloads
    if ours_c != "zlib":  # ZLIB streams have no magic number to detect
        assert list(iter_records(path)) == payloads  # compression="auto"
    for payload in payloads:
        assert_same_example(decode_example(payload), tf.train.Example.FromString(payload))


@pytest.mark.testdata
def test_slideflow_file_tf_writes_is_served_by_tfrecord(
    tf: ModuleType, tmp_path: Path, jpeg_tiles: list[bytes]
) -> None:
    path = tmp_path / "tf-slide.tfrecords"
    payloads = _slideflow_tf_examples(tf, jpeg_tiles)
    tf_write(tf, path, payloads)
    with TFRecord(path) as rec:
        assert len(rec) == len(jpeg_tiles)
        assert set(rec.fields) == {"image_raw", "slide", "loc_x", "loc_y"}
        assert rec.img_format == "jpeg"
        for i, tile in enumerate(jpeg_tiles):
            row = rec[i]
            assert row["image_raw"] == tile
            assert row["slide"] == "TCGA-ü 01"
            assert int(row["loc_x"]) == 128 + 256 * i
            assert int(row["loc_y"]) == -(2**40) + i
            # Slideflow's signature: (slide, image bytes) of the tile at (x, y).
            assert rec.get_record_by_xy(128 + 256 * i, -(2**40) + i) == ("TCGA-ü 01", tile)
        assert rec[-1]["image_raw"] == jpeg_tiles[-1]
        assert [r["image_raw"] for r in rec[1:3]] == jpeg_tiles[1:3]
        assert np.asarray(rec.locations).tolist() == [
            [128 + 256 * i, -(2**40) + i] for i in range(len(jpeg_tiles))
        ]


# --------------------------------------------------------------------------- byte identity

PAYLOADS = [
    b"",
    b"\x00",
    b"hello tfrecord",
    bytes(range(256)) * 3,
    np.random.default_rng(7).bytes(1 << 20),  # 1 MiB of random bytes
    b"\r\n" * 1000,
]


def test_framing_is_byte_identical_to_tensorflow(tf: ModuleType, tmp_path: Path) -> None:
    theirs, ours = tmp_path / "tf.tfrecords", tmp_path / "ours.tfrecords"
    tf_write(tf, theirs, PAYLOADS)
    ts_write(ours, PAYLOADS)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize(("ours_c", "tf_c"), COMPRESSIONS[1:], ids=COMPRESSION_IDS[1:])
def test_compressed_framing_decompresses_to_tensorflows_bytes(
    tf: ModuleType, tmp_path: Path, ours_c: str, tf_c: str
) -> None:
    # Compressed bytes may legitimately differ (deflate level, gzip header);
    # the framed stream inside must not.
    plain = tmp_path / "plain.tfrecords"
    theirs, ours = tmp_path / "tf.tfrecords", tmp_path / "ours.tfrecords"
    tf_write(tf, plain, PAYLOADS)
    tf_write(tf, theirs, PAYLOADS, tf_c)
    ts_write(ours, PAYLOADS, ours_c)
    unpack = gzip.decompress if ours_c == "gzip" else zlib.decompress
    assert unpack(ours.read_bytes()) == unpack(theirs.read_bytes()) == plain.read_bytes()
    if ours_c == "gzip":
        assert ours.read_bytes()[:2] == b"\x1f\x8b"


def test_encode_example_is_byte_identical_to_serialize_to_string(tf: ModuleType) -> None:
    # One feature at a time: no ordering question at all.
    for name, (kind, values) in GENERAL.items():
        want = tf_example(tf, {name: (kind, values)}).SerializeToString()
        assert encode_example({name: ours_feature(kind, values)}) == want, name
    # Several features: whatever order TensorFlow's protobuf puts the map
    # entries in (hash order by default; sorted, with "" last, when
    # deterministic), the same order gives the same bytes.
    ours = general_ours(GENERAL)
    for deterministic in (False, True):
        want = tf_example(tf, GENERAL).SerializeToString(deterministic=deterministic)
        order = wire_key_order(want)
        assert sorted(order) == sorted(GENERAL)
        assert encode_example({k: ours[k] for k in order}) == want
    # Python scalars and lists, inferred, as tf.train.Example is fed in practice.
    assert (
        encode_example({"x": 5}) == tf_example(tf, {"x": ("int64_list", [5])}).SerializeToString()
    )
    assert (
        encode_example({"x": -1.75})
        == tf_example(tf, {"x": ("float_list", [-1.75])}).SerializeToString()
    )
    assert (
        encode_example({"x": "ü"})
        == tf_example(tf, {"x": ("bytes_list", ["ü".encode()])}).SerializeToString()
    )
    # No features: TensorFlow's usual construction sets an empty Features message.
    assert encode_example({}) == tf_example(tf, {}).SerializeToString() == b"\n\x00"


@pytest.mark.testdata
def test_serialized_record_matches_slideflow_tf_encoding(
    tf: ModuleType, jpeg_tiles: list[bytes]
) -> None:
    # Slideflow builds its tile records with tf.train.Example; ours must be the
    # same message (and the same bytes in the same key order).
    ours = serialized_record("slide-1", jpeg_tiles[0], 384, 640)
    order = wire_key_order(ours)
    assert sorted(order) == ["image_raw", "loc_x", "loc_y", "slide"]
    values = {
        "image_raw": ("bytes_list", [jpeg_tiles[0]]),
        "slide": ("bytes_list", [b"slide-1"]),
        "loc_x": ("int64_list", [384]),
        "loc_y": ("int64_list", [640]),
    }
    theirs = tf_example(tf, {k: values[k] for k in order})
    assert tf_example_keys(tf.train.Example.FromString(ours)) == tf_example_keys(theirs)
    # Byte for byte it is encode_example in its key order, which is itself
    # byte-identical to TensorFlow's serialization (tested above).
    assert ours == encode_example({k: ours_feature(*values[k]) for k in order})


# --------------------------------------------------------------------------- index


def test_index_matches_offsets_walked_in_tensorflows_file(tf: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    locations = [(int(x), int(y)) for x, y in rng.integers(-(10**6), 10**6, size=(40, 2))]
    payloads = [
        serialized_record(f"s{i}", rng.bytes(int(rng.integers(0, 5000))), x, y)
        for i, (x, y) in enumerate(locations)
    ]
    theirs = tmp_path / "tf.tfrecords"
    tf_write(tf, theirs, payloads)
    expected = walk_offsets(theirs.read_bytes())

    # The index our writer produces while writing the same records.
    ours = tmp_path / "ours.tfrecords"
    ts_write(ours, payloads, locations=locations)
    with np.load(tmp_path / "ours.index.npz") as z:
        assert z["arr_0"].dtype == np.int64
        assert z["arr_0"].tolist() == [list(t) for t in expected]
        assert z["locations"].dtype == np.int64
        assert z["locations"].tolist() == [list(t) for t in locations]

    # The index create_index builds for TensorFlow's file.
    create_index(theirs)
    with np.load(tmp_path / "tf.index.npz") as z:
        assert z["arr_0"].tolist() == [list(t) for t in expected]
        tf_locs = [
            [int(e.features.feature["loc_x"].int64_list.value[0]),
             int(e.features.feature["loc_y"].int64_list.value[0])]
            for e in map(tf.train.Example.FromString, tf_read(tf, theirs))
        ]  # fmt: skip
        assert z["locations"].tolist() == tf_locs == [list(t) for t in locations]


# --------------------------------------------------------------------------- real files


EXAMPLE_FILES = [
    ("raccoon_test.record", 40),
    ("tfx_mnist.tfrecord", 1000),
    ("tfx_penguin_train_data_tfrecord-00000-of-00001.gz", 234),
    ("tfx_tfjs_next_page_data.tfrecord.gz", 100),
    ("torchdata_example.tfrecord", 4),
    ("datumaro_tf_detection_api_dataset/train.tfrecord", 1),
    ("datumaro_tf_detection_api_dataset/val.tfrecord", 1),
    ("datumaro_tf_detection_api_dataset/test.tfrecord", 1),
    *[
        (f"tfx_csv_example_gen_unlabelled/data_tfrecord-{k:05d}-of-00012.gz", 205)
        for k in range(12)
    ],
]
SEQUENCE_FILES = [
    ("tfx_sequence_eval_data_tfrecord_eval.gz", 4500),
    ("torchdata_sequence_example.tfrecord", 4),
]


def _tf_compression(name: str) -> str:
    return "GZIP" if name.endswith(".gz") else ""


@pytest.mark.testdata
@pytest.mark.parametrize(("name", "count"), EXAMPLE_FILES, ids=[n for n, _ in EXAMPLE_FILES])
def test_real_tf_written_example_files_read_identically(
    tf: ModuleType, tfrecords_dir: Path, name: str, count: int
) -> None:
    path = tfrecords_dir / name
    theirs = tf_read(tf, path, _tf_compression(name))
    if name.endswith("00009-of-00012.gz"):
        count = 204  # SOURCES.md: shard 00009 holds one row less
    assert len(theirs) == count
    ours = list(iter_records(path))
    assert ours == theirs
    for payload in ours:
        assert_same_example(decode_example(payload), tf.train.Example.FromString(payload))


@pytest.mark.testdata
@pytest.mark.parametrize(("name", "count"), SEQUENCE_FILES, ids=[n for n, _ in SEQUENCE_FILES])
def test_real_sequence_example_files(
    tf: ModuleType, tfrecords_dir: Path, name: str, count: int
) -> None:
    path = tfrecords_dir / name
    theirs = tf_read(tf, path, _tf_compression(name))
    assert len(theirs) == count
    ours = list(iter_records(path))
    assert ours == theirs  # framing is read identically
    seq = tf.train.SequenceExample.FromString(ours[0])
    assert len(seq.feature_lists.feature_list) > 0
    # decode_example refuses a SequenceExample clearly (the issue allows refusing).
    with pytest.raises(UnsupportedRecordError):
        decode_example(ours[0])


@pytest.mark.testdata
@pytest.mark.parametrize(
    "name",
    [
        "corrupted/pets_examples.domj07-corrupted.record",
        "corrupted/snapshot_serengeti_sequence_examples.domj07-corrupted.record",
    ],
)
def test_real_corrupted_files_refused_like_tensorflow(
    tf: ModuleType, tfrecords_dir: Path, name: str
) -> None:
    path = tfrecords_dir / name
    with pytest.raises(tf.errors.DataLossError):
        tf_read(tf, path)
    with pytest.raises(CorruptRecordError) as info:
        list(iter_records(path))
    assert isinstance(info.value, TileStreamError)
    assert info.value.path is not None
    assert Path(info.value.path).name == path.name
    assert info.value.record == 0
    assert info.value.offset == 0
