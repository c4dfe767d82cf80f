"""``tf.train.Example`` encoding and decoding, written by hand (no protobuf runtime).

The wire format of ``tensorflow/core/example/{example,feature}.proto``::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                             Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Both packed and unpacked numeric encodings are decoded; encoding is packed,
byte-identical to ``tf.train.Example(...).SerializeToString()`` for the same
features in the same order. A ``SequenceExample`` (top-level field 2,
``feature_lists``) is refused with :class:`~tilestream.errors.UnsupportedRecordError`.

Examples
--------
>>> data = encode_example({"slide": "s1", "loc_x": 3, "score": [0.5, 1.5]})
>>> ex = decode_example(data)
>>> ex["slide"].kind, ex["slide"].value
('bytes_list', [b's1'])
>>> ex["score"].value
array([0.5, 1.5], dtype=float32)
>>> parse_example(data)
{'slide': b's1', 'loc_x': 3, 'score': array([0.5, 1.5], dtype=float32)}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from tilestream.errors import ConfigError
from tilestream.tfrecord._decode import decode_example, feature_value, parse_example
from tilestream.tfrecord.feature import Feature, FeatureKind
from tilestream.tfrecord.wire import (
    VARINT1,
    bytes_feature,
    encode_varint,
    float_feature,
    int64_packed_feature,
    map_entry,
)

__all__ = [
    "Feature",
    "FeatureKind",
    "FeatureLike",
    "decode_example",
    "encode_example",
    "encode_feature",
    "encode_varint",
    "feature_value",
    "parse_example",
    "serialized_record",
]

FeatureLike = Union[
    "Feature", bytes, str, int, float, np.generic, list[Any], tuple[Any, ...], npt.NDArray[Any]
]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)

_varint = encode_varint


def _varints(values: npt.NDArray[np.int64]) -> bytes:
    """Packed varint encoding of int64 values (negatives as 10-byte two's complement)."""
    if values.size and values.min() >= 0 and values.max() < 0x80:
        return values.astype(np.uint8).tobytes()
    return b"".join([_varint(v + _U64 if v < 0 else v) for v in values.tolist()])


def _to_feature(name: str, value: Any) -> Feature:
    if isinstance(value, Feature):
        return value
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_, str)):
        return Feature.bytes_list([value])  # type: ignore[list-item]
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return Feature.int64_list([int(value)])
    if isinstance(value, (float, np.floating)):
        return Feature.float_list([float(value)])
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in "iub":
            return Feature.int64_list(value.reshape(-1))
        if kind == "f":
            return Feature.float_list(value.reshape(-1))
        if kind in "SO":
            return Feature.bytes_list(value.reshape(-1).tolist())
        raise ConfigError(f"feature {name!r}: cannot encode an array of dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(
                f"feature {name!r}: an empty list has no type; pass Feature.bytes_list([]), "
                "Feature.float_list([]) or Feature.int64_list([])"
            )
        first = value[0]
        if isinstance(first, (bytes, bytearray, memoryview, np.bytes_, str)):
            return Feature.bytes_list(value)
        if isinstance(first, (bool, int, np.integer, np.bool_)):
            if any(isinstance(v, (float, np.floating)) for v in value):
                return Feature.float_list(value)
            return Feature.int64_list(value)
        if isinstance(first, (float, np.floating)):
            return Feature.float_list(value)
    raise ConfigError(f"feature {name!r}: cannot encode a value of type {type(value).__name__}")


def encode_feature(feature: Feature) -> bytes:
    """The serialized ``tf.train.Feature`` message of ``feature`` (empty for no kind).

    Examples
    --------
    >>> encode_feature(Feature.int64_list([1, 2]))
    b'\\x1a\\x04\\n\\x02\\x01\\x02'
    """
    kind = feature.kind
    if kind is None:
        return b""
    if kind == "bytes_list":
        return bytes_feature(list(feature.value))
    if kind == "float_list":
        return float_feature(np.asarray(feature.value, dtype="<f4").tobytes())
    if kind == "int64_list":
        return int64_packed_feature(_varints(np.asarray(feature.value, dtype=np.int64)))
    raise ConfigError(f"unknown feature kind {kind!r}")


