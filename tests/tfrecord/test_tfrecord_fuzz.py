"""Property-based (hypothesis) tests of the TFRecord reader and the Example codec.

Bad bytes of every kind go into ``iter_records`` (CRC checks on and off,
``allow_truncated`` on and off, plain and compressed), ``TFRecord`` and
``decode_example`` / ``parse_example``: random bytes, and valid files with
flipped bits, cuts at every position class, inserted and deleted bytes. The
only acceptable outcomes are a clean result or a :class:`TileStreamError`
subclass; where the framing makes the answer certain (a single flipped bit
with CRC checks on, a cut inside a record) the exact error, record number and
byte offset are checked. Decoding is compared with the protobuf runtime's
own parse of the same bytes wherever both accept them.

Round trips: random feature dicts survive ``encode_example`` ->
``decode_example``; random payloads survive write -> read in every
compression; random Slideflow tiles survive write -> ``TFRecord`` random access.

Kept fast (a few seconds): bounded example counts, a deadline, no example
database written into the repository.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import math
import os
import struct
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilestream.errors import (
    CorruptRecordError,
    TileStreamError,
    TruncatedRecordError,
    UnsupportedRecordError,
)
from tilestream.tfrecord import (
    Feature,
    TFRecord,
    TFRecordWriter,
    decode_example,
    encode_example,
    iter_records,
    parse_example,
    serialized_record,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

FUZZ = settings(
    max_examples=120,
    deadline=timedelta(seconds=2),  # generous per example; a hang fails loudly
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(FUZZ, max_examples=40)

# --------------------------------------------------------------------------- framing by hand

_MASK = 0xA282EAD8


def _crc32c(data: bytes) -> int:
    """CRC32C computed independently of tilestream (bitwise, table-driven)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def _masked(data: bytes) -> bytes:
    c = _crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + _MASK) & 0xFFFFFFFF)


def frame(payloads: list[bytes]) -> tuple[bytes, list[int]]:
    """TFRecord bytes for ``payloads`` and the start offset of each record (plus the end)."""
    out = bytearray()
    starts = []
    for p in payloads:
        starts.append(len(out))
        head = struct.pack("<Q", len(p))
        out += head + _masked(head) + p + _masked(p)
    starts.append(len(out))
    return bytes(out), starts


def test_independent_crc_matches_known_vector() -> None:
    assert _crc32c(b"123456789") == 0xE3069283


# --------------------------------------------------------------------------- helpers

_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _file(scratch: Path, data: bytes, suffix: str = ".tfrecords") -> Path:
    path = scratch / f"f{next(_counter)}{suffix}"
    path.write_bytes(data)
    return path


def read_all(source: Any, **kwargs: Any) -> tuple[list[bytes], TileStreamError | None]:
    """Records read before the first error, and that error (only ours may escape)."""
    got: list[bytes] = []
    try:
        for rec in iter_records(source, **kwargs):
            got.append(bytes(rec))
    except TileStreamError as exc:
        return got, exc
    return got, None


def decode_or_error(data: bytes) -> dict[str, Feature] | None:
    try:
        out = decode_example(data)
    except TileStreamError:
        return None
    assert isinstance(out, dict)
    for name, feature in out.items():
        assert isinstance(name, str)
        assert isinstance(feature, Feature)
    return out


# A few valid payloads used as mutation seeds: realistic Example records.
SEEDS = [
    serialized_record("slide-1", bytes(range(256)) * 3, 128, 384),
    encode_example(
        {
            "b": Feature.bytes_list([b"", b"xyz", "ü".encode()]),
            "f": Feature.float_list([0.5, -1.0, math.inf]),
            "i": Feature.int64_list([0, -1, 2**63 - 1, 300]),
            "e": Feature.int64_list([]),
            "k": Feature(None, []),
        }
    ),
    b"",
]
VALID_FILE, STARTS = frame(SEEDS)

# --------------------------------------------------------------------------- random bytes

READ_OPTIONS = st.fixed_dictionaries(
    {
        "compression": st.sampled_from(["auto", None, "gzip", "zlib"]),
        "verify": st.booleans(),
        "allow_truncated": st.booleans(),
    }
)


@FUZZ
@given(data=st.binary(max_size=600), options=READ_OPTIONS)
def test_random_bytes_into_reader_give_only_our_errors(
    scratch: Path, data: bytes, options: dict[str, Any]
) -> None:
    read_all(io.BytesIO(data), **options)
    read_all(_file(scratch, data), **options)


