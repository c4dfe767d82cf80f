"""Malformed Example payloads inside valid framing: only TileStreamErrors escape.

A record whose CRCs are right but whose protobuf is not (a packed int64 list
ending inside a varint, cut lengths, stray bytes) must surface as
:class:`~tilestream.errors.CorruptRecordError` from every reader, with and
without the compiled core, and must not leave a buffer export behind: a
``BufferError: cannot close exported pointers exist`` from closing the
memory map used to replace the real error. Hypothesis mutates tile records
and long numeric lists and runs them through ``_native.parse_tile``, the
Python decoders, ``iter_examples``, ``TFRecord`` and the loader's
``on_error`` modes.
The reader tests (not the fuzzing of local internals) run once per ``storage``
kind (``local``; ``s3`` and ``http`` read the same file from SeaweedFS).
"""

from __future__ import annotations

import contextlib
import io
import mmap
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _remote import Remote
from tilestream.errors import CorruptRecordError, TileStreamError, UnsupportedRecordError
from tilestream.loaders.stream import tfrecord_loader
from tilestream.tfrecord import (
    TFRecord,
    TFRecordWriter,
    decode_example,
    encode_example,
    iter_examples,
    parse_example,
    reader,
    serialized_record,
)
from tilestream.tfrecord._decode import parse_at

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=3),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def native() -> ModuleType:
    from tilestream.tfrecord import _native

    return _native


@pytest.fixture(params=["compiled", "python"])
def core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Read through the compiled scanner, or with it switched off."""
    if request.param == "python":
        monkeypatch.setattr(reader, "_native", None)
    return str(request.param)


def _bad_packed() -> bytes:
    """An Example whose packed int64 list (long: the numpy path) ends inside a varint."""
    good = bytearray(encode_example({"vals": np.arange(200, 300, dtype=np.int64)}))
    assert good[-1] < 0x80
    good[-1] |= 0x80  # the last varint now continues past the end of the list
    return bytes(good)


def _write(path: Path, payloads: list[bytes]) -> Path:
    with TFRecordWriter(path, index=False) as w:
        for p in payloads:
            w.write(p)
    return path


def test_a_bad_packed_list_is_corrupt_through_iter_examples(
    tmp_path: Path, core: str, storage: Remote
) -> None:
    path = _write(tmp_path / "b.tfrecords", [serialized_record("s", b"i", 0, 0), _bad_packed()])
    name = storage.name(path)
    with pytest.raises(CorruptRecordError, match="inside a varint") as info:
        list(iter_examples(name, **storage.kw))
    assert info.value.record == 1 and info.value.path == name
    with pytest.raises(CorruptRecordError, match="inside a varint"):
        list(iter_examples(io.BytesIO(path.read_bytes())))


def test_a_bad_packed_list_is_corrupt_through_tfrecord(tmp_path: Path, storage: Remote) -> None:
    local = _write(tmp_path / "b.tfrecords", [serialized_record("s", b"i", 0, 0), _bad_packed()])
    path = storage.name(local)
    with (
        pytest.raises(CorruptRecordError, match="inside a varint"),
        TFRecord(path, **storage.kw) as tfr,
    ):
        list(tfr)  # __exit__ closes the map while the error is in flight
    tfr = TFRecord(path, **storage.kw)
    with pytest.raises(CorruptRecordError):
        tfr[1]
    tfr.close()  # no export left behind: closing works


def test_a_bad_packed_list_leaves_no_export_on_a_mapped_buffer(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.tfrecords", [_bad_packed()])
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        try:
            parse_at(m, 12, len(m) - 4)
        except CorruptRecordError as exc:
            err = exc  # kept alive, as a caller's handler would
        m.close()  # BufferError before the fix
    assert "inside a varint" in str(err)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_the_loader_raises_or_skips_a_bad_packed_list(
    tmp_path: Path, on_error: str, storage: Remote
) -> None:
    good = serialized_record("s", b"i", 0, 0)
    path = storage.name(_write(tmp_path / "b.tfrecords", [good, _bad_packed(), good]))
    stream = tfrecord_loader(path, on_error=on_error, **storage.kw)  # type: ignore[arg-type]
    if on_error == "raise":
        with pytest.raises(CorruptRecordError, match="inside a varint"):
            list(stream)
    else:
        assert len(list(stream)) == 2


# --------------------------------------------------------------------------- fuzz

_SEEDS = [
    serialized_record("slide-1", bytes(range(256)) * 3, 1024, 2048),
    encode_example({"vals": np.arange(-40, 60, dtype=np.int64) * 977, "f": [0.5] * 9}),
    encode_example({"n": [1, 300, 70000], "b": [b"x", b"yz"], "e": np.zeros(30, np.float32)}),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A]))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


def _clean_or_ours(fn: Any) -> None:
    with contextlib.suppress(CorruptRecordError, UnsupportedRecordError):
        fn()


@FUZZ
@given(payload=mutated())
def test_parse_tile_never_raises(native: ModuleType, payload: bytes) -> None:
    out = native.parse_tile(payload)
    assert out is None or isinstance(out, dict)
    if out is not None:  # a dict from C is the generic parser's dict
        assert out == parse_example(payload)


@FUZZ
@given(payload=mutated())
def test_python_decoders_raise_only_record_errors(payload: bytes) -> None:
    _clean_or_ours(lambda: parse_example(payload))
    _clean_or_ours(lambda: parse_example(payload, squeeze=False))
    _clean_or_ours(lambda: decode_example(payload))


@FUZZ
@given(
    payloads=st.lists(mutated(), min_size=1, max_size=3),
    on_error=st.sampled_from(["raise", "skip"]),
)
def test_readers_raise_only_record_errors_and_release_the_file(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    payloads: list[bytes],
    on_error: str,
) -> None:
    path = _write(tmp_path_factory.mktemp("fz") / "f.tfrecords", payloads)
    for compiled in (True, False):
        with monkeypatch.context() as m:
            if not compiled:
                m.setattr(reader, "_native", None)
            _clean_or_ours(lambda: list(iter_examples(path)))
            _clean_or_ours(lambda: list(iter_examples(path, squeeze=False)))

    def through_tfrecord() -> None:
        with TFRecord(path) as tfr:
            list(tfr)

    _clean_or_ours(through_tfrecord)
    got: list[Any] | TileStreamError
    try:
        got = list(tfrecord_loader(path, on_error=on_error))  # type: ignore[arg-type]
    except TileStreamError as exc:  # nothing else may escape
        got = exc
    if isinstance(got, list):
        assert len(got) <= len(payloads)
    elif on_error == "skip":  # skip gives up only when every record failed
        assert "every record" in str(got)
