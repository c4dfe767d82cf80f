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

from tilestream.detection._parse import positive_int
from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["read_coco"]


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
    data = _load_json(path)
    problems: list[Problem] = []
    categories = _read_categories(data["categories"], spath, problems)
    images = _read_images(data["images"], spath, img_dir, problems)
    for i, ann in enumerate(data.get("annotations", [])):
        _add_annotation(i, ann, images, categories, spath, problems)
    return AnnotationSet(
        "coco",
        list(images.values()),
        problems,
        source=spath,
        categories=[(cid, name) for cid, name in categories.items() if isinstance(cid, int)],
    )


def _load_json(path: Path) -> dict[str, Any]:
    """The file's top-level object, checked to hold the ``images`` and ``categories`` lists."""
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
    if not isinstance(data.get("annotations", []), list):
        raise AnnotationError("'annotations' is not a list", path=path)
    return data


def _read_categories(entries: list[Any], spath: str, problems: list[Problem]) -> dict[Any, str]:
    """``{category id: name}``; entries without an id and repeated ids are problems."""
    categories: dict[Any, str] = {}
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or "id" not in cat:
            problems.append(Problem("malformed_annotation", spath, f"categories[{i}] has no id"))
            continue
        if cat["id"] in categories:
            msg = f"category id {cat['id']} appears twice"
            problems.append(Problem("malformed_annotation", spath, msg))
        categories[cat["id"]] = str(cat.get("name") or "")
    return categories


def _read_images(
    entries: list[Any], spath: str, img_dir: Path, problems: list[Problem]
) -> dict[Any, ImageAnnotation]:
    """``{image id: image}`` without objects; incomplete entries and repeated ids are problems."""
    images: dict[Any, ImageAnnotation] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            msg = f"images[{i}] lacks an id or a file_name"
            problems.append(Problem("malformed_annotation", spath, msg))
            continue
        file_name = str(entry["file_name"])
        if entry["id"] in images:
            msg = f"image id {entry['id']} appears twice"
            problems.append(Problem("malformed_annotation", spath, msg, image=file_name))
            continue
        images[entry["id"]] = ImageAnnotation(
            file_name,
            os.fspath(img_dir / file_name),
            source=spath,
            width=positive_int(entry.get("width")),
            height=positive_int(entry.get("height")),
            source_id=str(entry["id"]),
        )
    return images


def _add_annotation(
    i: int,
    ann: Any,
    images: dict[Any, ImageAnnotation],
    categories: dict[Any, str],
    spath: str,
    problems: list[Problem],
) -> None:
    """Append annotation ``i`` to its image's objects (NaN box or empty class on a problem)."""
    if not isinstance(ann, dict):
        problems.append(Problem("malformed_annotation", spath, f"annotations[{i}] invalid"))
        return
    image = images.get(ann.get("image_id"))
    where = f"annotation id {ann.get('id')}"
    if image is None:
        msg = f"{where} refers to unknown image_id {ann.get('image_id')!r}"
        problems.append(Problem("malformed_annotation", spath, msg))
        return
    number = len(image.objects)
    label = categories.get(ann.get("category_id"))
    if label is None:
        msg = f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'"
        problems.append(Problem("unknown_class", spath, msg, image=image.filename, object=number))
        label = ""
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox):
        x, y, w, h = (float(v) for v in bbox)
    else:
        msg = f"{where}: bbox {bbox!r} is not [x, y, w, h]"
        problems.append(
            Problem("bad_box", spath, msg, image=image.filename, object=number, label=label or None)
        )
        x = y = w = h = math.nan
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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
