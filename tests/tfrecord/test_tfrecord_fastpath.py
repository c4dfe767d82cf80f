"""The tile strategy of Example decoding (``tilestream.tfrecord._fast``) against the generic parser.

The rule under test: whenever ``parse_fast`` (the readers' ``TileParser``) returns a dict, the generic
parser (``_decode_raw``, which has no fast path) returns an equal dict for
the same bytes, with the same key order and value types; whenever the bytes
are anything else, ``parse_fast`` returns ``None`` (or raises ``IndexError``,
which callers treat the same) and the generic parser decides. Checked

* exhaustively on every record of every real file of the shared test data
  (written by TensorFlow and other tools: none of them tile-shaped, so the
  fast path must decline or agree),
* on tile records written by ``serialized_record`` and by TensorFlow's
  ``tf.train.Example`` (every order of the four features), across the sizes
  where the varints of the lengths change width, where it must *accept*,
* with hypothesis: random tiles, random Examples of every feature kind,
  mutated tiles (flipped, inserted, deleted bytes) and random bytes, each
  decoded twice (the caches cold, then warm), inside a larger buffer whose
  surrounding bytes the fast path must never let change the result,
* through the public readers (``iter_examples``, ``TFRecord``) on a file of
  such records.
"""

from __future__ import annotations

import itertools
import struct
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import missing  # tests/conftest.py: skip here, fail under CI=true
from tilestream.tfrecord import (
    Feature,
    TFRecord,
    TFRecordWriter,
    _fast,
    encode_example,
    iter_examples,
    iter_records,
    parse_example,
    serialized_record,
)
from tilestream.tfrecord._decode import _decode_raw
from tilestream.tfrecord.example import encode_varint

PROPS = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Image sizes around every change of varint width of the lengths in a tile
# record (value, BytesList, Feature, entry, Example), and plain ones.
BOUNDARY_SIZES = sorted(
    {0, 1, 2, 50, 100}
    | {n + d for n in (128, 16384, 1 << 21) for d in range(-40, 8)}
    | {300, 4096, 34_000, 250_000}
)


#: The readers' own tile strategy (through their references: a doctest run may re-import modules).
TILES: _fast.TileParser = iter_examples.__globals__["TILES"]


def parse_fast(d: Any, s: int, e: int) -> dict[str, Any] | None:
    return TILES.parse(d, s, e)


@pytest.fixture(autouse=True)
def _never_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call tries the fast path (no pause after a run of other records)."""
    monkeypatch.setattr(TILES, "bad_run", 1 << 60)
    monkeypatch.setattr(TILES, "_run", 0)
    monkeypatch.setattr(TILES, "_paused", 0)


def generic(data: bytes) -> dict[str, Any] | Exception:
    """The generic parser's result (squeezed, as ``parse_example``), or its exception."""
    try:
        return _decode_raw(data, 0, len(data), True)
    except Exception as exc:  # the generic parser's own errors, compared by the caller
        return exc


