"""COCO instances JSON (``images``, ``annotations``, ``categories``).

Boxes are ``[x, y, width, height]`` in pixels; ``segmentation`` is a list of
polygons or an RLE (uncompressed ``counts`` list or compressed string), kept
for :mod:`~tilestream.detection.masks`. Category ids may have gaps; objects
carry their category *name*, and ids come from the label map.

Examples
--------
>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "i.json").write_text(json.dumps({
...     "images": [{"id": 7, "file_name": "a.jpg", "width": 10, "height": 5}],
...     "categories": [{"id": 4, "name": "cat"}],
...     "annotations": [{"id": 1, "image_id": 7, "category_id": 4, "bbox": [1, 1, 2, 3],
...                      "iscrowd": 0, "area": 6.0}]}))
>>> s = read_coco(d / "i.json")
>>> img = s.images[0]
>>> img.source_id, img.objects[0].label, img.objects[0].xmax, s.categories
('7', 'cat', 3.0, [(4, 'cat')])
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["read_coco"]


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value <= 0 or value != int(value):
        return None
    return int(value)


def read_coco(
    annotations: str | os.PathLike[str], *, images_dir: str | os.PathLike[str] | None = None
) -> AnnotationSet:
    """Read a COCO instances JSON file.

    Parameters
    ----------
    annotations
        The JSON file.
    images_dir
        Where ``file_name`` s are relative to (default: the JSON's folder).

    Raises
    ------
    AnnotationError
        When the file is missing, empty, not JSON, or lacks the ``images`` /
        ``categories`` lists. Problems in single entries are collected instead.
    """
    path = Path(annotations)
    spath = os.fspath(path)
    img_dir = Path(images_dir) if images_dir is not None else path.parent
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise AnnotationError("COCO annotation file not found", path=path) from exc
    except OSError as exc:
        raise AnnotationError(f"cannot read: {exc}", path=path) from exc
    if not raw.strip():
        raise AnnotationError("the COCO annotation file is empty", path=path)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"malformed JSON: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise AnnotationError("top level is not a JSON object", path=path)
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"no {key!r} list: not a COCO instances file", path=path)
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError("'annotations' is not a list", path=path)

    problems: list[Problem] = []
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            problems.append(Problem("malformed_annotation", spath, f"categories[{i}] has no id"))
            continue
        name = str(cat.get("name") or "")
        if cat["id"] in categories:
            problems.append(
                Problem("malformed_annotation", spath, f"category id {cat['id']} appears twice")
            )
        categories[cat["id"]] = name

    images: dict[Any, ImageAnnotation] = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            problems.append(
                Problem("malformed_annotation", spath, f"images[{i}] lacks an id or a file_name")
            )
            continue
        file_name = str(entry["file_name"])
        if entry["id"] in images:
            problems.append(
                Problem(
                    "malformed_annotation",
                    spath,
                    f"image id {entry['id']} appears twice",
                    image=file_name,
                )
            )
            continue
        width, height = _positive_int(entry.get("width")), _positive_int(entry.get("height"))
        images[entry["id"]] = ImageAnnotation(
            file_name,
            os.fspath(img_dir / file_name),
            source=spath,
            width=width,
            height=height,
            source_id=str(entry["id"]),
        )

    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            problems.append(Problem("malformed_annotation", spath, f"annotations[{i}] invalid"))
            continue
        image = images.get(ann.get("image_id"))
        if image is None:
            problems.append(
                Problem(
                    "malformed_annotation",
                    spath,
                    f"annotation id {ann.get('id')} refers to unknown image_id "
                    f"{ann.get('image_id')!r}",
                )
            )
            continue
        number = len(image.objects)
        label = categories.get(ann.get("category_id"))
        if label is None:
            problems.append(
                Problem(
                    "unknown_class",
                    spath,
                    f"annotation id {ann.get('id')}: category_id {ann.get('category_id')!r} "
                    "is not in 'categories'",
                    image=image.filename,
                    object=number,
                )
            )
            label = ""
        bbox = ann.get("bbox")
        ok = (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        )
        if not ok:
            problems.append(
                Problem(
                    "bad_box",
                    spath,
                    f"annotation id {ann.get('id')}: bbox {bbox!r} is not [x, y, w, h]",
                    image=image.filename,
                    object=number,
                    label=label or None,
                )
            )
            x = y = w = h = math.nan
        else:
            x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
        area = ann.get("area")
        image.objects.append(
            ObjectAnnotation(
                x,
                y,
                x + w,
                y + h,
                label,
                is_crowd=bool(ann.get("iscrowd", 0)),
                area=float(area) if isinstance(area, (int, float)) else None,
                segmentation=ann.get("segmentation") or None,
            )
        )
    return AnnotationSet(
        "coco",
        list(images.values()),
        problems,
        source=spath,
        categories=[(cid, name) for cid, name in categories.items() if isinstance(cid, int)],
    )
