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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tilestream.tfrecord import Feature, encode_example

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
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.float32)
    features: dict[str, Any] = {
        "image/height": Feature.int64_list([height]),
        "image/width": Feature.int64_list([width]),
        "image/filename": Feature.bytes_list([filename]),
        "image/source_id": Feature.bytes_list([source_id]),
        "image/key/sha256": Feature.bytes_list([sha256 or hashlib.sha256(encoded).hexdigest()]),
        "image/encoded": Feature.bytes_list([encoded]),
        "image/format": Feature.bytes_list([image_format]),
        "image/object/bbox/xmin": Feature.float_list(arr[:, 0]),
        "image/object/bbox/xmax": Feature.float_list(arr[:, 2]),
        "image/object/bbox/ymin": Feature.float_list(arr[:, 1]),
        "image/object/bbox/ymax": Feature.float_list(arr[:, 3]),
        "image/object/class/text": Feature.bytes_list(texts),
        "image/object/class/label": Feature.int64_list(np.asarray(labels, dtype=np.int64)),
    }
    if extra:
        features.update(extra)
    return encode_example(features)


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