def fast(buf: bytes, start: int, end: int) -> dict[str, Any] | None:
    try:
        return parse_fast(buf, start, end)
    except IndexError:
        return None


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal dicts: same keys in the same order, same value types and values."""
    if list(a) != list(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if type(x) is not type(y):
            return False
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=True):
                return False
        elif isinstance(x, list):
            if x != y:
                return False
        elif isinstance(x, float) and np.isnan(x):
            if not np.isnan(y):
                return False
        elif x != y:
            return False
    return True


def check(data: bytes, *, pad: bytes = b"") -> dict[str, Any] | None:
    """Assert the fast path agrees with the generic parser on ``data``; its result.

    ``data`` is decoded alone and inside ``pad + data + pad`` (the fast path
    reads a memory map past a record's end), several times each: the first
    calls may find the caches cold (and decline a record with many unseen
    entries) and fill them for the next.
    """
    want = generic(data)
    finals = []
    for buf, start in ((data, 0), (pad + data + pad, len(pad))):
        got = None
        for _ in range(8):
            got = fast(buf, start, start + len(data))
            if got is not None:
                assert not isinstance(want, Exception), (data[:80], want)
                assert same(got, want), (data[:80], got, want)
        finals.append(got)
    assert (finals[0] is None) == (finals[1] is None), "the surrounding bytes changed the answer"
    return finals[0]


# --------------------------------------------------------------------------- real files


@pytest.mark.testdata
def test_every_real_record_agrees(tfrecords_dir: Path) -> None:
    files = sorted(p for p in tfrecords_dir.rglob("*") if p.is_file() and p.suffix != ".md")
    files = [p for p in files if not p.name.endswith(".pbtxt")]
    assert len(files) >= 20
    records = 0
    for path in files:
        it = iter_records(path, allow_truncated=True, verify=False)
        for payload in it:
            check(payload, pad=b"\x0a\x7f\x0a\x05")
            records += 1
    assert records > 8_000


@pytest.mark.testdata
def test_real_files_read_the_same_through_iter_examples(tfrecords_dir: Path) -> None:
    for path in sorted(tfrecords_dir.glob("*.record")) + sorted(tfrecords_dir.glob("*.tfrecord")):
        if "sequence" in path.name:
            continue
        via_reader = list(iter_examples(path))
        via_generic = [_decode_raw(r, 0, len(r), True) for r in iter_records(path)]
        assert len(via_reader) == len(via_generic) > 0
        assert all(same(a, b) for a, b in zip(via_reader, via_generic, strict=True)), path


# --------------------------------------------------------------------------- tiles: accepted


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_tiles_of_every_size_take_the_fast_path(size: int) -> None:
    image = bytes((i * 7 + 1) & 0xFF for i in range(size))
    for slide, x, y in [("s", 0, 0), ("TCGA-AA-1234-01Z-00-DX1", 25_600, 131_072)]:
        rec = serialized_record(slide, image, x, y)
        got = check(rec, pad=b"\xff" * 8)
        # the fast path's shape: the image entry's four lengths are varints of
        # one width, 2 or 3 bytes (not: a few sizes just below 128 and 16384,
        # where the entry's length needs one byte more than the image's)
        w = len(encode_varint(size))
        if w in (2, 3) and len(encode_varint(size + 14 + 3 * w)) == w and len(rec) < (1 << 21):
            assert got is not None, size
        if got is not None:
            assert got == {"image_raw": image, "slide": slide.encode(), "loc_x": x, "loc_y": y}


def test_tile_shapes_beyond_the_fast_path_fall_back() -> None:
    # negative locations (10-byte varints), a slide name too long for a small
    # entry, a key longer than the fast path handles: still decoded correctly
    image = b"\xff\xd8" + bytes(5000)
    for rec in (
        serialized_record("s", image, -1, -(1 << 63)),
        serialized_record("x" * 300, image, 1, 2),
        encode_example({"k" * 100: image, "slide": b"s"}),
        encode_example({"image_raw": [image, image]}),
        encode_example({"image_raw": Feature.bytes_list([image]), "n": [1, 2, 3]}),
    ):
        check(rec)
        assert same(parse_example(rec), _decode_raw(rec, 0, len(rec), True))


def test_small_entry_cache_only_holds_immutable_values() -> None:
    rec = encode_example({"image_raw": bytes(300), "a": [1, 2], "f": [0.5, 1.5], "b": [b"x", b"y"]})
    got = check(rec)
    assert got is not None
    assert isinstance(got["a"], np.ndarray)
    assert all(type(v) in (bytes, int, float) or v is None for _, v in TILES.small.values())
    again = parse_fast(rec, 0, len(rec))
    assert again is not None and again["a"] is not got["a"]


@pytest.mark.tensorflow
def test_tensorflow_tiles_in_every_feature_order(tf: ModuleType) -> None:
    sizes = [120, 130, 16_000, 16_370, 16_384, 40_000, 300_000]
    for size, order in itertools.product(
        sizes, itertools.permutations(["image_raw", "slide", "loc_x", "loc_y"])
    ):
        image = bytes(range(256)) * (size // 256) + bytes(size % 256)
        values = {
            "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
            "slide": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"slide-1"])),
            "loc_x": tf.train.Feature(int64_list=tf.train.Int64List(value=[size])),
            "loc_y": tf.train.Feature(int64_list=tf.train.Int64List(value=[299])),
        }
        example = tf.train.Example(
            features=tf.train.Features(feature={k: values[k] for k in order})
        )
        data = example.SerializeToString()
        got = check(data, pad=b"\x0a" * 4)
        if size not in (120, 16_370):  # (lengths of mixed widths: either answer is allowed)
            assert got is not None, (size, order)
        assert got is None or got == {
            "image_raw": image,
            "slide": b"slide-1",
            "loc_x": size,
            "loc_y": 299,
        }


# --------------------------------------------------------------------------- properties

names = st.sampled_from(["image_raw", "slide", "loc_x", "loc_y", "image/encoded", "a", ""])
scalars = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=100, max_size=20_000),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(0, 1 << 30),
    st.floats(width=32, allow_nan=False),
)
features = st.dictionaries(
    names,
    st.one_of(
        scalars,
        st.lists(st.integers(-1000, 1 << 40), min_size=1, max_size=5),
        st.lists(st.binary(max_size=200), min_size=1, max_size=3),
        st.builds(Feature.int64_list, st.just([])),
        st.builds(Feature.bytes_list, st.just([])),
        st.just(Feature(None, [])),
    ),
    max_size=5,
)
tiles = st.builds(
    serialized_record,
    st.text(max_size=130),
    st.binary(min_size=0, max_size=40_000),
    st.integers(-(1 << 40), 1 << 40),
    st.integers(0, 1 << 21),
)


@PROPS
@given(data=tiles)
def test_random_tiles_agree(data: bytes) -> None:
    check(data, pad=b"\x0a\x0f\x0a\x05")


@PROPS
@given(feats=features)
def test_random_examples_agree(feats: dict[str, Any]) -> None:
    check(encode_example(feats), pad=b"\x12\x00")


@PROPS
@given(
    data=tiles,
    cuts=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "set"]),
            st.floats(0, 1),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    ),
    head=st.booleans(),
)
def test_mutated_tiles_never_disagree(
    data: bytes, cuts: list[tuple[str, float, int]], head: bool
) -> None:
    buf = bytearray(data)
    for kind, where, value in cuts:
        if not buf:
            break
        # most mutations land in the structure (the first and last ~70 bytes), not the image
        span = min(len(buf), 70)
        i = int(where * (span - 1))
        if not head:
            i = len(buf) - 1 - i
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "insert":
            buf.insert(i, value)
        elif kind == "delete":
            del buf[i]
        else:
            buf[i] = value
    check(bytes(buf), pad=bytes(range(16)))


@PROPS
@given(data=st.binary(max_size=300))
def test_random_bytes_agree(data: bytes) -> None:
    check(data, pad=b"\x0a")
    check(b"\x0a" + bytes([len(data)]) + data if len(data) < 128 else data)


def test_learned_heads_do_not_admit_other_layouts() -> None:
    # learn the image_raw head, then present heads that differ in one length
    # by +-1 (lengths that no longer nest): never accepted
    image = bytes(20_000)
    rec = serialized_record("s", image, 3, 4)
    assert parse_fast(rec, 0, len(rec)) is not None
    for offset in range(1, 31):
        for delta in (-1, 1):
            bad = bytearray(rec)
            bad[offset] = (bad[offset] + delta) & 0xFF
            check(bytes(bad))


# --------------------------------------------------------------------------- public readers


def test_readers_use_it_and_agree(tmp_path: Path) -> None:
    path = tmp_path / "tiles.tfrecords"
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(100, 60_000, 300)] + BOUNDARY_SIZES[:60]
    expected = []
    with TFRecordWriter(path) as w:
        for i, size in enumerate(sizes):
            image = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            x, y = (i % 17) * 256, (i // 17) * 256
            w.write(serialized_record(f"slide-{i % 3}", image, x, y), location=(x, y))
            expected.append(
                {"image_raw": image, "slide": f"slide-{i % 3}".encode(), "loc_x": x, "loc_y": y}
            )
    assert list(iter_examples(path)) == expected
    assert list(iter_examples(path, verify=False)) == expected
    with TFRecord(path) as tfr:
        for i in rng.permutation(len(sizes))[:100]:
            want = expected[i]
            slide, image = tfr.get_record_by_xy(want["loc_x"], want["loc_y"])
            assert (slide, image) == (want["slide"].decode(), want["image_raw"])
            assert tfr[int(i)] == {**want, "slide": want["slide"].decode()}


def _count_fast_attempts(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record every attempt of the fast path (True when it parsed the record)."""
    real = TILES._parse
    attempts: list[bool] = []

    def counting(d: Any, s: int, e: int) -> Any:
        out = real(d, s, e)
        attempts.append(out is not None)
        return out

    monkeypatch.setattr(TILES, "_parse", counting)
    return attempts


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_readers_take_the_fast_path_once_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    reader = sys.modules[iter_examples.__module__]
    if not compiled:
        monkeypatch.setattr(reader, "_native", None)
    elif reader._native is None:
        missing("the compiled core tilestream.tfrecord._native is not built")
    tiles = tmp_path / "tiles.tfrecords"
    with TFRecordWriter(tiles) as w:
        for i in range(20):
            w.write(serialized_record("s", bytes(range(256)) * (i + 1), i, 0), location=(i, 0))
    other = tmp_path / "other.tfrecords"
    with TFRecordWriter(other) as w:
        for i in range(5):  # not tile-shaped: the fast path is tried once per record
            w.write(encode_example({"label": i, "name": b"x" * i, "a": 1, "b": 2, "c": 3}))
    attempts = _count_fast_attempts(monkeypatch)
    assert len(list(iter_examples(tiles))) == 20
    # the compiled core decodes tile records itself; the Python loop tries the fast path
    assert attempts == ([] if compiled else [True] * 20)
    attempts.clear()
    with TFRecord(tiles) as tfr:
        tfr.get_record_by_xy(7, 0)
    assert attempts == [True]
    attempts.clear()
    assert [r["label"] for r in iter_examples(other)] == list(range(5))
    if compiled:  # single values of any names: decoded in C too
        assert attempts == []
    else:
        assert len(attempts) == 5 and not attempts[0]  # the first, with 5 unseen fields, declined


def test_corrupt_structure_still_reports_the_generic_error(tmp_path: Path) -> None:
    from tilestream.errors import CorruptRecordError

    rec = bytearray(serialized_record("s", bytes(20_000), 1, 2))
    rec[1] ^= 0x01  # the Example's length no longer matches the payload
    assert parse_fast(bytes(rec), 0, len(rec)) is None
    with pytest.raises(CorruptRecordError):
        parse_example(bytes(rec))
    # and through a file read in place (memory-mapped)
    path = tmp_path / "bad.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        w.write(bytes(rec))
    with pytest.raises(CorruptRecordError, match="record 0"):
        list(iter_examples(path))
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] == len(rec)


