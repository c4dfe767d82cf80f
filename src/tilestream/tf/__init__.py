"""TensorFlow interop: tilestream's tile datasets as ``tf.data`` pipelines (needs the ``tf`` extra).

:func:`tile_dataset` returns a ``tf.data.Dataset`` with the options of
:class:`tilestream.torch.TileDataset` (weights through ``sample_from_datasets``,
record-level sharding, parsing, augmentation, stain normalisation, skipping
corrupt records); the same records decode to the same pixels through both.

Importing this package imports TensorFlow; without it, a
:class:`~tilestream.errors.MissingDependencyError` says how to install it.
"""

from __future__ import annotations

from tilestream.loaders.options import TileOptions
from tilestream.tf.dataset import SkipCount, tile_dataset

__all__ = ["SkipCount", "TileOptions", "tile_dataset"]
