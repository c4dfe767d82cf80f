"""Property tests of the compiled core's codecs: ``crc32c`` and ``parse_tile``.

* ``crc32c`` against the ``crc32c`` package, over lengths around the
  three-stream block boundaries (768 and 24576 bytes), unaligned views and
  arbitrary initial values;
* ``parse_tile`` against the pure-Python ``parse_example``: on Examples from
  the encoder, on hand-built protobuf (unpacked lists, overlong varints,
  duplicate keys, non-UTF-8 keys, entries out of order), on random bytes and
  on mutated records it must either decline (``None``) or give an equal dict.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _native_support import (  # tests/_native_support.py
    _EDITS,
    _INT64,
    _KEYS,
    _SCALARS,
    _VALUES,
    FUZZ,
    _check_tile,
    _is_utf8,
    _ld,
    _mutate,
    _native,
    _wire_example,
    crc32c_package,
)
from tilestream.tfrecord import (
    encode_example,
    parse_example,
    serialized_record,
)

# --------------------------------------------------------------------------- crc32c

_POOL = random.Random(1234).randbytes(200_000 + 64)
_BLOCKS = (8, 256, 768, 8192, 24576, 65536)
_EDGES = sorted(
    {max(0, b * k + d) for b in _BLOCKS for k in (1, 2, 3) for d in (-9, -8, -1, 0, 1, 7, 8)}
    | {0, 1, 2, 3, 24576 + 768, 24576 + 767, 2 * 24576 + 768 + 9, 200_000}
)


@pytest.mark.skipif(crc32c_package is None, reason="the crc32c package is not installed")
def test_crc32c_block_boundaries_every_alignment() -> None:
    assert crc32c_package is not None
    for length in _EDGES:
        for offset in range(9):
            view = memoryview(_POOL)[offset : offset + length]
            assert _native.crc32c(view) == crc32c_package.crc32c(view), (length, offset)
            assert _native.crc32c(view, 0xDEADBEEF) == crc32c_package.crc32c(view, 0xDEADBEEF)


@pytest.mark.skipif(crc32c_package is None, reason="the crc32c package is not installed")
@FUZZ
@given(
    length=st.one_of(st.sampled_from(_EDGES), st.integers(0, 200_000), st.integers(0, 100)),
    offset=st.integers(0, 63),
    value=st.one_of(st.sampled_from([0, 1, 0xFFFFFFFF, 0x80000000]), st.integers(0, 2**32 - 1)),
    kind=st.sampled_from(["bytes", "memoryview", "bytearray"]),
)
def test_crc32c_matches_the_crc32c_package(length: int, offset: int, value: int, kind: str) -> None:
    assert crc32c_package is not None
    view = memoryview(_POOL)[offset : offset + length]
    data: Any = {"bytes": bytes, "memoryview": lambda v: v, "bytearray": bytearray}[kind](view)
    expected = crc32c_package.crc32c(data, value)
    assert _native.crc32c(data, value) == expected
    if value == 0:
        assert _native.crc32c(data) == expected
    cut = length // 3
    assert _native.crc32c(view[cut:], _native.crc32c(view[:cut], value)) == expected


def test_crc32c_known_vectors_and_bad_arguments() -> None:
    assert _native.crc32c(b"123456789") == 0xE3069283
    assert _native.crc32c(b"") == 0
    assert _native.crc32c(bytes(32)) == 0x8A9136AA
    with pytest.raises(TypeError):
        _native.crc32c("text")  # type: ignore[arg-type]
    with pytest.raises((BufferError, ValueError, TypeError)):
        _native.crc32c(memoryview(bytes(64))[::2])  # not contiguous


# --------------------------------------------------------------------------- parse_tile


@FUZZ
@given(features=st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_parse_tile_on_encoded_examples(features: dict[str, Any]) -> None:
    data = encode_example(features)
    got = _check_tile(data)
    tile_shaped = all(
        isinstance(v, (bytes, str, int, float)) for v in features.values()
    )  # every feature one bytes/int64/float value, canonically encoded
    if tile_shaped:
        assert got is not None, f"parse_tile declined a tile-shaped Example: {data!r}"


@FUZZ
@given(
    slide=st.one_of(st.text(max_size=20), st.binary(max_size=20)),
    image=st.one_of(st.binary(max_size=300), st.integers(0, 20_000).map(bytes)),
    x=_INT64,
    y=_INT64,
)
def test_parse_tile_on_serialized_records(slide: Any, image: bytes, x: int, y: int) -> None:
    data = serialized_record(slide, image, x, y)
    got = _check_tile(data)
    if isinstance(slide, str) or _is_utf8(slide):
        assert got is not None, "parse_tile declined a Slideflow tile record"


@FUZZ
@given(data=_wire_example())
def test_parse_tile_on_hand_built_examples(data: bytes) -> None:
    _check_tile(data)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=120).map(lambda b: _ld(0x0A, b)),
        st.binary(max_size=120).map(lambda b: _ld(0x0A, _ld(0x0A, b))),
    )
)
def test_parse_tile_on_random_bytes(data: bytes) -> None:
    _check_tile(data)


@FUZZ
@given(
    seed=st.one_of(
        st.dictionaries(_KEYS, _SCALARS, min_size=1, max_size=5).map(encode_example),
        st.builds(serialized_record, st.text(max_size=8), st.binary(max_size=60), _INT64, _INT64),
        _wire_example(),
    ),
    edits=_EDITS,
)
def test_parse_tile_on_mutated_records(seed: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    _check_tile(seed)
    _check_tile(_mutate(seed, edits))


def test_parse_tile_edge_values() -> None:
    cases = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "neg": -1,
        "nan": float("nan"),
        "negzero": -0.0,
        "inf": float("-inf"),
        "empty": b"",
        "\xe9": b"\x00\xff",
    }
    for name, value in cases.items():
        got = _check_tile(encode_example({name: value}))
        assert got is not None and list(got) == [name]
    # a tenth varint byte above 1: protobuf keeps the low 64 bits; declining is also fine
    for last in (0x01, 0x02, 0x7F):
        enc = b"\xff" * 9 + bytes((last,))
        _check_tile(_ld(0x0A, _ld(0x0A, _ld(0x0A, b"v") + _ld(0x12, _ld(0x1A, _ld(0x0A, enc))))))
    assert _native.parse_tile(b"") is None or _native.parse_tile(b"") == parse_example(b"")
    with pytest.raises(TypeError):
        _native.parse_tile("text")  # type: ignore[arg-type]
