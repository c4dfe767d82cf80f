"""The hand-written tf.train.Example codec: round trips, wire-format details, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tilestream.errors import ConfigError, CorruptRecordError, UnsupportedRecordError
from tilestream.tfrecord import (
    Feature,
    decode_example,
    encode_example,
    feature_value,
    parse_example,
    serialized_record,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _example(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An Example from (key, serialized Feature) pairs, built independently of the encoder."""
    body = b"".join(_ld(1, _ld(1, k) + _ld(2, f)) for k, f in entries)
    return _ld(1, body)


@pytest.mark.parametrize(
    "value",
    [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63 - 1, -1, -300, -(2**63)],
)
def test_int64_round_trip_including_negative_and_extremes(value: int) -> None:
    data = encode_example({"v": value, "many": Feature.int64_list([value] * 40)})
    dec = decode_example(data)
    assert dec["v"].kind == "int64_list"
    assert dec["v"].value.dtype == np.int64
    assert dec["v"].value.tolist() == [value]
    assert dec["many"].value.tolist() == [value] * 40
    assert parse_example(data)["v"] == value


def test_negative_int_is_ten_byte_varint_like_protobuf() -> None:
    data = encode_example({"n": -1})
    # Feature{int64_list{packed: 10 bytes}}: ff ff ff ff ff ff ff ff ff 01
    assert b"\xff" * 9 + b"\x01" in data
    assert len(data) == 2 + 2 + 3 + 2 + 2 + 2 + 10


def test_bytes_float_and_str_values() -> None:
    data = encode_example(
        {
            "b": [b"", b"\x00\r\n\xff", b"x" * 100_000],
            "s": "grüße",
            "f": np.array([1.5, -0.0, np.inf, 3.4e38], dtype=np.float64),
        }
    )
    dec = decode_example(data)
    assert dec["b"].value == [b"", b"\x00\r\n\xff", b"x" * 100_000]
    assert dec["s"].value == ["grüße".encode()]
    assert dec["f"].value.dtype == np.float32
    np.testing.assert_array_equal(dec["f"].value, np.array([1.5, -0.0, np.inf, 3.4e38], np.float32))


def test_empty_features_keep_their_kind_and_kindless_feature() -> None:
    data = encode_example(
        {
            "eb": Feature.bytes_list([]),
            "ef": Feature.float_list([]),
            "ei": Feature.int64_list([]),
            "none": Feature(None, []),
        }
    )
    dec = decode_example(data)
    assert [dec[k].kind for k in ("eb", "ef", "ei", "none")] == [
        "bytes_list",
        "float_list",
        "int64_list",
        None,
    ]
    assert len(dec["eb"]) == len(dec["ef"]) == len(dec["ei"]) == 0
    assert parse_example(data)["none"] is None
    assert parse_example(data, squeeze=False)["ei"].tolist() == []


def test_empty_example() -> None:
    assert decode_example(b"") == {}
    assert decode_example(encode_example({})) == {}


def test_feature_order_is_preserved() -> None:
    names = [f"k{i}" for i in (5, 1, 9, 0, 3)]
    data = encode_example(dict.fromkeys(names, 1))
    assert list(decode_example(data)) == names


def test_unpacked_numeric_encodings_are_decoded() -> None:
    # Int64List{value: 5, value: -2} unpacked (tag 0x08 varints); FloatList unpacked (0x0d).
    ints = b"\x08\x05\x08" + _varint((-2) + 2**64)
    floats = b"\x0d" + struct.pack("<f", 1.25) + b"\x0d" + struct.pack("<f", -3.0)
    data = _example([(b"i", _ld(3, ints)), (b"f", _ld(2, floats))])
    dec = decode_example(data)
    assert dec["i"].value.tolist() == [5, -2]
    assert dec["f"].value.tolist() == [1.25, -3.0]


def test_mixed_packed_and_unpacked_runs_concatenate_in_order() -> None:
    packed = b"\x0a" + _varint(30) + bytes(range(1, 31))  # 30 one-byte varints (numpy path)
    ints = b"\x08\x07" + packed + b"\x08\x63"
    dec = decode_example(_example([(b"i", _ld(3, ints))]))
    assert dec["i"].value.tolist() == [7, *range(1, 31), 99]


def test_long_packed_varints_use_the_vectorised_path() -> None:
    values = np.array([0, 1, -1, 2**40, -(2**62), 127, 128, 2**63 - 1] * 50, dtype=np.int64)
    dec = decode_example(encode_example({"v": values}))
    np.testing.assert_array_equal(dec["v"].value, values)


def test_repeated_map_key_last_wins_and_unknown_fields_are_skipped() -> None:
    f1 = _ld(3, b"\x0a\x01\x01")
    f2 = _ld(1, _ld(1, b"x"))
    unknown = b"\x28\x05" + b"\x3d" + b"\x00" * 4  # field 5 varint, field 7 fixed32
    data = _example([(b"k", f1), (b"k", f2)]) + unknown
    dec = decode_example(data)
    assert dec["k"] == Feature("bytes_list", [b"x"])


