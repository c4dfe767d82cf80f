"""Extraction beyond one machine: the same pipeline on a Dask cluster.

:func:`dask_executor` yields a :class:`concurrent.futures.Executor` backed by
Dask distributed, to pass to :func:`tilestream.extract.extract_slides`. Each
slide is one task that writes its outputs atomically into the shared output
folder and returns a small record; permanent errors come back as failure
records, transient I/O errors raise so Dask's retries repeat them, and a
worker lost mid-slide costs that slide a retry on another worker.

Install with ``pip install 'tilestream[dask]'``.
"""

from __future__ import annotations

from tilestream.distributed.dask import DaskRun, dask_executor, parse_cluster_spec

__all__ = ["DaskRun", "dask_executor", "parse_cluster_spec"]
