"""The TF Object Detection API ``tf.train.Example`` schema, and building one record.

Keys and types are exactly those of the OD API's dataset tools
(``create_pascal_tf_record.py``, ``create_coco_tf_record.py``) and its
``TfExampleDecoder``. Every record has the common keys; VOC data adds
``difficult``/``truncated``/``view``, COCO adds ``is_crowd``/``area`` (and
``mask`` when masks are asked for). Object lists may be empty (a negative).

Examples
--------
>>> from tilestream.tfrecord import decode_example
>>> data = build_example(filename="a.jpg", source_id="a.jpg", encoded=b"\\xff\\xd8\\xff",
...                      image_format="jpeg", width=4, height=2,
...                      boxes=[(0.0, 0.0, 0.5, 1.0)], texts=["cat"], labels=[1])
>>> ex = decode_example(data)
>>> list(ex)[:4]
['image/height', 'image/width', 'image/filename', 'image/source_id']
>>> ex["image/object/bbox/xmax"].value, ex["image/object/class/label"].value
(array([0.5], dtype=float32), array([1]))
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tilestream.tfrecord import Feature
from tilestream.tfrecord.example import encode_varint as _varint

__all__ = ["COMMON_KEYS", "FORMAT_KEYS", "MASK_KEY", "build_example", "feature_spec"]

#: Keys every record has, and their ``tf.train.Feature`` kind.
COMMON_KEYS: dict[str, str] = {
    "image/height": "int64_list",
    "image/width": "int64_list",
    "image/filename": "bytes_list",
    "image/source_id": "bytes_list",
    "image/key/sha256": "bytes_list",
    "image/encoded": "bytes_list",
    "image/format": "bytes_list",
    "image/object/bbox/xmin": "float_list",
    "image/object/bbox/xmax": "float_list",
    "image/object/bbox/ymin": "float_list",
    "image/object/bbox/ymax": "float_list",
    "image/object/class/text": "bytes_list",
    "image/object/class/label": "int64_list",
}

#: Extra per-object keys by source format.
FORMAT_KEYS: dict[str, dict[str, str]] = {
    "voc": {
        "image/object/difficult": "int64_list",
        "image/object/truncated": "int64_list",
        "image/object/view": "bytes_list",
    },
    "coco": {
        "image/object/is_crowd": "int64_list",
        "image/object/area": "float_list",
    },
    "csv": {},
    "yolo": {},
}

#: PNG-encoded instance masks, one per object (COCO, when asked for).
MASK_KEY = "image/object/mask"


def build_example(
    *,
    filename: str,
    source_id: str,
    encoded: bytes,
    image_format: str,
    width: int,
    height: int,
    boxes: Sequence[tuple[float, float, float, float]],
    texts: Sequence[str],
    labels: Sequence[int],
    extra: Mapping[str, Feature] | None = None,
    sha256: str | None = None,
) -> bytes:
    """Serialise one OD API ``tf.train.Example``.

    Parameters
    ----------
    boxes
        ``(xmin, ymin, xmax, ymax)`` per object, normalised to [0, 1].
    texts, labels
        Class name and label-map id per object.
    extra
        Format-specific per-object features, appended in order.
    sha256
        The hex digest of ``encoded`` when already computed.
    """
    k = len(boxes)
    pack = struct.Struct(f"<{k}f").pack
    digest = sha256 or hashlib.sha256(encoded).hexdigest()
    head = b"".join(
        [
            _entry(b"image/height", _int_feature([height])),
            _entry(b"image/width", _int_feature([width])),
            _entry(b"image/filename", _bytes_feature([filename.encode("utf-8")])),
            _entry(b"image/source_id", _bytes_feature([source_id.encode("utf-8")])),
            _entry(b"image/key/sha256", _bytes_feature([digest.encode("ascii")])),
        ]
    )
    # image/encoded: only its length prefixes are built, the bytes are copied once
    n = len(encoded)
    bytes_list = 1 + _vlen(n) + n
    feature = 1 + _vlen(bytes_list) + bytes_list
    key = b"image/encoded"
    entry = 1 + _vlen(len(key)) + len(key) + 1 + _vlen(feature) + feature
    image_prefix = (
        b"\x0a"
        + _varint(entry)
        + b"\x0a"
        + _varint(len(key))
        + key
        + b"\x12"
        + _varint(feature)
        + b"\x0a"
        + _varint(bytes_list)
        + b"\x0a"
        + _varint(n)
    )
    tail_parts = [
        _entry(b"image/format", _bytes_feature([image_format.encode("utf-8")])),
        _entry(b"image/object/bbox/xmin", _float_feature(pack(*[b[0] for b in boxes]))),
        _entry(b"image/object/bbox/xmax", _float_feature(pack(*[b[2] for b in boxes]))),
        _entry(b"image/object/bbox/ymin", _float_feature(pack(*[b[1] for b in boxes]))),
        _entry(b"image/object/bbox/ymax", _float_feature(pack(*[b[3] for b in boxes]))),
        _entry(b"image/object/class/text", _bytes_feature([t.encode("utf-8") for t in texts])),
        _entry(b"image/object/class/label", _int_feature(labels)),
    ]
    if extra:
        tail_parts.extend(_entry(k.encode("utf-8"), _feature(v)) for k, v in extra.items())
    tail = b"".join(tail_parts)
    total = len(head) + len(image_prefix) + n + len(tail)
    return b"".join([b"\x0a", _varint(total), head, image_prefix, encoded, tail])


# A direct encoder for this fixed schema: the generic encode_example costs
# ~80 us per record here, this ~10 us, with byte-identical output (tested).


def _vlen(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_KEY_HEADERS: dict[bytes, bytes] = {}


def _entry(key: bytes, feature: bytes) -> bytes:
    header = _KEY_HEADERS.get(key)
    if header is None:
        header = _KEY_HEADERS[key] = b"\x0a" + _varint(len(key)) + key + b"\x12"
    body = header + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def _bytes_feature(values: Sequence[bytes]) -> bytes:
    return _ld(b"\x0a", b"".join([b"\x0a" + _varint(len(v)) + v for v in values]))


def _float_feature(packed: bytes) -> bytes:
    return _ld(b"\x12", _ld(b"\x0a", packed) if packed else b"")


def _int_feature(values: Sequence[int]) -> bytes:
    if all(type(v) is int and 0 <= v < 0x80 for v in values):
        packed = bytes(values)  # the usual case: one byte per value
    else:
        packed = b"".join([_varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in values])
    return _ld(b"\x1a", _ld(b"\x0a", packed) if packed else b"")


def _feature(feature: Feature) -> bytes:
    if feature.kind == "bytes_list":
        return _bytes_feature([bytes(v) for v in feature.value])
    if feature.kind == "float_list":
        return _float_feature(np.asarray(feature.value, dtype="<f4").tobytes())
    if feature.kind == "int64_list":
        return _int_feature(np.asarray(feature.value, dtype=np.int64).tolist())
    return b""


def feature_spec(tf: Any, *, source_format: str | None = None, masks: bool = False) -> dict:
    """The ``tf.io.parse_single_example`` spec for these records (needs TensorFlow).

    Image-level keys are ``FixedLenFeature`` s, per-object keys
    ``VarLenFeature`` s, as in the OD API's ``TfExampleDecoder``.
    """
    kinds = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}
    keys = dict(COMMON_KEYS)
    if source_format is not None:
        keys.update(FORMAT_KEYS[source_format])
    if masks:
        keys[MASK_KEY] = "bytes_list"
    spec: dict[str, Any] = {}
    for key, kind in keys.items():
        if key.startswith("image/object/"):
            spec[key] = tf.io.VarLenFeature(kinds[kind])
        else:
            spec[key] = tf.io.FixedLenFeature((), kinds[kind])
    return spec
