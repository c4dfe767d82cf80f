"""Datasets of per-slide TFRecords: annotations, manifests, cross-folds and ``sf.io`` utilities.

- :class:`Dataset`: TFRecords + annotations, with filters, clipping, labels,
  balancing, a summary of problems found, and PyTorch / TensorFlow loaders.
- :func:`load_annotations`: CSV or dict-list annotations with errors naming file and line.
- :func:`update_manifest_at_dir`: record counts in ``manifest.json`` (never deletes
  anything; ``verify=True`` checks every record's CRC); :func:`scan_manifest` counts
  without writing and names the stale slides of run folders it leaves out.
- :func:`generate_crossfolds`: site-preserved (exact MILP) or stratified k-fold.
- Slideflow's ``sf.io`` utilities: :func:`write_tfrecords_single`,
  :func:`write_tfrecords_multi`, :func:`write_tfrecords_merge`,
  :func:`tfrecord_to_images` (Slideflow's ``extract_tiles``, kept as an alias),
  :func:`split_tfrecord`, :func:`merge_tfrecords`,
  :func:`shuffle_tfrecord`, :func:`transform_tfrecord`, :func:`join_tfrecord`.

Examples
--------
>>> from tilestream.dataset import generate_crossfolds
>>> rows = [{"patient": f"p{i}", "label": "ab"[i % 2]} for i in range(6)]
>>> result = generate_crossfolds(rows, "label", k=3, site_column=None)
>>> result.method, result.counts
('stratified', {'a': [1, 1, 1], 'b': [1, 1, 1]})
"""

from __future__ import annotations

from tilestream.dataset.annotations import Annotations, load_annotations
from tilestream.dataset.crossfolds import CrossfoldResult, crossfold_objective, generate_crossfolds
from tilestream.dataset.dataset import BalanceStrategy, Dataset, DatasetSummary
from tilestream.dataset.io import (
    extract_tiles,
    join_tfrecord,
    merge_tfrecords,
    parse_location,
    shuffle_tfrecord,
    split_tfrecord,
    tfrecord_to_images,
    transform_tfrecord,
    write_tfrecords_merge,
    write_tfrecords_multi,
    write_tfrecords_single,
)
from tilestream.dataset.manifest import (
    ManifestScan,
    find_tfrecords,
    read_manifest,
    scan_manifest,
    update_manifest_at_dir,
)

__all__ = [
    "Annotations",
    "BalanceStrategy",
    "CrossfoldResult",
    "Dataset",
    "DatasetSummary",
    "ManifestScan",
    "crossfold_objective",
    "extract_tiles",
    "find_tfrecords",
    "generate_crossfolds",
    "join_tfrecord",
    "load_annotations",
    "merge_tfrecords",
    "parse_location",
    "read_manifest",
    "scan_manifest",
    "shuffle_tfrecord",
    "split_tfrecord",
    "tfrecord_to_images",
    "transform_tfrecord",
    "update_manifest_at_dir",
    "write_tfrecords_merge",
    "write_tfrecords_multi",
    "write_tfrecords_single",
]