# --------------------------------------------------------------------------- forged heads


def _tail() -> bytes:
    full = serialized_record("s", b"", 7, 9)
    return full[full.index(b"\x0a\x05slide") - 2 :]


def _forged(w: int, u: int) -> bytes:
    """A record whose image head is the learned constant part plus ``u`` by the layout.

    For a valid ``u`` this is exactly what the encoder writes; otherwise
    (continuation bits wrong, a carry that would run on into the next byte)
    the arithmetic no longer describes real varints and the head must be refused.
    """
    kl = len(b"image_raw")
    mul, corr = _fast._layout(w, kl)
    learned = {v: k for k, v in TILES.large[w].items()}
    t = learned["image_raw"]
    hl = 6 + kl + 4 * w
    head = (t + u * mul + corr[u & 0x7F]).to_bytes(hl, "little")
    m = (u & 0x7F) | ((u >> 1) & 0x3F80) | ((u >> 2) & 0x1FC000)
    body = head + bytes(m) + _tail()
    return b"\x0a" + encode_varint(len(body)) + body


@pytest.mark.parametrize("w", [2, 3])
def test_forged_heads_are_refused(w: int) -> None:
    size = 200 if w == 2 else 20_000
    seed = serialized_record("s", bytes(size), 7, 9)
    assert parse_fast(seed, 0, len(seed)) is not None  # learns image_raw's head
    accepted = refused = 0
    for b1 in (0x00, 0x01, 0x7E, 0x7F, 0x80, 0xFF):
        for lo in (0x00, 0x10, 0x60, 0x70, 0x7F, 0x80, 0x90, 0xFF):
            for top in (0x01, 0x05) if w == 3 else (None,):
                u = lo | (b1 << 8) if top is None else lo | (b1 << 8) | (top << 16)
                if top is not None:
                    for t in (top, top | 0x80):
                        u = lo | (b1 << 8) | (t << 16)
                        got = check(_forged(w, u))
                        accepted += got is not None
                        refused += got is None
                else:
                    got = check(_forged(w, u))
                    accepted += got is not None
                    refused += got is None
    assert accepted and refused


