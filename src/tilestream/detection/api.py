"""One call per format: parse the annotations and convert them.

Each ``convert_<format>`` takes the format's own inputs and passes every other
option to :func:`~tilestream.detection.convert.convert`.

Examples
--------
>>> import tempfile, pathlib
>>> from PIL import Image
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> Image.new("RGB", (8, 6)).save(d / "a.png")
>>> _ = (d / "a.txt").write_text("0 0.5 0.5 0.5 0.5\\n")
>>> _ = (d / "classes.txt").write_text("cell\\n")
>>> s = convert_yolo(d, d / "out")
>>> s.splits["train"].objects, s.label_map.to_dict()
(1, {'cell': 1})
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tilestream.detection.coco import read_coco
from tilestream.detection.convert import ConversionSummary, convert
from tilestream.detection.csv_format import read_csv
from tilestream.detection.voc import read_voc
from tilestream.detection.yolo import read_yolo

__all__ = ["convert_coco", "convert_csv", "convert_voc", "convert_yolo"]

PathLike = str | os.PathLike[str]


def convert_voc(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    image_set: str | None = None,
    annotations_dir: PathLike | None = None,
    images_dir: PathLike | None = None,
    **options: Any,
) -> ConversionSummary:
    """PASCAL VOC folder -> TFRecords (see :func:`~tilestream.detection.read_voc`)."""
    source = read_voc(
        data_dir, image_set=image_set, annotations_dir=annotations_dir, images_dir=images_dir
    )
    return convert(source, out_dir, **options)


def convert_coco(
    annotations: PathLike,
    out_dir: PathLike,
    *,
    images_dir: PathLike | None = None,
    **options: Any,
) -> ConversionSummary:
    """COCO instances JSON -> TFRecords (see :func:`~tilestream.detection.read_coco`)."""
    return convert(read_coco(annotations, images_dir=images_dir), out_dir, **options)


def convert_csv(
    csv_path: PathLike,
    out_dir: PathLike,
    *,
    images_dir: PathLike | None = None,
    **options: Any,
) -> ConversionSummary:
    """TF Object Detection CSV -> TFRecords (see :func:`~tilestream.detection.read_csv`)."""
    return convert(read_csv(csv_path, images_dir=images_dir), out_dir, **options)


def convert_yolo(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    classes: Sequence[str] | PathLike | None = None,
    **options: Any,
) -> ConversionSummary:
    """YOLO / Darknet folder -> TFRecords (see :func:`~tilestream.detection.read_yolo`)."""
    return convert(read_yolo(data_dir, classes=classes), out_dir, **options)