def encode_example(features: Mapping[str, FeatureLike]) -> bytes:
    """Serialize features as a ``tf.train.Example``.

    Parameters
    ----------
    features
        Name to value. A value is a :class:`Feature`, or a ``bytes``/``str``
        (bytes_list), ``bool``/``int``/numpy integer (int64_list), ``float``/numpy
        floating (float_list), or a list, tuple or array of one of those. Empty
        lists have no type: pass ``Feature.<kind>([])``.

    Returns
    -------
    bytes
        The serialized Example, identical to TensorFlow's for the same
        features in the same order.

    Raises
    ------
    ConfigError
        A value cannot be encoded (wrong type, out of int64 range, untyped empty list).

    Examples
    --------
    >>> encode_example({"a": 1})
    b'\\n\\x0c\\n\\n\\n\\x01a\\x12\\x05\\x1a\\x03\\n\\x01\\x01'
    >>> decode_example(encode_example({"e": Feature.int64_list([])}))["e"].kind
    'int64_list'
    """
    parts: list[bytes] = []
    for name, value in features.items():
        if not isinstance(name, str):
            raise ConfigError(f"feature names must be str, not {type(name).__name__}")
        parts.append(map_entry(name.encode("utf-8"), encode_feature(_to_feature(name, value))))
    body = b"".join(parts)
    return b"\x0a" + _varint(len(body)) + body


def _int64_field(name: bytes, value: int) -> bytes:
    if not _I64_MIN <= value <= _I64_MAX:
        raise ConfigError(f"{name.decode()}={value} does not fit in int64")
    packed = _varint(value + _U64 if value < 0 else value)
    n = len(packed)
    # entry: key, then Feature{int64_list{packed}}
    return (
        b"\x0a"
        + _varint(len(name) + n + 8)
        + b"\x0a"
        + VARINT1[len(name)]
        + name
        + b"\x12"
        + VARINT1[n + 4]
        + b"\x1a"
        + VARINT1[n + 2]
        + b"\x0a"
        + VARINT1[n]
        + packed
    )


def _bytes_field_head(name: bytes, value_len: int) -> bytes:
    """Everything of a one-value bytes_list map entry except the value itself."""
    lv = _varint(value_len)
    blist_len = 1 + len(lv) + value_len  # BytesList{value}
    feat_len = 1 + len(_varint(blist_len)) + blist_len  # Feature{bytes_list}
    parts = [b"\x0a", _varint(len(name)), name, b"\x12", _varint(feat_len)]
    parts += [b"\x0a", _varint(blist_len), b"\x0a", lv]
    inner = b"".join(parts)
    return b"\x0a" + _varint(len(inner) + value_len) + inner


def serialized_record(
    slide: str | bytes, image_raw: bytes, loc_x: int = 0, loc_y: int = 0
) -> bytes:
    """One tile in the Slideflow schema, serialized as a ``tf.train.Example``.

    Features, in this order: ``image_raw`` (bytes), ``slide`` (bytes, UTF-8),
    ``loc_x`` and ``loc_y`` (int64).

    Examples
    --------
    >>> rec = serialized_record("slide1", b"\\xff\\xd8jpeg", 10, 20)
    >>> parse_example(rec)["loc_y"]
    20
    >>> rec == encode_example(
    ...     {"image_raw": b"\\xff\\xd8jpeg", "slide": b"slide1", "loc_x": 10, "loc_y": 20})
    True
    """
    if isinstance(slide, str):
        slide = slide.encode("utf-8")
    image = image_raw if isinstance(image_raw, bytes) else bytes(image_raw)
    slide = bytes(slide)
    head = _bytes_field_head(b"image_raw", len(image))
    tail = (
        _bytes_field_head(b"slide", len(slide))
        + slide
        + _int64_field(b"loc_x", int(loc_x))
        + _int64_field(b"loc_y", int(loc_y))
    )
    body_len = len(head) + len(image) + len(tail)
    return b"".join((b"\x0a", _varint(body_len), head, image, tail))
