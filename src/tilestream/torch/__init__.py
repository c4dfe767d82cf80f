"""PyTorch datasets over tilestream TFRecords (needs the ``torch`` extra).

- :class:`TileDataset`: an ``IterableDataset`` that shards records over
  distributed ranks and DataLoader workers (every record once per epoch in
  finite mode), interleaves files by weight, and reshuffles per epoch.
- :class:`IndexedTileDataset`: a map-style dataset for random access, e.g. with
  ``DistributedSampler``.

Importing this package imports PyTorch; without it, a
:class:`~tilestream.errors.MissingDependencyError` says how to install it.

Examples
--------
>>> import torch
>>> from tilestream.torch import TileDataset
>>> issubclass(TileDataset, torch.utils.data.IterableDataset)
True
"""

from __future__ import annotations

from tilestream.loaders.options import TileOptions
from tilestream.torch.dataset import IndexedTileDataset, TileDataset

__all__ = ["IndexedTileDataset", "TileDataset", "TileOptions"]
