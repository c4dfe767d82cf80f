"""Object-detection data sets to TF Object Detection API TFRecords, and back to COCO.

Readers for PASCAL VOC XML (:func:`read_voc`), COCO JSON (:func:`read_coco`),
the TF Object Detection CSV (:func:`read_csv`) and YOLO text files
(:func:`read_yolo`) produce an :class:`AnnotationSet`; :func:`convert` (or one
``convert_<format>`` call) validates it and writes split, sharded TFRecords
with the OD API schema, the ``label_map.pbtxt`` used, ``summary.json`` and a
``README.md`` of counts per split and class. :func:`tfrecords_to_coco` goes
back to COCO. Depends on :mod:`tilestream.tfrecord` only.

Choices worth knowing:

* ``image/format`` is ``jpeg`` or ``png``, the values the OD API's own tools
  write. The tutorial ``generate_tfrecord.py`` wrote ``jpg``; pass
  ``jpeg_format="jpg"`` (CLI ``--jpeg-format jpg``) to reproduce such files
  exactly. TensorFlow decodes the image from its bytes either way.
* JPEG and PNG bytes are copied as they are; other formats are re-encoded to
  PNG. ``image/key/sha256`` is the SHA-256 of the bytes written.
* Problems are handled by ``on_error`` (see :mod:`tilestream.detection.validate`):
  ``fail`` (default) writes nothing and lists every problem.
* Images with no objects are kept as negatives unless ``skip_empty``.
* Memory: annotations are light (paths and numbers, never pixels); pixels
  are read a few chunks of images at a time, so memory stays bounded
  whatever the number of images (measured in ``docs/benchmarks.md``).

Examples
--------
>>> from tilestream.detection import LabelMap
>>> LabelMap.from_names(["dog", "cat"]).to_dict()
{'cat': 1, 'dog': 2}
"""

from __future__ import annotations

from tilestream.detection.annotations import (
    PROBLEM_KINDS,
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.detection.api import convert_coco, convert_csv, convert_voc, convert_yolo
from tilestream.detection.coco import read_coco
from tilestream.detection.convert import ConvertOptions, convert, resolve_label_map
from tilestream.detection.csv_format import read_csv
from tilestream.detection.labelmap import (
    Keypoint,
    LabelMap,
    LabelMapItem,
    parse_label_map,
    read_label_map,
    write_label_map,
)
from tilestream.detection.masks import annotation_mask, decode_rle, mask_to_png, polygons_to_mask
from tilestream.detection.schema import COMMON_KEYS, FORMAT_KEYS, build_example, feature_spec
from tilestream.detection.splits import assign_splits, parse_split, shard_names
from tilestream.detection.summary import ConversionSummary, SplitSummary
from tilestream.detection.to_coco import tfrecords_to_coco, write_coco
from tilestream.detection.voc import read_voc
from tilestream.detection.yolo import read_yolo, read_yolo_classes

__all__ = [
    "COMMON_KEYS",
    "FORMAT_KEYS",
    "PROBLEM_KINDS",
    "AnnotationSet",
    "ConversionSummary",
    "ConvertOptions",
    "ImageAnnotation",
    "Keypoint",
    "LabelMap",
    "LabelMapItem",
    "ObjectAnnotation",
    "Problem",
    "SplitSummary",
    "annotation_mask",
    "assign_splits",
    "build_example",
    "convert",
    "convert_coco",
    "convert_csv",
    "convert_voc",
    "convert_yolo",
    "decode_rle",
    "feature_spec",
    "mask_to_png",
    "parse_label_map",
    "parse_split",
    "polygons_to_mask",
    "read_coco",
    "read_csv",
    "read_label_map",
    "read_voc",
    "read_yolo",
    "read_yolo_classes",
    "resolve_label_map",
    "shard_names",
    "tfrecords_to_coco",
    "write_coco",
    "write_label_map",
]