@pytest.mark.parametrize("size", [300, 20_000])
def test_records_cut_short_inside_a_known_entry_are_refused(size: int) -> None:
    # the record ends k bytes early (its length fixed to match) while the
    # buffer goes on with exactly the missing bytes, as a memory map does:
    # the entries are all known to the caches, yet must not be read past the end
    rec = serialized_record("s", bytes(size), 300, 4)
    assert parse_fast(rec, 0, len(rec)) is not None
    hdr = next(h for h in (2, 3, 4) if rec[:h] == b"\x0a" + encode_varint(len(rec) - h))
    body = rec[hdr:]  # the Features message
    for k in (1, 2, 3, 15, 16, 17, 18, 33, 40, 100):
        cut = body[:-k]
        short = b"\x0a" + encode_varint(len(cut)) + cut
        got = check(short, pad=body[-k:] + b"\x0a")
        assert (got is None) == (k not in (16, 33)), k  # whole entries cut: still valid


def test_pauses_after_a_run_of_other_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TILES, "bad_run", 8)
    monkeypatch.setattr(TILES, "skip", 50)
    tile = serialized_record("s", bytes(1000), 1, 2)
    floats = encode_example({"image_floats": np.arange(784, dtype=np.float32), "n": 3})
    assert parse_fast(tile, 0, len(tile)) is not None
    for _ in range(8):  # declined: a long float list is not a bytes value
        assert parse_fast(floats, 0, len(floats)) is None
    # paused: tiles go to the generic parser too, with the same results
    for _ in range(49):
        assert parse_fast(tile, 0, len(tile)) is None
    want = {"image_raw": bytes(1000), "slide": b"s", "loc_x": 1, "loc_y": 2}
    assert parse_example(tile) == want  # (the 50th call of the pause)
    assert parse_fast(tile, 0, len(tile)) is not None  # and back
    # a tile among other records resets the run
    for _ in range(7):
        assert parse_fast(floats, 0, len(floats)) is None
    assert parse_fast(tile, 0, len(tile)) is not None
    assert parse_fast(floats, 0, len(floats)) is None
    assert parse_fast(tile, 0, len(tile)) is not None


