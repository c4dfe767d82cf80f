"""Object-detection data sets to TF Object Detection API TFRecords, and back to COCO.

Readers for PASCAL VOC XML, COCO JSON, the TF Object Detection CSV and YOLO
text files produce an :class:`AnnotationSet`; :func:`convert` validates it and
writes split, sharded TFRecords with the OD API schema, a ``label_map.pbtxt``
and a summary. :func:`tfrecords_to_coco` goes back to COCO. Depends on
:mod:`tilestream.tfrecord` only.

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
from tilestream.detection.convert import (
    ConversionSummary,
    SplitSummary,
    assign_splits,
    convert,
    parse_split,
    resolve_label_map,
    shard_names,
)
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
from tilestream.detection.to_coco import tfrecords_to_coco, write_coco
from tilestream.detection.voc import read_voc
from tilestream.detection.yolo import read_yolo, read_yolo_classes

__all__ = [
    "COMMON_KEYS",
    "FORMAT_KEYS",
    "PROBLEM_KINDS",
    "AnnotationSet",
    "ConversionSummary",
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
