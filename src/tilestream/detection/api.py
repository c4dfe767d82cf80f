"""One call per format: parse the annotations and convert them.

Each ``convert_<format>`` takes the format's own inputs and passes every other
option (a :class:`~tilestream.detection.convert.ConvertOptions` key) to
:func:`~tilestream.detection.convert.convert`. The option names are checked
before the annotations are read: a misspelt one is a type error for mypy and a
:class:`~tilestream.errors.ConfigError` at run time.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tilestream.detection.annotations import AnnotationSet
from tilestream.detection.coco import read_coco
from tilestream.detection.convert import ConversionSummary, check_option_names, convert
from tilestream.detection.csv_format import read_csv
from tilestream.detection.voc import read_voc
from tilestream.detection.yolo import read_yolo

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tilestream.detection.convert import ConvertOptions

__all__ = ["convert_coco", "convert_csv", "convert_voc", "convert_yolo"]

PathLike = str | os.PathLike[str]


def _read_and_convert(
    read: Callable[[], AnnotationSet], out_dir: PathLike, options: ConvertOptions
) -> ConversionSummary:
    check_option_names(options)
    return convert(read(), out_dir, **options)


def convert_voc(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    image_set: str | None = None,
    annotations_dir: PathLike | None = None,
    images_dir: PathLike | None = None,
    **options: Unpack[ConvertOptions],
) -> ConversionSummary:
    """PASCAL VOC folder -> TFRecords (see :func:`~tilestream.detection.read_voc`)."""

    def read() -> AnnotationSet:
        return read_voc(
            data_dir, image_set=image_set, annotations_dir=annotations_dir, images_dir=images_dir
        )

    return _read_and_convert(read, out_dir, options)


def convert_coco(
    annotations: PathLike,
    out_dir: PathLike,
    *,
    images_dir: PathLike | None = None,
    **options: Unpack[ConvertOptions],
) -> ConversionSummary:
    """COCO instances JSON -> TFRecords (see :func:`~tilestream.detection.read_coco`)."""
    return _read_and_convert(
        lambda: read_coco(annotations, images_dir=images_dir), out_dir, options
    )


def convert_csv(
    csv_path: PathLike,
    out_dir: PathLike,
    *,
    images_dir: PathLike | None = None,
    **options: Unpack[ConvertOptions],
) -> ConversionSummary:
    """TF Object Detection CSV -> TFRecords (see :func:`~tilestream.detection.read_csv`)."""
    return _read_and_convert(lambda: read_csv(csv_path, images_dir=images_dir), out_dir, options)


def convert_yolo(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    classes: Sequence[str] | PathLike | None = None,
    **options: Unpack[ConvertOptions],
) -> ConversionSummary:
    """YOLO / Darknet folder -> TFRecords (see :func:`~tilestream.detection.read_yolo`)."""
    return _read_and_convert(lambda: read_yolo(data_dir, classes=classes), out_dir, options)
