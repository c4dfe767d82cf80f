"""The protobuf wire primitives (``tilestream.tfrecord.wire``) against the Example codec.

Round trips of varints and fields, the encoders against ``encode_example``
(and so TensorFlow's bytes, which ``encode_example`` matches), and malformed
varints and fields rejected with the project's error.
"""

from __future__ import annotations

import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilestream.errors import CorruptRecordError
from tilestream.tfrecord import Feature, encode_example, parse_example
from tilestream.tfrecord.example import encode_feature
from tilestream.tfrecord.wire import (
    VARINT1,
    WireError,
    bytes_feature,
    encode_varint,
    float_feature,
    int64_feature,
    length_delimited,
    map_entry,
    read_varint,
    skip_field,
)

PROPS = settings(max_examples=300, deadline=timedelta(seconds=2), database=None)
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
I64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


def reference_varint(n: int) -> bytes:
    """Base-128 varint written the plain way (the protobuf specification's loop)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@PROPS
@given(U64)
def test_varints_round_trip_and_match_the_reference(n: int) -> None:
    data = encode_varint(n)
    assert data == reference_varint(n)
    assert read_varint(data, 0, len(data)) == (n, len(data))
    # inside a larger buffer, with bytes before and after it
    buf = b"\xff\xff" + data + b"\x80\x80"
    assert read_varint(buf, 2, len(buf)) == (n, 2 + len(data))


@PROPS
@given(I64)
def test_negative_int64_is_ten_bytes_of_twos_complement(n: int) -> None:
    data = encode_varint(n)
    assert data == reference_varint(n & ((1 << 64) - 1))
    if n < 0:
        assert len(data) == 10
    value, _ = read_varint(data, 0, len(data))
    assert value - (1 << 64) * (value >> 63) == n


def test_one_byte_table() -> None:
    assert all(VARINT1[i] == encode_varint(i) == bytes([i]) for i in range(128))


@PROPS
@given(U64.filter(lambda n: n >= 0x80))
def test_a_varint_cut_short_is_rejected(n: int) -> None:
    data = encode_varint(n)
    for cut in range(len(data)):
        with pytest.raises(WireError, match="runs past the end"):
            read_varint(data, 0, cut)
    # the end of the message counts, not the end of the buffer
    with pytest.raises(CorruptRecordError):
        read_varint(data + b"\x00" * 4, 0, len(data) - 1)


@pytest.mark.parametrize("length", [11, 12, 20])
def test_an_overlong_varint_is_rejected(length: int) -> None:
    data = b"\x80" * (length - 1) + b"\x01"
    with pytest.raises(WireError, match="longer than 10 bytes") as info:
        read_varint(data, 0, len(data))
    assert isinstance(info.value, CorruptRecordError)


def encode_field(number: int, wire: int, value: int | bytes) -> bytes:
    tag = encode_varint(number << 3 | wire)
    if wire == 0:
        assert isinstance(value, int)
        return tag + encode_varint(value)
    if wire == 1:
        assert isinstance(value, int)
        return tag + struct.pack("<Q", value)
    if wire == 5:
        assert isinstance(value, int)
        return tag + struct.pack("<I", value & 0xFFFFFFFF)
    assert isinstance(value, bytes)
    return length_delimited(tag, value)


FIELDS = st.lists(
    st.one_of(
        st.tuples(st.integers(1, 1 << 20), st.just(0), U64),
        st.tuples(st.integers(1, 1 << 20), st.just(1), U64),
        st.tuples(st.integers(1, 1 << 20), st.just(5), st.integers(0, (1 << 32) - 1)),
        st.tuples(st.integers(1, 1 << 20), st.just(2), st.binary(max_size=300)),
    ),
    max_size=8,
)


@PROPS
@given(FIELDS)
def test_skip_field_walks_every_wire_type(fields: list[tuple[int, int, int | bytes]]) -> None:
    encoded = [encode_field(*f) for f in fields]
    message = b"".join(encoded)
    pos = 0
    ends = []
    while pos < len(message):
        tag, pos = read_varint(message, pos, len(message))
        pos = skip_field(message, pos, len(message), tag & 7)
        ends.append(pos)
    assert ends == [sum(map(len, encoded[: i + 1])) for i in range(len(encoded))]


@pytest.mark.parametrize("wire", [3, 4, 6, 7])
def test_skip_field_rejects_group_and_invalid_wire_types(wire: int) -> None:
    with pytest.raises(WireError, match="invalid wire type"):
        skip_field(b"\x00" * 16, 0, 16, wire)


@pytest.mark.parametrize(("wire", "value"), [(1, b"\x00" * 7), (5, b"\x00" * 3), (2, b"\x05abc")])
def test_skip_field_rejects_a_value_running_past_its_message(wire: int, value: bytes) -> None:
    with pytest.raises(WireError, match="runs past the end"):
        skip_field(value, 0, len(value), wire)


@PROPS
@given(st.text(min_size=1, max_size=40), st.lists(I64, min_size=1, max_size=20))
def test_int64_entries_are_what_encode_example_writes(name: str, values: list[int]) -> None:
    entry = map_entry(name.encode(), int64_feature(values))
    want = encode_example({name: Feature.int64_list(values)})
    assert length_delimited(b"\x0a", entry) == want
    assert int64_feature(values) == encode_feature(Feature.int64_list(values))
    got = parse_example(want, squeeze=False)[name]
    assert got.tolist() == values


@PROPS
@given(st.text(min_size=1, max_size=40), st.lists(st.binary(max_size=300), max_size=5))
def test_bytes_entries_are_what_encode_example_writes(name: str, values: list[bytes]) -> None:
    entry = map_entry(name.encode(), bytes_feature(values))
    assert length_delimited(b"\x0a", entry) == encode_example({name: Feature.bytes_list(values)})


@PROPS
@given(st.lists(st.floats(width=32, allow_nan=False), max_size=40))
def test_float_entries_are_what_encode_example_writes(values: list[float]) -> None:
    packed = np.asarray(values, dtype="<f4").tobytes()
    entry = map_entry(b"f", float_feature(packed))
    assert length_delimited(b"\x0a", entry) == encode_example({"f": Feature.float_list(values)})


def test_empty_lists_keep_their_kind() -> None:
    assert int64_feature([]) == b"\x1a\x00"
    assert float_feature(b"") == b"\x12\x00"
    assert bytes_feature([]) == b"\x0a\x00"
