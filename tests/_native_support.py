"""Shared helpers of the compiled-core tests (``tests/tfrecord/test_native_*.py``).

``native`` is ``tilestream.tfrecord._native``, or ``None`` where it is not
built; :func:`require_native` skips the calling test module then, and fails
it under ``CI=true``.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tilestream.errors import TileStreamError
from tilestream.tfrecord import (
    Feature,
    parse_example,
)
from tilestream.tfrecord._crc import masked_crc32c
from tilestream.tfrecord.framing import frame

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

try:
    from tilestream.tfrecord import _native
except ImportError as _exc:  # pragma: no cover - depends on the build
    if IN_CI:
        pytest.fail(
            f"the compiled core tilestream.tfrecord._native is not built ({_exc}); "
            "CI=true: a missing extension is a failure, not a skip",
            pytrace=False,
        )
    pytest.skip(
        f"the compiled core tilestream.tfrecord._native is not built ({_exc})",
        allow_module_level=True,
    )

try:
    import crc32c as crc32c_package
except ImportError:  # pragma: no cover - a declared dependency
    crc32c_package = None

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
M64 = (1 << 64) - 1
WINDOW = 4 << 20  # the verifier's window in _native.c
WATCHDOG = 30.0  # seconds before a scan counts as hung


# --------------------------------------------------------------------------- helpers


def _bounded(fn: Callable[[], Any], timeout: float = WATCHDOG) -> Any:
    """Run ``fn`` in a watchdog thread: its result, its exception, or a failed test if it hangs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised below
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        pytest.fail(f"no result after {timeout} s: the native scanner hangs")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _run_python(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a reproducer in a fresh interpreter (a crash or hang must not take pytest with it)."""
    try:
        return subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the reproducer hangs (no exit after {timeout} s); output: {exc.stdout!r}")


def _same(a: Any, b: Any) -> bool:
    """Equality of decoded values, exact in type, NaN-aware and sign-of-zero aware."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _varint(n: int, pad: int = 0) -> bytes:
    """Base-128 varint of ``n`` >= 0 (any size), with ``pad`` redundant continuation bytes."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n or pad:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
        if not n:
            pad -= 1
            if pad == 0:
                out.append(0)
                break
    return bytes(out)


def _ld(tag: int, body: bytes, pad: int = 0) -> bytes:
    """A length-delimited protobuf field."""
    return bytes((tag,)) + _varint(len(body), pad) + body


def _header(length: int) -> bytes:
    """A TFRecord header with a valid length CRC for any 64-bit ``length``."""
    head = struct.pack("<Q", length)
    return head + struct.pack("<I", masked_crc32c(head))


def _framed(payloads: list[bytes]) -> bytes:
    return b"".join(frame(p) for p in payloads)


def _parse_example_or_error(data: bytes) -> Any:
    try:
        return parse_example(data)
    except TileStreamError as exc:
        return exc


def _check_tile(data: bytes) -> dict[str, Any] | None:
    """``parse_tile(data)`` must be None or ``parse_example(data)``; return what it gave."""
    got = _native.parse_tile(data)
    if got is None:
        return None
    assert isinstance(got, dict)
    expected = _parse_example_or_error(data)
    assert not isinstance(expected, Exception), (
        f"parse_tile decoded {got!r} where parse_example raises {expected!r}; data={data!r}"
    )
    assert _same(got, expected), f"parse_tile {got!r} != parse_example {expected!r}; data={data!r}"
    again = _native.parse_tile(memoryview(bytearray(b"??" + data))[2:])
    assert again is not None and _same(again, got), "parse_tile depends on the buffer type"
    return got


# --------------------------------------------------------------------------- strategies

_KEYS = st.one_of(
    st.sampled_from(["", "a", "slide", "image_raw", "loc_x", "é", "日本", "\U0001f600", "k" * 130]),
    st.text(max_size=12),
)
_INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 127, 128, 2**63 - 1, -(2**63), 2**62, -(2**31)]),
    st.integers(-(2**63), 2**63 - 1),
)
_F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
_SCALARS = st.one_of(st.binary(max_size=40), st.text(max_size=8), _INT64, _F32)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(st.binary(max_size=8), min_size=2, max_size=5),
    st.lists(_INT64, min_size=2, max_size=5),
    st.lists(_F32, min_size=2, max_size=5),
    st.sampled_from(
        [
            Feature.bytes_list([]),
            Feature.int64_list([]),
            Feature.float_list([]),
            Feature(None, []),
            Feature.bytes_list([b""]),
            Feature.int64_list(list(range(40))),
        ]
    ),
)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def _wire_feature(draw: st.DrawFn) -> bytes:
    """A Feature message encoded by hand, canonically or not."""
    pad = draw(st.sampled_from([0, 0, 0, 1, 2]))
    shape = draw(
        st.sampled_from(
            [
                "bytes1",
                "bytes_many",
                "int_packed",
                "int_unpacked",
                "int_overlong",
                "int_many",
                "float_packed",
                "float_unpacked",
                "float_many",
                "empty",
                "empty_list",
                "two_kinds",
                "random",
            ]
        )
    )
    if shape == "bytes1":
        return _ld(0x0A, _ld(0x0A, draw(st.binary(max_size=20)), pad))
    if shape == "bytes_many":
        values = draw(st.lists(st.binary(max_size=6), min_size=2, max_size=3))
        return _ld(0x0A, b"".join(_ld(0x0A, v) for v in values))
    if shape in ("int_packed", "int_unpacked", "int_overlong"):
        v = draw(_INT64) & M64
        if shape == "int_overlong":  # tenth byte with bits beyond 64 (protobuf drops them)
            v |= draw(st.integers(1, 63)) << 64
        enc = _varint(v, draw(st.sampled_from([0, 0, 1])) if v < 1 << 56 else 0)
        inner = b"\x08" + enc if shape == "int_unpacked" else _ld(0x0A, enc, pad)
        return _ld(0x1A, inner)
    if shape == "int_many":
        vs = draw(st.lists(_INT64, min_size=2, max_size=4))
        return _ld(0x1A, _ld(0x0A, b"".join(_varint(v & M64) for v in vs)))
    if shape in ("float_packed", "float_unpacked"):
        raw = draw(
            st.one_of(_F32.map(lambda f: struct.pack("<f", f)), st.binary(min_size=4, max_size=4))
        )
        inner = b"\x0d" + raw if shape == "float_unpacked" else _ld(0x0A, raw, pad)
        return _ld(0x12, inner)
    if shape == "float_many":
        n = draw(st.integers(2, 4))
        return _ld(0x12, _ld(0x0A, draw(st.binary(min_size=4 * n, max_size=4 * n))))
    if shape == "empty":
        return b""
    if shape == "empty_list":
        return bytes((draw(st.sampled_from([0x0A, 0x12, 0x1A])), 0))
    if shape == "two_kinds":  # oneof: the last kind wins
        return _ld(0x1A, _ld(0x0A, _varint(5))) + _ld(0x0A, _ld(0x0A, b"x"))
    return draw(st.binary(max_size=12))


@st.composite
def _wire_example(draw: st.DrawFn) -> bytes:
    """A tf.train.Example built field by field, with the odd shapes protobuf allows."""
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(
            st.one_of(
                _KEYS.map(lambda s: s.encode("utf-8")),
                st.binary(max_size=6),  # often not UTF-8
                st.sampled_from([b"\xff", b"\xed\xa0\x80", b"a\x00b", b"\xc3"]),
            )
        )
        feat = draw(_wire_feature())
        order = draw(
            st.sampled_from(["kv", "kv", "kv", "vk", "k", "v", "kvx", "xkv", "kkv", "kvv"])
        )
        k, v = _ld(0x0A, key), _ld(0x12, feat)
        parts = {
            "kv": k + v,
            "vk": v + k,
            "k": k,
            "v": v,
            "kvx": k + v + b"\x18\x01",
            "xkv": b"\x18\x01" + k + v,
            "kkv": _ld(0x0A, b"other") + k + v,
            "kvv": k + v + v,
        }[order]
        entries.append(_ld(0x0A, parts, draw(st.sampled_from([0, 0, 0, 1]))))
    if entries and draw(st.booleans()):
        entries.append(draw(st.sampled_from(entries)))  # a duplicate key: the last one wins
    body = b"".join(entries)
    data = _ld(0x0A, body, draw(st.sampled_from([0, 0, 0, 1])))
    tail = draw(st.sampled_from([b"", b"", b"", b"\x10\x01", b"\x0a\x00", b"\x0a\x02\x0a\x00"]))
    return data + tail


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set"]),
        st.integers(0, 10_000),
        st.binary(min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, blob in edits:
        pos = where % (len(buf) + 1)
        if op == "flip" and pos < len(buf):
            buf[pos] ^= blob[0] or 1
        elif op == "set" and pos < len(buf):
            buf[pos] = blob[0]
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "delete":
            del buf[pos : pos + len(blob)]
    return bytes(buf)
