"""The TFRecord format without TensorFlow: framing, ``tf.train.Example``, indexes, random access.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord import TFRecordWriter, iter_records, serialized_record, parse_example
>>> path = pathlib.Path(tempfile.mkdtemp()) / "slide.tfrecords"
>>> with TFRecordWriter(path) as w:
...     w.write(serialized_record("slide", b"img", 0, 256), location=(0, 256))
>>> [parse_example(r)["loc_y"] for r in iter_records(path)]
[256]
"""

from __future__ import annotations

from tilestream.tfrecord._crc import crc32c, masked_crc32c
from tilestream.tfrecord._decode import decode_example, feature_value, parse_example
from tilestream.tfrecord.example import encode_example, serialized_record
from tilestream.tfrecord.feature import Feature, FeatureKind
from tilestream.tfrecord.framing import detect_compression, frame
from tilestream.tfrecord.image import decode_image, detect_image_format
from tilestream.tfrecord.index import (
    TFRecordIndex,
    create_index,
    export_text_index,
    find_index,
    index_path_for,
    index_staleness,
    load_index,
    read_index_file,
    save_index,
    scan_index,
)
from tilestream.tfrecord.reader import RecordIterator, iter_examples, iter_records
from tilestream.tfrecord.sfio import (
    detect_tfrecord_format,
    get_locations_from_tfrecord,
    get_tfrecord_by_index,
    get_tfrecord_by_location,
    get_tfrecord_length,
    read_and_return_record,
    tfrecord_has_locations,
)
from tilestream.tfrecord.tfrecord_file import TFRecord, record_to_dict
from tilestream.tfrecord.writer import TFRecordWriter

__all__ = [
    "Feature",
    "FeatureKind",
    "RecordIterator",
    "TFRecord",
    "TFRecordIndex",
    "TFRecordWriter",
    "crc32c",
    "create_index",
    "decode_example",
    "decode_image",
    "detect_compression",
    "detect_image_format",
    "detect_tfrecord_format",
    "encode_example",
    "export_text_index",
    "feature_value",
    "find_index",
    "frame",
    "get_locations_from_tfrecord",
    "get_tfrecord_by_index",
    "get_tfrecord_by_location",
    "get_tfrecord_length",
    "index_path_for",
    "index_staleness",
    "iter_examples",
    "iter_records",
    "load_index",
    "masked_crc32c",
    "parse_example",
    "read_and_return_record",
    "read_index_file",
    "record_to_dict",
    "save_index",
    "scan_index",
    "serialized_record",
    "tfrecord_has_locations",
]
