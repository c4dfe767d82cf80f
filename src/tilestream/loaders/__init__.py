"""Loaders: framework-free record streams, sharding, sampling, parsing, augmentation.

The PyTorch and TensorFlow datasets built on these live in
:mod:`tilestream.torch` and :mod:`tilestream.tf`.

- :func:`tfrecord_loader`, :func:`multi_tfrecord_loader`: parsed records of one
  file / many files interleaved by weight, sharded by ``shard=(i, n)``.
- :func:`get_tfrecord_parser`: Slideflow-style parsers (features, decoding,
  augmentation, standardisation).
- :func:`convert_dtype`: numpy / torch / TensorFlow image layouts.
- :class:`WeightedSampler`: ``O(log n)`` weighted choice with removal.
- :class:`TileOptions`: the options of the tile datasets, checked once.

Examples
--------
>>> from tilestream.loaders import parse_augment, validate_shard
>>> parse_augment(True), validate_shard((1, 4))
('xyrjb', (1, 4))
"""

from __future__ import annotations

from tilestream.loaders.augment import ALL_AUGMENTATIONS, augment_image, parse_augment
from tilestream.loaders.dtype import convert_dtype, per_image_standardization
from tilestream.loaders.labels import balance_weights, check_labels, load_labels
from tilestream.loaders.options import TileOptions
from tilestream.loaders.parser import TFRecordParser, decode_rgb, get_tfrecord_parser
from tilestream.loaders.sampling import WeightedSampler, normalize_weights
from tilestream.loaders.sharding import (
    distributed_context,
    global_shard,
    shard_ranges,
    validate_shard,
)
from tilestream.loaders.stream import (
    RecordSource,
    RecordStream,
    multi_tfrecord_loader,
    open_sources,
    tfrecord_loader,
)

__all__ = [
    "ALL_AUGMENTATIONS",
    "RecordSource",
    "RecordStream",
    "TFRecordParser",
    "TileOptions",
    "WeightedSampler",
    "augment_image",
    "balance_weights",
    "check_labels",
    "convert_dtype",
    "decode_rgb",
    "distributed_context",
    "get_tfrecord_parser",
    "global_shard",
    "load_labels",
    "multi_tfrecord_loader",
    "normalize_weights",
    "open_sources",
    "parse_augment",
    "per_image_standardization",
    "shard_ranges",
    "tfrecord_loader",
    "validate_shard",
]