def test_records_with_many_new_small_entries_are_declined() -> None:
    # an object-detection style record: many small entries seen for the first time
    feats = {f"image/object/bbox/{k}": [0.1 * i, 0.2 * i] for i, k in enumerate("abcdef")}
    rec = encode_example({"image/encoded": bytes(3000), **feats, "image/filename": b"x.jpg"})
    TILES.small.clear()
    assert parse_fast(rec, 0, len(rec)) is None  # more than _MAX_MISSES unseen entries
    tile = serialized_record("new-slide", bytes(3000), 12_345, 67_890)
    assert parse_fast(tile, 0, len(tile)) is not None  # three unseen entries: fine


def test_a_tile_parser_of_its_own_keeps_its_own_caches_and_pause() -> None:
    # the strategy is handed the generic entry decoding: no shared module state
    from tilestream.tfrecord._decode import small_entry

    mine = _fast.TileParser(small_entry)
    mine.bad_run, mine.skip = 2, 3
    tile = serialized_record("own", bytes(500), 5, 6)
    floats = encode_example({"image_floats": np.arange(64, dtype=np.float32), "n": 3})
    assert mine.parse(tile, 0, len(tile)) == parse_example(tile)
    assert mine.small and all(mine.large[w] is not TILES.large[w] for w in range(4))
    for _ in range(2):
        assert mine.parse(floats, 0, len(floats)) is None
    assert mine.parse(tile, 0, len(tile)) is None  # paused
    assert TILES.parse(tile, 0, len(tile)) is not None  # the readers' strategy is not
    for _ in range(2):
        assert mine.parse(tile, 0, len(tile)) is None
    assert mine.parse(tile, 0, len(tile)) == parse_example(tile)  # after `skip` calls
