"""The training-side contenders of ``bench_remote.py``: one epoch of tiles from S3 or local files.

* ``records-local``: ``tilestream.torch.TileDataset(paths, shuffle=True, seed=0,
  batch_size=64)`` in a ``DataLoader(batch_size=None, num_workers=2)`` (batches
  built in the workers, as ``bench_loaders.py`` measures it), the TFRecords on
  local disk (warm page cache);
* ``records-s3``: the same over the files' ``s3://`` URLs (``storage_options``);
* ``tfdata-s3``: ``tf.data.TFRecordDataset`` over the same ``s3://`` URLs, the
  endpoint and keys in TensorFlow's environment variables (``S3_ENDPOINT``,
  ``AWS_ACCESS_KEY_ID``...). TensorFlow dropped its own S3 filesystem (it lives in
  ``tensorflow-io`` now); when ``s3://`` is not a filesystem TensorFlow knows,
  the contender reports that and is not run: there is no row to fake.

Each returns ``tiles`` (decoded images delivered), ``seconds`` (the epoch, worker
start-up included), ``cpu_seconds`` (the process and its reaped workers) and
``peak_mb``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from _extract_runs import cpu_seconds, peak_mb
from _remote_extract import NotAvailable

__all__ = ["LOADERS", "prepare_records", "run_loader"]

#: The contenders :func:`run_loader` knows.
LOADERS = ("records-local", "records-s3", "tfdata-s3")
BATCH = 64
WORKERS = 2

Result = dict[str, Any]


def prepare_records(workdir: Path, n_tiles: int, n_files: int) -> list[Path]:
    """The benchmark's TFRecords (realistic 256 px JPEG tiles, Slideflow schema), made once."""
    from _tiles import write_tile_tfrecords

    folder = workdir / f"tiles-{n_tiles}-{n_files}"
    paths = sorted(folder.glob("*.tfrecords")) if folder.is_dir() else []
    complete = len(paths) == n_files and all(p.with_suffix(".index.npz").is_file() for p in paths)
    if not complete:
        paths = write_tile_tfrecords(folder, n_tiles, n_files)
    for p in paths:  # warm the page cache for the local contender
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    return paths


def _tilestream_epoch(paths: list[str], options: dict[str, Any] | None) -> int:
    import torch

    from tilestream.torch import TileDataset

    extra: dict[str, Any] = {"storage_options": options} if options else {}
    try:
        ds = TileDataset(paths, shuffle=True, seed=0, batch_size=BATCH, **extra)
    except TypeError as exc:  # TileDataset does not take storage_options yet
        raise NotAvailable(f"TileDataset: {exc}") from None
    loader: Any = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=WORKERS)
    ds.set_epoch(0)
    n = 0
    for images, _labels in loader:
        n += int(images.shape[0])
    return n


def _tf_environment(options: dict[str, Any]) -> None:
    endpoint = str(options["endpoint_url"])
    os.environ["S3_ENDPOINT"] = endpoint.split("://", 1)[-1]
    os.environ["S3_USE_HTTPS"] = "0" if endpoint.startswith("http://") else "1"
    os.environ["S3_VERIFY_SSL"] = "0"
    os.environ["AWS_ACCESS_KEY_ID"] = str(options["key"])
    os.environ["AWS_SECRET_ACCESS_KEY"] = str(options["secret"])
    os.environ["AWS_REGION"] = "us-east-1"


def _tf_epoch(urls: list[str], options: dict[str, Any]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _tf_environment(options)
    import tensorflow as tf

    with contextlib.suppress(ImportError):  # tensorflow-io registers s3:// where installed
        import tensorflow_io  # noqa: F401
    try:
        tf.io.gfile.exists(urls[0])
    except Exception as exc:  # UnimplementedError: no s3 filesystem in this TensorFlow
        raise NotAvailable(
            f"TensorFlow {tf.__version__}: {type(exc).__name__}: {str(exc)[:160]}"
        ) from None
    features = {"image_raw": tf.io.FixedLenFeature([], tf.string)}

    def parse(record: Any) -> Any:
        ex = tf.io.parse_single_example(record, features)
        return tf.io.decode_jpeg(ex["image_raw"], channels=3)

    auto = tf.data.AUTOTUNE
    ds = (
        tf.data.Dataset.from_tensor_slices(urls)
        .shuffle(len(urls), seed=0)
        .interleave(tf.data.TFRecordDataset, cycle_length=len(urls), num_parallel_calls=auto)
        .shuffle(1000, seed=0)
        .map(parse, num_parallel_calls=auto)
        .batch(BATCH)
        .prefetch(auto)
    )
    return sum(int(images.shape[0]) for images in ds)


def run_loader(spec: dict[str, Any]) -> Result:
    """Run the loader contender ``spec["which"]`` (in this process) and return its result."""
    which = spec["which"]
    t0, c0 = time.perf_counter(), cpu_seconds()
    if which == "records-local":
        tiles = _tilestream_epoch(spec["paths"], None)
    elif which == "records-s3":
        tiles = _tilestream_epoch(spec["urls"], spec["options"])
    elif which == "tfdata-s3":
        tiles = _tf_epoch(spec["urls"], spec["options"])
    else:
        raise ValueError(f"unknown loader contender {which!r}")
    return {
        "tiles": tiles,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - c0,
        "peak_mb": peak_mb(),
    }