@FUZZ
@given(
    length=st.integers(0, 2**64 - 1),
    tail=st.binary(max_size=40),
    fix_crc=st.booleans(),
    verify=st.booleans(),
)
def test_absurd_lengths_are_refused_not_allocated(
    scratch: Path, length: int, tail: bytes, fix_crc: bool, verify: bool
) -> None:
    # A header whose length may be huge (with a valid length CRC or not):
    # the reader must neither try to allocate it nor hang.
    head = struct.pack("<Q", length)
    data = head + (_masked(head) if fix_crc else b"\0\0\0\0") + tail
    got, err = read_all(_file(scratch, data), verify=verify, compression=None)
    if length + 16 <= len(data):
        return  # a length that fits: covered by the other properties
    assert err is not None
    assert isinstance(err, CorruptRecordError)
    assert err.record == 0
    assert err.offset == 0
    assert got == []


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_into_example_decoder(data: bytes) -> None:
    decode_or_error(data)
    with contextlib.suppress(TileStreamError):
        parse_example(data)


# --------------------------------------------------------------------------- mutated files


def _flipped(bit: int) -> bytes:
    data = bytearray(VALID_FILE)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


@pytest.mark.parametrize("allow_truncated", [False, True])
def test_every_single_bit_flip_is_detected_with_crc_checks(allow_truncated: bool) -> None:
    # Exhaustive over every bit of the file: lengths, both CRCs, payloads.
    for bit in range(8 * len(VALID_FILE)):
        record = max(i for i, s in enumerate(STARTS[:-1]) if s <= bit // 8)
        got, err = read_all(
            io.BytesIO(_flipped(bit)), compression=None, allow_truncated=allow_truncated
        )
        # The intact records before the damaged one are served, then an exact error.
        assert got == SEEDS[:record], bit
        assert isinstance(err, CorruptRecordError), (bit, err)
        assert err.record == record, bit
        assert err.offset == STARTS[record], bit


def test_every_single_bit_flip_without_crc_checks_gives_only_our_errors() -> None:
    # Without CRCs a flipped payload goes through; a flipped length misframes
    # the stream. Either way, reading and decoding raise nothing but our errors.
    for bit in range(8 * len(VALID_FILE)):
        for allow_truncated in (False, True):
            got, _ = read_all(
                io.BytesIO(_flipped(bit)),
                compression=None,
                verify=False,
                allow_truncated=allow_truncated,
            )
            for rec in got:
                try:
                    decode_or_error(rec)
                except Exception as exc:  # report the bit, then fail
                    raise AssertionError(f"bit {bit}: {type(exc).__name__}: {exc}") from exc


def test_truncation_at_every_position() -> None:
    # Every cut of a valid file: inside a length, its CRC, a payload, a data
    # CRC, and exactly at record boundaries.
    for cut in range(len(VALID_FILE) + 1):
        complete = sum(1 for end in STARTS[1:] if end <= cut)
        data = VALID_FILE[:cut]
        got, err = read_all(io.BytesIO(data), compression=None)
        assert got == SEEDS[:complete], cut
        if cut in STARTS:
            assert err is None, cut
        else:
            assert isinstance(err, TruncatedRecordError), (cut, err)
            assert err.record == complete, cut
            assert err.offset == STARTS[complete], cut
        # allow_truncated: every intact record, then a clean stop.
        got, err = read_all(io.BytesIO(data), compression=None, allow_truncated=True)
        assert got == SEEDS[:complete], cut
        assert err is None, (cut, err)
        got, err = read_all(io.BytesIO(data), compression=None, verify=False)
        assert got == SEEDS[:complete], cut
        assert (err is None) == (cut in STARTS), cut


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_truncated_compressed_stream_at_every_position(compression: str) -> None:
    packed = (
        gzip.compress(VALID_FILE, mtime=0) if compression == "gzip" else zlib.compress(VALID_FILE)
    )
    for cut in range(1, len(packed)):
        for allow in (False, True):
            got, err = read_all(
                io.BytesIO(packed[:cut]), compression=compression, allow_truncated=allow
            )
            assert got == SEEDS[: len(got)], cut  # only intact records, in order
            if not allow:
                assert err is not None, cut  # a cut compressed stream is never complete
    got, err = read_all(io.BytesIO(packed), compression=compression)
    assert (got, err) == (SEEDS, None)


@FUZZ
@given(
    pos=st.integers(0, len(VALID_FILE)),
    inserted=st.binary(min_size=1, max_size=20),
    verify=st.booleans(),
)
def test_inserted_bytes(pos: int, inserted: bytes, verify: bool) -> None:
    data = VALID_FILE[:pos] + inserted + VALID_FILE[pos:]
    got, err = read_all(io.BytesIO(data), compression=None, verify=verify)
    complete = sum(1 for end in STARTS[1:] if end <= pos)
    assert got[:complete] == SEEDS[:complete]
    if verify:
        # A shifted frame cannot pass both CRCs (but by a 2**-32 chance).
        assert err is not None
        assert err.record is not None
        assert err.record >= complete


@FUZZ
@given(
    start=st.integers(0, len(VALID_FILE) - 1),
    size=st.integers(1, 40),
    verify=st.booleans(),
)
def test_deleted_bytes(start: int, size: int, verify: bool) -> None:
    stop = min(len(VALID_FILE), start + size)
    data = VALID_FILE[:start] + VALID_FILE[stop:]
    got, err = read_all(io.BytesIO(data), compression=None, verify=verify)
    first = sum(1 for end in STARTS[1:] if end <= start)
    assert got[:first] == SEEDS[:first]
    if start in STARTS and stop in STARTS:
        # Whole records removed: what remains is a valid file.
        last = STARTS.index(stop)
        assert (got, err) == (SEEDS[:first] + SEEDS[last:], None)
    elif verify:
        assert isinstance(err, CorruptRecordError)


@FEW
@given(
    compression=st.sampled_from(["gzip", "zlib"]),
    pos=st.integers(0, 10_000),
    mutation=st.sampled_from(["flip", "insert", "delete"]),
    blob=st.binary(min_size=1, max_size=8),
    verify=st.booleans(),
)
def test_mutated_compressed_files(
    scratch: Path, compression: str, pos: int, mutation: str, blob: bytes, verify: bool
) -> None:
    packed = (
        gzip.compress(VALID_FILE, mtime=0) if compression == "gzip" else zlib.compress(VALID_FILE)
    )
    pos %= len(packed)
    if mutation == "flip":
        data = packed[:pos] + bytes([packed[pos] ^ (blob[0] or 1)]) + packed[pos + 1 :]
    elif mutation == "insert":
        data = packed[:pos] + blob + packed[pos:]
    else:
        data = packed[:pos] + packed[pos + len(blob) :]
    for source in (io.BytesIO(data), _file(scratch, data)):
        got, _ = read_all(source, compression=compression, verify=verify)
        for rec in got:
            decode_or_error(rec)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS[:2]),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 10**6),
                  st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=4,
    ),
)  # fmt: skip
def test_mutated_examples_into_decoder(seed: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    data = seed
    for op, pos, blob in edits:
        pos %= max(1, len(data))
        if op == "flip" and data:
            data = data[:pos] + bytes([data[pos] ^ (blob[0] or 1)]) + data[pos + 1 :]
        elif op == "insert":
            data = data[:pos] + blob + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + len(blob) :]
        else:
            data = data[:pos]
    decode_or_error(data)


