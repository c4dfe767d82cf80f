"""Decoding of serialized ``tf.train.Example`` records (see :mod:`.example`).

The generic parser walks the protobuf wire format by hand (with the
primitives of :mod:`.wire`); the common shapes (one list per Feature,
varints of up to three bytes, single values) are handled inline.

It owns the tile strategy, :data:`TILES` (a :class:`~._fast.TileParser`):
:func:`parse_example` and :func:`parse_at` try it first for squeezed
results and fall back to the generic walk, which gives the result or the
precise error. The strategy asks the generic side only one thing, how to
decode one small map entry (:func:`small_entry`), so it imports nothing
from here.

Examples
--------
>>> parse_example(b"\\n\\x0c\\n\\n\\n\\x01a\\x12\\x05\\x1a\\x03\\n\\x01\\x07")
{'a': 7}
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from tilestream.errors import CorruptRecordError, UnsupportedRecordError
from tilestream.tfrecord._fast import TileParser
from tilestream.tfrecord.feature import Feature, FeatureKind
from tilestream.tfrecord.wire import WireError, read_varint, skip_field

__all__ = [
    "TILES",
    "decode_example",
    "feature_value",
    "parse_at",
    "parse_example",
    "parse_feature",
    "small_entry",
]

_U64 = 1 << 64
_M64 = _U64 - 1
_I64_MAX = (1 << 63) - 1
_F32 = struct.Struct("<f")
_DTYPES: dict[str, type[np.generic]] = {"float_list": np.float32, "int64_list": np.int64}
_KIND_BY_FIELD: dict[int, FeatureKind] = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


def _packed_varints(data: bytes, pos: int, end: int) -> list[int] | npt.NDArray[np.int64]:
    n = end - pos
    if n <= 24:
        out: list[int] = []
        while pos < end:
            b = data[pos]
            if b < 0x80:
                out.append(b)
                pos += 1
            elif pos + 1 < end and data[pos + 1] < 0x80:
                out.append((b & 0x7F) | (data[pos + 1] << 7))
                pos += 2
            else:
                v, pos = read_varint(data, pos, end)
                v &= _M64  # protobuf keeps the low 64 bits
                out.append(v - _U64 if v > _I64_MAX else v)
        return out
    arr = np.frombuffer(data, np.uint8, count=n, offset=pos)
    stops = np.flatnonzero(arr < 0x80)
    if not stops.size or stops[-1] != n - 1:
        raise WireError("packed int64 list ends inside a varint")
    starts = np.empty_like(stops)
    starts[0] = 0
    starts[1:] = stops[:-1] + 1
    sizes = stops - starts + 1
    if sizes.max() > 10:
        raise WireError("varint longer than 10 bytes in a packed int64 list")
    if sizes.max() == 1:
        return arr.astype(np.int64)
    within = np.arange(n) - np.repeat(starts, sizes)
    parts = (arr & 0x7F).astype(np.uint64) << (7 * within).astype(np.uint64)
    return np.add.reduceat(parts, starts).view(np.int64)


_RawFeature = tuple[FeatureKind | None, Any]


def parse_feature(data: bytes, pos: int, end: int) -> _RawFeature:
    """Parse a Feature message: ``(kind, values)``, values a list or an ndarray."""
    kind: FeatureKind | None = None
    values: Any = None
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = read_varint(data, pos - 1, end)
        field = tag >> 3
        if (tag & 7) != 2 or not 1 <= field <= 3:
            pos = skip_field(data, pos, end, tag & 7)
            continue
        n = data[pos] if pos < end else 0x80
        if n < 0x80:
            pos += 1
        else:
            n, pos = read_varint(data, pos, end)
        lend = pos + n
        if lend > end:
            raise WireError("feature list runs past the end of its message")
        new_kind = _KIND_BY_FIELD[field]
        new_values = _parse_list(data, pos, lend, new_kind)
        if new_kind == kind:  # a repeated occurrence merges (protobuf semantics)
            values = _join(values, new_values)
        else:  # oneof: a different kind replaces the previous one
            kind = new_kind
            values = new_values
        pos = lend
    return kind, values


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return np.concatenate([np.asarray(a), np.asarray(b)])


def _parse_list(data: bytes, pos: int, end: int, kind: FeatureKind) -> Any:
    """Parse a BytesList / FloatList / Int64List: a list, or an ndarray for long numerics."""
    values: list[Any] = []
    arrays: list[Any] = []
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag == 0x0A:  # field 1, length-delimited: a bytes value or a packed run
            n = data[pos]
            pos += 1
            if n >= 0x80:
                m = data[pos]
                pos += 1
                n = (n & 0x7F) | (m << 7)
                if m >= 0x80:
                    n, pos = read_varint(data, pos - 2, end)
            vend = pos + n
            if vend > end:
                raise WireError("list value runs past the end of its message")
            if kind == "bytes_list":
                values.append(data[pos:vend])
            elif kind == "int64_list":
                if n == 1 and data[pos] < 0x80:
                    values.append(data[pos])
                else:
                    packed = _packed_varints(data, pos, vend)
                    if isinstance(packed, list):
                        values.extend(packed)
                    else:
                        if values:
                            arrays.append(np.array(values, np.int64))
                            values = []
                        arrays.append(packed)
            else:
                if n % 4:
                    raise WireError("packed float list length is not a multiple of 4")
                if n <= 16:
                    values.extend(struct.unpack_from(f"<{n // 4}f", data, pos))
                else:
                    if values:
                        arrays.append(np.array(values, np.float32))
                        values = []
                    arrays.append(np.frombuffer(data, "<f4", n // 4, pos).astype(np.float32))
            pos = vend
        elif tag == 0x0D and kind == "float_list":  # unpacked float
            if pos + 4 > end:
                raise WireError("float runs past the end of its message")
            values.append(_F32.unpack_from(data, pos)[0])
            pos += 4
        elif tag == 0x08 and kind == "int64_list":  # unpacked int64
            v, pos = read_varint(data, pos, end)
            v &= _M64  # protobuf keeps the low 64 bits
            values.append(v - _U64 if v > _I64_MAX else v)
        else:
            if tag >= 0x80:
                tag, pos = read_varint(data, pos - 1, end)
            pos = skip_field(data, pos, end, tag & 7)
    if not arrays:
        return values
    if values:  # scalars after a long packed run (never written by TensorFlow)
        arrays.append(np.array(values, _DTYPES[kind]))
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


_NAMES: dict[bytes, str] = {}


def _one_list(data: bytes, pos: int, vend: int) -> _RawFeature | None:
    """The Feature in ``data[pos:vend]`` when it holds exactly one list (the common case).

    A single bytes value, or an int64 of up to three varint bytes, is read
    inline; other lists by :func:`_parse_list`. ``None`` for any other shape.
    """
    ftag = data[pos]
    fl = data[pos + 1]
    lp = pos + 2
    if fl >= 0x80:
        fl, lp = read_varint(data, pos + 1, vend)
    if lp + fl != vend:
        return None
    if ftag == 0x0A:  # bytes_list
        if fl >= 2 and data[lp] == 0x0A:  # a single value?
            bl = data[lp + 1]
            bp = lp + 2
            if bl >= 0x80:
                bl, bp = read_varint(data, lp + 1, vend)
            if bp + bl == vend:
                return "bytes_list", [data[bp:vend]]
        return "bytes_list", _parse_list(data, lp, vend, "bytes_list")
    if ftag == 0x1A:  # int64_list: one small value inline
        if fl >= 3 and data[lp] == 0x0A and data[lp + 1] == fl - 2:
            v = data[lp + 2]
            if fl == 3 and v < 0x80:
                return "int64_list", [v]
            if fl == 4 and v >= 0x80 and data[lp + 3] < 0x80:
                return "int64_list", [(v & 0x7F) | (data[lp + 3] << 7)]
            if fl == 5 and v >= 0x80 and data[lp + 3] >= 0x80 and data[lp + 4] < 0x80:
                return "int64_list", [
                    (v & 0x7F) | ((data[lp + 3] & 0x7F) << 7) | (data[lp + 4] << 14)
                ]
        return "int64_list", _parse_list(data, lp, vend, "int64_list")
    if ftag == 0x12:  # float_list
        return "float_list", _parse_list(data, lp, vend, "float_list")
    return None


def _parse_features(
    data: bytes, pos: int, end: int, out: dict[str, Any], squeeze: bool | None
) -> None:
    """Parse a Features message into ``out``.

    With ``squeeze=None`` values are raw ``(kind, values)`` pairs; otherwise
    plain values as :func:`parse_example` returns them (built inline: this is
    the hot loop of decoding). The usual "one list per Feature" shape goes
    through :func:`_one_list`; anything else through the general helpers. Reads past ``end`` (IndexError) or lengths beyond
    it are reported by the callers' checks.
    """
    names = _NAMES
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag != 0x0A:  # not a map entry
            if tag >= 0x80:
                tag, pos = read_varint(data, pos - 1, end)
            pos = skip_field(data, pos, end, tag & 7)
            continue
        n = data[pos]
        pos += 1
        if n >= 0x80:
            n, pos = read_varint(data, pos - 1, end)
        eend = pos + n
        if eend > end:
            raise WireError("feature map entry runs past the end of its message")
        key = b""
        kind: FeatureKind | None = None
        values: Any = None
        seen = False
        while pos < eend:
            tag = data[pos]
            pos += 1
            if tag == 0x0A or tag == 0x12:
                n = data[pos]
                pos += 1
                if n >= 0x80:
                    n, pos = read_varint(data, pos - 1, eend)
                vend = pos + n
                if vend > eend:
                    raise WireError("feature name or value runs past its map entry")
                if tag == 0x0A:
                    key = data[pos:vend]
                    pos = vend
                    continue
                f = _one_list(data, pos, vend) if n >= 2 and not seen else None
                if f is None:
                    f = parse_feature(data, pos, vend)
                    if seen:
                        f = _merge((kind, values), f)
                kind, values = f
                seen = True
                pos = vend
            else:
                if tag >= 0x80:
                    tag, pos = read_varint(data, pos - 1, eend)
                pos = skip_field(data, pos, eend, tag & 7)
        name = names.get(key)
        if name is None:
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise WireError(f"feature name {key!r} is not valid UTF-8") from exc
            if len(names) < 4096:
                names[key] = name
        if squeeze is None:
            out[name] = (kind, values)
        elif kind is None:
            out[name] = None
        elif squeeze and len(values) == 1:
            v = values[0]
            out[name] = v.item() if isinstance(v, np.generic) else v
        elif kind == "bytes_list" or isinstance(values, np.ndarray):
            out[name] = values
        else:
            out[name] = np.array(values, dtype=_DTYPES[kind])


def _merge(a: _RawFeature, b: _RawFeature) -> _RawFeature:
    """Protobuf merge of two occurrences of the same Feature message."""
    if b[0] is None:
        return a
    if a[0] is None:
        return b
    if a[0] != b[0]:
        return b
    return a[0], _join(a[1], b[1])


def small_entry(entry: bytes) -> tuple[str, Any] | None:
    """Decode one complete ``Features`` map entry: ``(name, value)`` as :func:`parse_example` gives it.

    ``None`` unless ``entry`` is exactly one clean entry (malformed bytes are
    reported by the generic parser on the full record). This is what the
    tile strategy asks of the generic parser.
    """
    tmp: dict[str, Any] = {}
    try:
        _parse_features(entry, 0, len(entry), tmp, True)
    except Exception:  # malformed: the generic parser reports it on the full record
        return None
    if len(tmp) != 1:
        return None
    ((name, value),) = tmp.items()
    return name, value


#: The tile strategy of :func:`parse_example` (its caches are shared by every reader).
TILES = TileParser(small_entry)


def _decode_raw(
    data: bytes, pos: int = 0, end: int | None = None, squeeze: bool | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if end is None:
        end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = read_varint(data, pos - 1, end)
        field, wire = tag >> 3, tag & 7
        if field == 1 and wire == 2:
            n, pos = read_varint(data, pos, end)
            fend = pos + n
            if fend > end:
                raise WireError("features run past the end of the record")
            _parse_features(data, pos, fend, out, squeeze)
            pos = fend
        elif field == 2 and wire == 2:
            raise UnsupportedRecordError(
                "record is a tf.train.SequenceExample (it has feature_lists); "
                "only tf.train.Example records are decoded"
            )
        elif field == 0:
            raise WireError(f"invalid field number 0 at payload byte {pos - 1}")
        else:
            pos = skip_field(data, pos, end, wire)
    return out


def _to_feature_obj(raw: _RawFeature) -> Feature:
    kind, values = raw
    if kind is None:
        return Feature(None, [])
    if kind == "bytes_list":
        return Feature(kind, values)
    if isinstance(values, np.ndarray):
        return Feature(kind, values)
    return Feature(kind, np.array(values, dtype=_DTYPES[kind]))


def _plain(raw: _RawFeature, squeeze: bool) -> Any:
    kind, values = raw
    if kind is None:
        return None
    if squeeze and len(values) == 1:
        v = values[0]
        return v.item() if isinstance(v, np.generic) else v
    if kind == "bytes_list" or isinstance(values, np.ndarray):
        return values
    return np.array(values, dtype=_DTYPES[kind])


def _decode_guarded(
    data: Any,
    path: str | os.PathLike[str] | None,
    record: int | None,
    offset: int | None,
    start: int = 0,
    end: int | None = None,
    squeeze: bool | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    if not isinstance(data, (bytes, mmap.mmap)):
        data = bytes(data)
    if squeeze and fast:  # tile-shaped records: same result, a fraction of the work
        try:
            tile = TILES.parse(data, start, len(data) if end is None else end)
        except IndexError:
            tile = None
        if tile is not None:
            return tile
    err: CorruptRecordError | UnsupportedRecordError
    try:
        return _decode_raw(data, start, end, squeeze)
    except WireError as exc:
        err = CorruptRecordError(str(exc), path=path, record=record, offset=offset)
    except UnsupportedRecordError as exc:
        where = "" if record is None else f"record {record}: "
        err = UnsupportedRecordError(where + exc.message, path=path)
    except IndexError:
        err = CorruptRecordError(
            "malformed Example: a field runs past the end of the record",
            path=path,
            record=record,
            offset=offset,
        )
    except (ValueError, struct.error) as exc:  # defensive: never leak raw errors
        err = CorruptRecordError(
            f"malformed Example: {exc}", path=path, record=record, offset=offset
        )
    # Raised outside the handlers, unchained: the parser's traceback (its frames
    # hold numpy views of ``data``) dies here, so a memory map can still be closed.
    raise err


def decode_example(
    data: bytes | bytearray | memoryview,
    *,
    path: str | os.PathLike[str] | None = None,
    record: int | None = None,
    offset: int | None = None,
) -> dict[str, Feature]:
    """Decode a serialized ``tf.train.Example`` into :class:`Feature` objects.

    Parameters
    ----------
    data
        The record payload.
    path, record, offset
        Where the record came from; used only in error messages.

    Returns
    -------
    dict[str, Feature]
        Feature name to Feature, in the order they appear in the record.

    Raises
    ------
    CorruptRecordError
        ``data`` is not a valid protobuf message.
    UnsupportedRecordError
        ``data`` is a ``tf.train.SequenceExample``.

    Examples
    --------
    >>> from tilestream.tfrecord.example import encode_example
    >>> decode_example(encode_example({"n": [1, -1]}))["n"].value
    array([ 1, -1])
    >>> decode_example(b"\\x0a\\x05")
    Traceback (most recent call last):
    ...
    tilestream.errors.CorruptRecordError: features run past the end of the record
    """
    raw = _decode_guarded(data, path, record, offset)
    return {k: _to_feature_obj(f) for k, f in raw.items()}


def parse_at(
    buf: bytes | mmap.mmap,
    start: int,
    end: int,
    *,
    squeeze: bool = True,
    path: str | os.PathLike[str] | None = None,
    record: int | None = None,
    offset: int | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """:func:`parse_example` of ``buf[start:end]`` without copying the record first.

    ``fast=False`` skips the tile fast path, for callers that have just tried it.

    Examples
    --------
    >>> parse_at(b"xx\\n\\x0c\\n\\n\\n\\x01a\\x12\\x05\\x1a\\x03\\n\\x01\\x07yy", 2, 16)
    {'a': 7}
    """
    return _decode_guarded(buf, path, record, offset, start, end, squeeze, fast)


def feature_value(feature: Feature, *, squeeze: bool = True) -> Any:
    """The plain value of a Feature, as :func:`parse_example` gives it.

    Examples
    --------
    >>> feature_value(Feature.int64_list([7]))
    7
    >>> feature_value(Feature(None, [])) is None
    True
    """
    return _plain((feature.kind, feature.value), squeeze)


def parse_example(
    data: bytes | bytearray | memoryview,
    *,
    squeeze: bool = True,
    path: str | os.PathLike[str] | None = None,
    record: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """Decode a ``tf.train.Example`` into plain Python/numpy values.

    With ``squeeze=True`` (default) a list of exactly one value becomes that
    value: ``bytes``, ``int`` or ``float``. Longer (or, without squeeze, all)
    lists stay ``list[bytes]`` / ``int64`` array / ``float32`` array. A Feature
    with no kind set becomes ``None``.

    Examples
    --------
    >>> from tilestream.tfrecord.example import encode_example
    >>> parse_example(encode_example({"a": [1, 2], "b": b"x", "c": 0.25}))
    {'a': array([1, 2]), 'b': b'x', 'c': 0.25}
    >>> parse_example(encode_example({"b": b"x"}), squeeze=False)
    {'b': [b'x']}
    """
    return _decode_guarded(data, path, record, offset, 0, None, squeeze)
