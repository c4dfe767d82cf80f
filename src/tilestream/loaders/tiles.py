"""Everything a tile dataset checks and prepares before its first epoch.

Shared by :class:`tilestream.torch.TileDataset` and :func:`tilestream.tf.tile_dataset`,
so both fail the same way, early (at construction, not inside a worker):
missing or empty files, a slide without a label, weights for unknown files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilestream.errors import ConfigError
from tilestream.loaders._io import FileHandles, read_record
from tilestream.loaders.labels import (
    Balance,
    balance_weights,
    check_labels,
    load_labels,
    slide_name_of,
)
from tilestream.loaders.sampling import WeightSpec, normalize_weights
from tilestream.loaders.stream import ClipSpec, RecordSource, open_sources

__all__ = ["TilePlan", "plan_tiles"]


@dataclass(frozen=True)
class TilePlan:
    """Checked inputs of a tile dataset.

    Attributes
    ----------
    sources
        The files with their (clipped) record offsets.
    slides
        The slide name of each file (its first record's ``slide`` feature).
    labels
        Label by slide name, or None.
    label_names
        Category names when the labels were text, else None.
    weights
        Normalised per-file weights, or None for uniform.
    """

    sources: list[RecordSource]
    slides: list[str]
    labels: dict[str, Any] | None
    label_names: list[str] | None
    weights: np.ndarray | None

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.sources]

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.sources]

    @property
    def num_records(self) -> int:
        return sum(self.lengths)


def _first_slide(source: RecordSource, handles: FileHandles) -> str:
    from tilestream.tfrecord import decode_example

    data = read_record(
        handles.get(source.path), source.path, 0, int(source.offsets[0]), int(source.sizes[0])
    )
    feature = decode_example(data, path=source.path, record=0).get("slide")
    value = feature.value[0] if feature is not None and feature.kind == "bytes_list" else None
    return slide_name_of(value, source.path)


def plan_tiles(
    tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    labels: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    label_column: str | None = None,
    weights: WeightSpec | None = None,
    balance: Balance | None = None,
    clip: ClipSpec = None,
    indices: Sequence[Any] | None = None,
) -> TilePlan:
    """Open, check and weigh the TFRecords of a tile dataset.

    ``tfrecords`` may be a folder (its ``*.tfrecords`` files, sorted).

    Raises
    ------
    TFRecordError, EmptyTFRecordsError, AnnotationError, ConfigError
        Whatever is wrong, naming the file concerned.
    """
    if isinstance(tfrecords, str | os.PathLike):
        root = os.fspath(tfrecords)
        if os.path.isdir(root):
            paths: list[str] = sorted(
                os.path.join(root, n) for n in os.listdir(root) if n.endswith(".tfrecords")
            )
        else:
            paths = [root]
    else:
        paths = [os.fspath(p) for p in tfrecords]
    if len(set(paths)) != len(paths):
        raise ConfigError("the same TFRecord is listed more than once")
    sources = open_sources(paths, indices, clip=clip)
    handles = FileHandles(1)
    try:
        slides = [_first_slide(s, handles) for s in sources]
    finally:
        handles.close()
    label_map, names = load_labels(labels, label_column)
    if label_map is not None:
        check_labels(label_map, slides, paths)
    if weights is not None and balance is not None:
        raise ConfigError("give weights= or balance=, not both")
    w: np.ndarray | None = None
    if balance is not None:
        cats = [label_map[s] for s in slides] if label_map is not None else None
        if balance == "category" and cats is None:
            raise ConfigError("balance='category' needs labels=")
        w = np.asarray(balance_weights(balance, [len(s) for s in sources], cats))
    elif weights is not None:
        w = normalize_weights(weights, paths)
    return TilePlan(sources, slides, label_map, names, w)