def test_oneof_last_kind_wins_within_a_feature() -> None:
    feat = _ld(3, b"\x0a\x01\x01") + _ld(1, _ld(1, b"y"))
    assert decode_example(_example([(b"k", feat)]))["k"].value == [b"y"]


def test_sequence_example_is_refused_clearly() -> None:
    context = _ld(1, _ld(1, b"a") + _ld(2, _ld(3, b"\x0a\x01\x01")))
    feature_lists = _ld(1, _ld(1, b"s") + _ld(2, _ld(1, _ld(1, _ld(1, b"x")))))
    data = _ld(1, context) + _ld(2, feature_lists)
    with pytest.raises(UnsupportedRecordError, match="SequenceExample") as info:
        decode_example(data, path="f.tfrecord", record=4)
    assert info.value.path == "f.tfrecord"
    assert "record 4" in str(info.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x0a\x05", "past the end"),
        (b"\x0a\x02\x0a\x09", "past the end"),
        (b"\x0a\x04\x0a\x02\x0a\xff", "past"),
        (b"\x0f", "wire type"),
        (b"\x00\x00", "field number 0"),
        (_example([(b"\xff\xfe", b"")]), "UTF-8"),
        (_example([(b"f", _ld(2, b"\x0a\x03abc"))]), "multiple of 4"),
        (b"\x08" + b"\xff" * 11, "varint"),
    ],
)
def test_malformed_protobuf_raises_corrupt_record(data: bytes, match: str) -> None:
    with pytest.raises(CorruptRecordError, match=match) as info:
        decode_example(data, path="x.tfrecords", record=2, offset=99)
    err = info.value
    assert (err.path, err.record, err.offset) == ("x.tfrecords", 2, 99)


def test_non_protobuf_bytes_give_our_error_not_a_raw_one() -> None:
    jpeg_head = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300")
    with pytest.raises(CorruptRecordError):
        decode_example(jpeg_head)


def test_feature_constructors_validate() -> None:
    with pytest.raises(ConfigError):
        Feature.int64_list([1.5])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        Feature.int64_list([2**63])
    with pytest.raises(ConfigError):
        Feature.bytes_list([3])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        Feature.float_list(["a"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="empty list"):
        encode_example({"x": []})
    with pytest.raises(ConfigError):
        encode_example({"x": object()})  # type: ignore[dict-item]


def test_type_inference() -> None:
    dec = decode_example(
        encode_example(
            {
                "bool": True,
                "npint": np.int16(-4),
                "npfloat": np.float64(0.5),
                "arr_u8": np.arange(3, dtype=np.uint8),
                "arr_f": np.ones((2, 2)),
                "tuple_mixed": (1, 2.5),
                "bytes_arr": np.array([b"a", b"bc"]),
            }
        )
    )
    assert dec["bool"].value.tolist() == [1]
    assert dec["npint"].value.tolist() == [-4]
    assert dec["npfloat"].kind == "float_list"
    assert dec["arr_u8"].value.tolist() == [0, 1, 2]
    assert dec["arr_f"].value.tolist() == [1.0] * 4
    assert dec["tuple_mixed"].kind == "float_list"
    assert dec["bytes_arr"].value == [b"a", b"bc"]


def test_serialized_record_is_the_slideflow_schema() -> None:
    rec = serialized_record("slide-ü", b"\xff\xd8img", 1024, -5)
    dec = decode_example(rec)
    assert list(dec) == ["image_raw", "slide", "loc_x", "loc_y"]
    assert dec["slide"].value == ["slide-ü".encode()]
    assert dec["image_raw"].value == [b"\xff\xd8img"]
    assert parse_example(rec)["loc_x"] == 1024
    assert parse_example(rec)["loc_y"] == -5
    same = encode_example(
        {"image_raw": b"\xff\xd8img", "slide": "slide-ü", "loc_x": 1024, "loc_y": -5}
    )
    assert rec == same
    assert serialized_record(b"s", b"x" * 70_000) == encode_example(
        {"image_raw": b"x" * 70_000, "slide": b"s", "loc_x": 0, "loc_y": 0}
    )


def test_feature_value_and_equality() -> None:
    assert feature_value(Feature.float_list([2.0])) == 2.0
    assert feature_value(Feature.bytes_list([b"a", b"b"])) == [b"a", b"b"]
    assert Feature.int64_list([1]) != Feature.float_list([1.0])
    assert Feature.int64_list([1, 2]) == Feature.int64_list(np.array([1, 2]))


def test_overlong_varint_keeps_the_low_64_bits_like_protobuf() -> None:
    # 10-byte varints whose last byte sets bits above 2**64 (TensorFlow never writes them).
    big = b"\xff" * 9 + b"\x7f"
    ints = b"\x08" + big
    packed = b"\x0a\x0a" + big
    dec = decode_example(_example([(b"u", _ld(3, ints)), (b"p", _ld(3, packed))]))
    assert dec["u"].value.tolist() == [-1]
    assert dec["p"].value.tolist() == [-1]
