"""The way back: OD API TFRecords to a COCO instances JSON.

For checking a conversion and for tools that read COCO. Boxes are turned back
into pixels (``[x, y, w, h]``), ``image/object/class/label`` becomes the
``category_id`` (names from ``image/object/class/text`` or a label map),
``is_crowd``/``area`` are kept where present, masks become compressed RLE.
Images keep their ``image/source_id`` as id when all are distinct integers.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord import TFRecordWriter
>>> from tilestream.detection.schema import build_example
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with TFRecordWriter(d / "a.tfrecord", index=False) as w:
...     w.write(build_example(filename="a.jpg", source_id="7", encoded=b"x", image_format="jpeg",
...             width=10, height=5, boxes=[(0.1, 0.2, 0.5, 1.0)], texts=["cat"], labels=[3]))
>>> coco = tfrecords_to_coco([d / "a.tfrecord"])
>>> coco["images"][0]["id"], coco["categories"], coco["annotations"][0]["bbox"]
(7, [{'id': 3, 'name': 'cat', 'supercategory': ''}], [1.0, 1.0, 4.0, 4.0])
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from tilestream._util.atomic import write_json_atomic
from tilestream.detection.labelmap import LabelMap, read_label_map
from tilestream.detection.masks import encode_rle_string
from tilestream.errors import AnnotationError, CorruptRecordError
from tilestream.tfrecord import Feature, decode_example, iter_records

__all__ = ["tfrecords_to_coco", "write_coco"]

log = logging.getLogger(__name__)


def _values(ex: dict[str, Feature], key: str) -> Any:
    feature = ex.get(key)
    if feature is None or feature.kind is None:
        return []
    return feature.value


def _scalar(ex: dict[str, Feature], key: str, path: str, record: int) -> Any:
    values = _values(ex, key)
    if len(values) != 1:
        raise CorruptRecordError(
            f"{key} has {len(values)} values, expected 1", path=path, record=record
        )
    return values[0]


def _round(v: float) -> float:
    return float(f"{float(v):.6g}") if abs(v) < 1e5 else round(float(v), 3)


def tfrecords_to_coco(
    records: Iterable[str | os.PathLike[str]],
    *,
    label_map: LabelMap | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build a COCO instances dict from OD API TFRecord files.

    Parameters
    ----------
    records
        TFRecord files (plain or compressed, detected).
    label_map
        Names for the categories; by default ``image/object/class/text``.

    Raises
    ------
    CorruptRecordError
        On a damaged record or one missing an OD API key.
    AnnotationError
        When one label id is used with different class names.
    """
    if isinstance(label_map, (str, os.PathLike)):
        label_map = read_label_map(label_map)
    mapped = {item.id for item in label_map} if label_map is not None else set()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    for path in records:
        spath = os.fspath(path)
        for number, data in enumerate(iter_records(path)):
            ex = decode_example(data, path=spath, record=number)
            image = _image(ex, spath, number, len(images) + 1)
            images.append(image)
            for label, text, ann in _objects(ex, image, spath, number):
                if label_map is not None and label in mapped:
                    text = label_map.name_of(label)
                _name(names, label, text, spath, number)
                ann["id"] = len(annotations) + 1
                annotations.append(ann)
    _ids_from_source_ids(images, annotations)
    return {
        "images": images,
        "annotations": annotations,
        "categories": _categories(names, label_map),
    }


def _image(ex: dict[str, Feature], spath: str, number: int, image_no: int) -> dict[str, Any]:
    """The COCO image of a record (with its ``_source_id`` until the ids are settled)."""
    source_ids = _values(ex, "image/source_id")
    return {
        "id": image_no,
        "file_name": bytes(_scalar(ex, "image/filename", spath, number)).decode("utf-8"),
        "width": int(_scalar(ex, "image/width", spath, number)),
        "height": int(_scalar(ex, "image/height", spath, number)),
        "_source_id": bytes(source_ids[0]).decode("utf-8") if len(source_ids) else "",
    }


def _objects(
    ex: dict[str, Feature], image: dict[str, Any], spath: str, number: int
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(label, class text, COCO annotation without id)`` of each object with a class."""
    width, height = image["width"], image["height"]
    box = {
        k: np.asarray(_values(ex, f"image/object/bbox/{k}"), dtype=np.float64)
        for k in ("xmin", "ymin", "xmax", "ymax")
    }
    labels = [int(v) for v in _values(ex, "image/object/class/label")]
    texts = [bytes(v).decode("utf-8") for v in _values(ex, "image/object/class/text")]
    n = len(box["xmin"])
    if any(len(b) != n for b in box.values()) or (labels and len(labels) != n):
        raise CorruptRecordError(
            "the bbox and class lists have different lengths", path=spath, record=number
        )
    crowd = _values(ex, "image/object/is_crowd")
    area = _values(ex, "image/object/area")
    masks = _values(ex, "image/object/mask")
    for i in range(n):
        label = labels[i] if labels else 0
        if label <= 0:  # 0 is the background: an object without a class
            log.warning("%s: record %d: object %d has label %d, left out", spath, number, i, label)
            continue
        x0, y0 = box["xmin"][i] * width, box["ymin"][i] * height
        w = (box["xmax"][i] - box["xmin"][i]) * width
        h = (box["ymax"][i] - box["ymin"][i]) * height
        ann: dict[str, Any] = {
            "id": 0,
            "image_id": image["id"],
            "category_id": label,
            "bbox": [_round(x0), _round(y0), _round(w), _round(h)],
            "area": _round(float(area[i])) if i < len(area) else _round(w * h),
            "iscrowd": int(crowd[i]) if i < len(crowd) else 0,
            "segmentation": _rle(masks[i]) if i < len(masks) else [],
        }
        yield label, texts[i] if i < len(texts) else "", ann


def _rle(png: bytes) -> Any:
    with Image.open(io.BytesIO(bytes(png))) as im:
        mask = np.asarray(im) > 0
    return encode_rle_string(mask)


def _name(names: dict[int, str], label: int, text: str, spath: str, number: int) -> None:
    """Record ``text`` as the name of ``label``; a second, different name is an error."""
    known = names.setdefault(label, text)
    if known != text and text:
        if known:
            raise AnnotationError(
                f"record {number}: label {label} is {text!r} here but {known!r} earlier",
                path=spath,
            )
        names[label] = text


def _ids_from_source_ids(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> None:
    """Use the integer source ids as image ids when they are all distinct; drop ``_source_id``."""
    ids = [img["_source_id"] for img in images]
    if ids and all(i.isdigit() for i in ids) and len(set(ids)) == len(ids):
        remap = {img["id"]: int(img["_source_id"]) for img in images}
        for img in images:
            img["id"] = remap[img["id"]]
        for ann in annotations:
            ann["image_id"] = remap[ann["image_id"]]
    for img in images:
        del img["_source_id"]


def _categories(names: dict[int, str], label_map: LabelMap | None) -> list[dict[str, Any]]:
    """The label map's categories then those only the records name, or the records' alone."""
    categories = []
    declared: set[int] = set()
    if label_map is not None:
        categories = [{"id": it.id, "name": it.name, "supercategory": ""} for it in label_map]
        declared = {it.id for it in label_map}
    categories += [
        {"id": k, "name": v, "supercategory": ""}
        for k, v in sorted(names.items())
        if k not in declared
    ]
    return categories


def write_coco(
    records: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    label_map: LabelMap | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write :func:`tfrecords_to_coco` of ``records`` to ``out_path`` (atomically)."""
    coco = tfrecords_to_coco(records, label_map=label_map)
    write_json_atomic(out_path, coco, indent=None)
    return coco
