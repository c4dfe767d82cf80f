"""Datasets of per-slide TFRecords: annotations, manifests, cross-folds and ``sf.io`` utilities.

- :func:`load_annotations`: CSV or dict-list annotations with errors naming file and line.
- :func:`update_manifest_at_dir`: record counts in ``manifest.json`` (never deletes anything).
- :func:`generate_crossfolds`: site-preserved (exact MILP) or stratified k-fold.

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
from tilestream.dataset.manifest import find_tfrecords, read_manifest, update_manifest_at_dir

__all__ = [
    "Annotations",
    "CrossfoldResult",
    "crossfold_objective",
    "find_tfrecords",
    "generate_crossfolds",
    "load_annotations",
    "read_manifest",
    "update_manifest_at_dir",
]