@FEW
@given(pos=st.integers(0, len(VALID_FILE) - 1), blob=st.binary(min_size=1, max_size=4))
def test_tfrecord_random_access_on_damaged_file(scratch: Path, pos: int, blob: bytes) -> None:
    # A Slideflow file with damaged bytes: opening it and reading any record
    # gives a record or one of our errors.
    tiles = [serialized_record("s", bytes([i]) * (50 + i), 256 * i, 0) for i in range(5)]
    data, _ = frame(tiles)
    pos %= len(data)
    data = data[:pos] + bytes([data[pos] ^ (blob[0] or 1)]) + blob[1:] + data[pos + 1 :]
    path = _file(scratch, data)
    try:
        with TFRecord(path) as rec:
            for i in range(len(rec)):
                rec[i]
            rec.get_record_by_xy(0, 0)
    except TileStreamError:
        pass


INDEX_TILES = [
    (f"s{i}", bytes([i]) * (40 + 7 * i), 256 * (i % 3), 256 * (i // 3)) for i in range(7)
]


@FEW
@given(
    mutation=st.sampled_from(
        ["swap_locations", "swap_offsets", "shift_offset", "random_locations", "drop_last",
         "bad_length", "duplicate_location"]
    ),
    i=st.integers(0, len(INDEX_TILES) - 1),
    j=st.integers(0, len(INDEX_TILES) - 1),
    delta=st.integers(-40, 40).filter(bool),
)  # fmt: skip
def test_an_index_that_lies_never_yields_wrong_tiles(
    scratch: Path, mutation: str, i: int, j: int, delta: int
) -> None:
    # A tampered .index.npz (its recorded file size and mtime kept, so only
    # its content lies): every answer is the right tile or one of our errors.
    path = scratch / f"lie{next(_counter)}.tfrecords"
    with TFRecordWriter(path) as writer:
        for slide, img, x, y in INDEX_TILES:
            writer.write(serialized_record(slide, img, x, y), location=(x, y))
    index = path.with_name(path.name.replace(".tfrecords", ".index.npz"))
    with np.load(index) as z:
        arrays = {k: z[k].copy() for k in z.files}
    offsets, locations = arrays["arr_0"], arrays["locations"]
    if mutation == "swap_locations":
        locations[[i, j]] = locations[[j, i]]
    elif mutation == "swap_offsets":
        offsets[[i, j]] = offsets[[j, i]]
    elif mutation == "shift_offset":
        offsets[i, 0] += delta
    elif mutation == "random_locations":
        locations[:] = np.random.default_rng(abs(delta)).integers(0, 1024, locations.shape)
    elif mutation == "drop_last":
        arrays["arr_0"], arrays["locations"] = offsets[:-1], locations[:-1]
    elif mutation == "bad_length":
        offsets[i, 1] += delta
    else:
        locations[i] = locations[j]
    stat = os.stat(index)
    with open(index, "wb") as f:
        np.savez(f, **arrays)
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    by_xy = {(x, y): (slide, img) for slide, img, x, y in INDEX_TILES}
    try:
        with TFRecord(path) as rec:
            for k, (slide, img, x, y) in enumerate(INDEX_TILES):
                with contextlib.suppress(TileStreamError):
                    row = rec[k]
                    assert (row["slide"], row["image_raw"]) == (slide, img), k
                with contextlib.suppress(TileStreamError):
                    assert rec.get_record_by_xy(x, y) == by_xy[(x, y)], (x, y)
    except TileStreamError:
        pass


# --------------------------------------------------------------------------- oracle: protobuf


@pytest.fixture(scope="module")
def example_cls() -> Any:
    """``tf.train.Example`` built from its .proto definition with the protobuf runtime."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:  # protobuf comes with the test extra (tensorflow)
        if IN_CI:
            pytest.fail("protobuf is not installed (CI=true: a failure, not a skip)")
        pytest.skip("protobuf is not installed")
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tilestream_fuzz_example.proto", package="tsfuzz", syntax="proto3"
    )
    fd = descriptor_pb2.FieldDescriptorProto
    repeated, optional = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> Any:
        msg = fdp.message_type.add(name=name)
        for fname, number, label, ftype, type_name in fields:
            field = msg.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = type_name
        return msg

    message("BytesList", [("value", 1, repeated, fd.TYPE_BYTES, "")])
    message("FloatList", [("value", 1, repeated, fd.TYPE_FLOAT, "")])
    message("Int64List", [("value", 1, repeated, fd.TYPE_INT64, "")])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, optional, fd.TYPE_MESSAGE, ".tsfuzz.BytesList"),
            ("float_list", 2, optional, fd.TYPE_MESSAGE, ".tsfuzz.FloatList"),
            ("int64_list", 3, optional, fd.TYPE_MESSAGE, ".tsfuzz.Int64List"),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = message(
        "Features", [("feature", 1, repeated, fd.TYPE_MESSAGE, ".tsfuzz.Features.FeatureEntry")]
    )
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, label=optional, type=fd.TYPE_STRING)
    entry.field.add(
        name="value", number=2, label=optional, type=fd.TYPE_MESSAGE, type_name=".tsfuzz.Feature"
    )
    entry.options.map_entry = True
    message("Example", [("features", 1, optional, fd.TYPE_MESSAGE, ".tsfuzz.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tsfuzz.Example"))


def _key(kind: str | None, values: Any) -> tuple[Any, ...]:
    if kind == "float_list":
        arr = np.asarray(list(values), np.float32)
        # Bit-exact (-0.0 keeps its sign) except NaN payloads, which a float ->
        # double -> float round trip in the protobuf runtime may quiet.
        arr[np.isnan(arr)] = np.float32("nan")
        return (kind, tuple(arr.view(np.uint32).tolist()))
    if kind == "int64_list":
        return (kind, tuple(int(v) for v in values))
    if kind == "bytes_list":
        return (kind, tuple(bytes(v) for v in values))
    return (None, ())


def ours_keys(features: dict[str, Feature]) -> dict[str, tuple[Any, ...]]:
    return {name: _key(f.kind, f.value) for name, f in features.items()}


def oracle_keys(example_cls: Any, data: bytes) -> dict[str, tuple[Any, ...]] | None:
    from google.protobuf.message import DecodeError

    try:
        msg = example_cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    out = {}
    for name, feature in msg.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = _key(kind, getattr(feature, kind).value if kind else ())
    return out


def test_oracle_agrees_on_a_known_example(example_cls: Any) -> None:
    assert oracle_keys(example_cls, SEEDS[1]) == ours_keys(decode_example(SEEDS[1]))


@FUZZ
@given(
    seed=st.sampled_from(SEEDS[:2]),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 10**6),
                  st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=3,
    ),
)  # fmt: skip
def test_decoder_agrees_with_protobuf_on_mutated_examples(
    example_cls: Any, seed: bytes, edits: list[tuple[str, int, bytes]]
) -> None:
    data = seed
    for op, pos, blob in edits:
        pos %= max(1, len(data))
        if op == "flip" and data:
            data = data[:pos] + bytes([data[pos] ^ (blob[0] or 1)]) + data[pos + 1 :]
        elif op == "insert":
            data = data[:pos] + blob + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + len(blob) :]
        else:
            data = data[:pos]
    ours = decode_or_error(data)
    theirs = oracle_keys(example_cls, data)
    if ours is not None and theirs is not None:
        # Every feature protobuf decodes, we decode identically. (The protobuf
        # runtime drops a map entry that carries unknown fields, where we keep
        # it: TensorFlow never writes such entries, so either is acceptable.)
        mine = ours_keys(ours)
        assert {k: mine.get(k) for k in theirs} == theirs


def _int64_example(list_body: bytes) -> bytes:
    feature = b"\x1a" + bytes([len(list_body)]) + list_body
    entry = b"\x0a\x01i\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    return b"\x0a" + bytes([len(features)]) + features


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("last", [0x01, 0x03, 0x7F])
def test_overlong_ten_byte_varint_in_int64_list(example_cls: Any, packed: bool, last: int) -> None:
    # A 10-byte varint whose last byte carries bits beyond 64: protobuf keeps
    # the low 64 bits; refusing it as corrupt is acceptable too. A raw
    # OverflowError from numpy is not.
    varint = b"\xff" * 9 + bytes([last])
    body = b"\x0a" + bytes([len(varint)]) + varint if packed else b"\x08" + varint
    data = _int64_example(body)
    assert oracle_keys(example_cls, data) == {"i": ("int64_list", (-1,))}
    try:
        ours = decode_example(data)
    except CorruptRecordError:
        return
    assert ours_keys(ours) == {"i": ("int64_list", (-1,))}


# --------------------------------------------------------------------------- round trips

names = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
float32s = st.floats(width=32, allow_nan=True, allow_infinity=True)
int64s = st.integers(-(2**63), 2**63 - 1)
features = st.one_of(
    st.lists(st.binary(max_size=40), max_size=5).map(Feature.bytes_list),
    st.lists(float32s, max_size=20).map(Feature.float_list),
    st.lists(int64s, max_size=20).map(Feature.int64_list),
    st.just(Feature(None, [])),
)
# Plain Python values, inferred: (value given, the Feature it must become).
inferred = st.one_of(
    int64s.map(lambda v: (v, Feature.int64_list([v]))),
    float32s.map(lambda v: (v, Feature.float_list([v]))),
    st.binary(max_size=30).map(lambda v: (v, Feature.bytes_list([v]))),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=10).map(
        lambda v: (v, Feature.bytes_list([v.encode("utf-8")]))
    ),
    st.lists(int64s, min_size=1, max_size=8).map(lambda v: (v, Feature.int64_list(v))),
    st.lists(float32s, min_size=1, max_size=8).map(lambda v: (v, Feature.float_list(v))),
)


@FUZZ
@given(feats=st.dictionaries(names, features, max_size=8))
def test_encode_decode_round_trip(example_cls: Any, feats: dict[str, Feature]) -> None:
    data = encode_example(feats)
    back = decode_example(data)
    assert list(back) == list(feats)  # same names, in the same order
    assert ours_keys(back) == ours_keys(feats)
    assert oracle_keys(example_cls, data) == ours_keys(feats)  # protobuf reads the same


@FUZZ
@given(values=st.dictionaries(names, inferred, max_size=6))
def test_inferred_values_round_trip(values: dict[str, tuple[Any, Feature]]) -> None:
    data = encode_example({k: v for k, (v, _) in values.items()})
    assert data == encode_example({k: f for k, (_, f) in values.items()})
    assert ours_keys(decode_example(data)) == ours_keys({k: f for k, (_, f) in values.items()})


@FUZZ
@given(
    a=st.dictionaries(names, features, max_size=5), b=st.dictionaries(names, features, max_size=5)
)
def test_concatenated_examples_merge_like_protobuf(
    example_cls: Any, a: dict[str, Feature], b: dict[str, Feature]
) -> None:
    # Protobuf semantics: concatenated messages merge; a repeated map key keeps the last entry.
    data = encode_example(a) + encode_example(b)
    assert ours_keys(decode_example(data)) == oracle_keys(example_cls, data)
    assert ours_keys(decode_example(data)) == ours_keys({**a, **b})


@FEW
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    compression=st.sampled_from([None, "gzip", "zlib"]),
)
def test_write_read_round_trip(
    scratch: Path, payloads: list[bytes], compression: str | None
) -> None:
    path = scratch / f"rt{next(_counter)}.tfrecords"
    with TFRecordWriter(path, compression=compression) as writer:
        for payload in payloads:
            writer.write(payload)
    assert list(iter_records(path, compression=compression)) == payloads
    assert list(iter_records(path, compression=compression, verify=False)) == payloads
    if compression is None:
        assert path.read_bytes() == frame(payloads)[0]  # the framing, byte for byte
    else:
        raw = path.read_bytes()
        plain = gzip.decompress(raw) if compression == "gzip" else zlib.decompress(raw)
        assert plain == frame(payloads)[0]


@FEW
@given(
    tiles=st.lists(
        st.tuples(
            st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
            st.binary(max_size=200),
            st.integers(-(2**40), 2**40),
            st.integers(-(2**40), 2**40),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda t: (t[2], t[3]),
    )
)
def test_slideflow_tiles_round_trip_through_tfrecord(
    scratch: Path, tiles: list[tuple[str, bytes, int, int]]
) -> None:
    path = scratch / f"sf{next(_counter)}.tfrecords"
    with TFRecordWriter(path) as writer:
        for slide, img, x, y in tiles:
            writer.write(serialized_record(slide, img, x, y), location=(x, y))
    with TFRecord(path) as rec:
        assert len(rec) == len(tiles)
        for i, (slide, img, x, y) in enumerate(tiles):
            row = rec[i]
            assert row["slide"] == slide
            assert row["image_raw"] == img
            assert int(row["loc_x"]) == x
            assert int(row["loc_y"]) == y
            assert rec.get_record_by_xy(x, y) == (slide, img)  # Slideflow's (slide, image)


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    for size in sizes:
        yield data[pos : pos + size]
        pos += size
    yield data[pos:]


class _Trickle(io.RawIOBase):
    """A binary stream that returns at most a few bytes per read (like a pipe)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._parts = [p for p in _chunks(data, sizes) if p]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._parts:
            return 0
        part = self._parts[0]
        n = min(len(part), len(buffer))
        buffer[:n] = part[:n]
        self._parts[0] = part[n:]
        if not self._parts[0]:
            self._parts.pop(0)
        return n


@FEW
@given(sizes=st.lists(st.integers(1, 7), max_size=30))
def test_short_reads_from_a_stream(sizes: list[int]) -> None:
    # File objects may return fewer bytes than asked (pipes, sockets).
    got, err = read_all(_Trickle(VALID_FILE, sizes), compression=None)
    assert (got, err) == (SEEDS, None)


def test_sequence_example_is_refused_not_misread() -> None:
    # SequenceExample: context (field 1) + feature_lists (field 2).
    context = encode_example({"a": 1})[2:]
    seq = b"\x0a" + bytes([len(context)]) + context + b"\x12\x00"
    with pytest.raises(UnsupportedRecordError):
        decode_example(seq)
