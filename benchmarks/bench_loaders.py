"""Benchmark of tilestream's PyTorch loader against tf.data and the ``tfrecord`` package.

20,000 realistic 256 px JPEG tiles (cut from real slides, see ``_tiles.py``;
~34 KB each) spread over 20 TFRecords in the Slideflow schema are read into
shuffled batches of 64 decoded uint8 images, side by side in one run:

* **tilestream**: ``tilestream.torch.TileDataset`` (per-file shuffle, random
  interleave, record-level sharding) in a ``torch.utils.data.DataLoader`` with
  2 workers, two ways: batches built in the workers
  (``TileDataset(batch_size=64)``, ``DataLoader(batch_size=None)``: tiles
  decoded straight into a shared-memory batch), and the usual per-tile items
  collated by the DataLoader (``DataLoader(batch_size=64)``); images are uint8
  CHW tensors;
* **tf.data**: ``TFRecordDataset`` files interleaved (``interleave`` with
  parallel calls), ``shuffle``, parallel ``map`` of ``parse_single_example`` +
  ``decode_jpeg``, ``batch(64)``, ``prefetch``; TensorFlow uses every core;
* **tfrecord package**: ``tfrecord.torch.MultiTFRecordDataset`` (its own
  shuffle queue) decoding with the same decoder as tilestream (simplejpeg) in
  a DataLoader with 2 workers, stopped after 20,000 tiles (it is infinite and
  does not shard between workers);
* **decode bound**: the same tiles decoded with simplejpeg in a tight loop,
  on one core, and in 2 processes at once (the 2-core bound).

Each pipeline reads one full epoch (20,000 tiles) including worker start-up;
the page cache is warm (the files are read once before timing). Each run is a
fresh process; the pipelines take turns over ``--repeat`` rounds and the best
run of each is reported, as wall-clock tiles/s and as tiles per CPU-second
(the CPU time of the process, its threads and its workers): on a machine
shared with other jobs the second is the steadier measure of efficiency.

Run::

    python benchmarks/bench_loaders.py                 # print the table
    python benchmarks/bench_loaders.py --write-docs    # and update docs/benchmarks.md

Options: ``--tiles N`` (default 20000), ``--files F`` (default 20),
``--repeat R`` (default 3), ``--workdir DIR`` (default
``benchmarks/_work/loaders``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _tiles import realistic_tiles, write_tile_tfrecords  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
START = "<!-- bench_loaders:start -->"
END = "<!-- bench_loaders:end -->"
BATCH = 64
WORKERS = 2


# --------------------------------------------------------------------------- data


def prepare(workdir: Path, n_tiles: int, n_files: int) -> list[str]:
    folder = workdir / f"tiles-{n_tiles}-{n_files}"
    paths = sorted(folder.glob("*.tfrecords")) if folder.is_dir() else []
    if len(paths) != n_files:
        paths = write_tile_tfrecords(folder, n_tiles, n_files)
    from tilestream.tfrecord import export_text_index

    for p in paths:  # the tfrecord package reads "offset length" text indexes
        text = Path(p).with_suffix(".index")
        if not text.is_file():
            export_text_index(p, text)
        with open(p, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
    return [str(p) for p in paths]


# --------------------------------------------------------------------------- decode bound


def _decode_all(tiles: list[bytes]) -> int:
    import simplejpeg

    for t in tiles:
        simplejpeg.decode_jpeg(t, colorspace="RGB")
    return len(tiles)


# --------------------------------------------------------------------------- tilestream


def tilestream_epoch(paths: list[str], epoch: int, *, worker_batches: bool = False) -> int:
    import torch

    from tilestream.torch import TileDataset

    if worker_batches:  # batches built in the workers, decoded straight into shared memory
        ds = TileDataset(paths, shuffle=True, seed=0, batch_size=BATCH)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=WORKERS)
    else:  # the usual way: one tile per item, DataLoader's default collate
        ds = TileDataset(paths, shuffle=True, seed=0)
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    ds.set_epoch(epoch)
    n = 0
    for images, _labels in loader:
        assert images.dtype == torch.uint8
        n += images.shape[0]
    return n


# --------------------------------------------------------------------------- tf.data


def tf_epoch(paths: list[str], epoch: int) -> int:
    import tensorflow as tf

    features = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "slide": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(record: Any) -> Any:
        ex = tf.io.parse_single_example(record, features)
        return tf.io.decode_jpeg(ex["image_raw"], channels=3), ex["slide"]

    auto = tf.data.AUTOTUNE
    ds = (
        tf.data.Dataset.from_tensor_slices(paths)
        .shuffle(len(paths), seed=epoch)
        .interleave(tf.data.TFRecordDataset, cycle_length=len(paths), num_parallel_calls=auto)
        .shuffle(1000, seed=epoch)
        .map(parse, num_parallel_calls=auto)
        .batch(BATCH)
        .prefetch(auto)
    )
    n = 0
    for images, _ in ds:
        n += int(images.shape[0])
    return n


# --------------------------------------------------------------------------- tfrecord package


def _tfrecord_transform(features: dict[str, Any]) -> Any:
    import simplejpeg
    import torch

    raw = features["image_raw"]
    data = raw if isinstance(raw, bytes) else raw.tobytes()
    img = simplejpeg.decode_jpeg(data, colorspace="RGB")
    return torch.from_numpy(img).permute(2, 0, 1)


def tfrecord_pkg_epoch(paths: list[str], n_tiles: int) -> int:
    import torch
    from tfrecord.torch.dataset import MultiTFRecordDataset

    folder = Path(paths[0]).parent
    names = [Path(p).name[: -len(".tfrecords")] for p in paths]
    ds = MultiTFRecordDataset(
        str(folder / "{}.tfrecords"),
        str(folder / "{}.index"),
        {n: 1.0 / len(names) for n in names},
        description={"image_raw": "byte"},
        shuffle_queue_size=1000,
        transform=_tfrecord_transform,
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    n = 0
    for images in loader:
        n += images.shape[0]
        if n >= n_tiles:
            break
    return n


# --------------------------------------------------------------------------- report


def table(rows: list[tuple[str, float, float, str]]) -> str:
    lines = [
        "| pipeline | tiles/s (wall) | tiles per CPU-second | note |",
        "|---|---:|---:|---|",
    ]
    for name, rate, per_cpu, note in rows:
        lines.append(f"| {name} | {rate:,.0f} | {per_cpu:,.0f} | {note} |")
    return "\n".join(lines)


def write_docs(body: str) -> None:
    write_section(f"{START}\n{body}\n{END}", START, END, docs=DOCS)


PIPELINES = {
    "tilestream_batched": "tilestream `TileDataset(batch_size=64)`, DataLoader 2 workers",
    "tilestream": "tilestream `TileDataset`, DataLoader 2 workers, `batch_size=64`",
    "tfdata": "tf.data (interleave, shuffle, parallel map `decode_jpeg`, batch, prefetch)",
    "tfrecord_pkg": "`tfrecord` package `MultiTFRecordDataset`, DataLoader 2 workers",
    "decode_1": "decode bound, 1 core (simplejpeg in a tight loop)",
    "decode_2": "decode bound, 2 cores (2 processes at once)",
}


def _cpu_seconds() -> float:
    """CPU time of this process, its threads and its reaped children (workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(name: str, paths: list[str], n_tiles: int, epoch: int) -> tuple[float, float]:
    """One timed run of one pipeline in this (fresh) process: (tiles/s, tiles per CPU-s).

    CPU time counts this process, its threads and its worker processes (reaped
    at the end of the run), over the timed part only.
    """
    tiles = realistic_tiles(n_tiles) if name.startswith("decode") else []
    quarter = tiles[: n_tiles // 4]
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if name == "decode_1":
        n = _decode_all(quarter)
        wall = time.perf_counter() - t0
    elif name == "decode_2":
        with mp.get_context("fork").Pool(2) as pool:
            pool.map(_decode_all, [tiles[:10], tiles[10:20]])  # both workers up
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            n = sum(pool.map(_decode_all, [quarter[0::2], quarter[1::2]]))
            wall = time.perf_counter() - t0
    elif name == "tilestream":
        n = tilestream_epoch(paths, epoch)
        wall = time.perf_counter() - t0
    elif name == "tilestream_batched":
        n = tilestream_epoch(paths, epoch, worker_batches=True)
        wall = time.perf_counter() - t0
    elif name == "tfdata":
        n = tf_epoch(paths, epoch)
        wall = time.perf_counter() - t0
    elif name == "tfrecord_pkg":  # its protobuf module clashes with TensorFlow's: own process
        n = tfrecord_pkg_epoch(paths, n_tiles)
        wall = time.perf_counter() - t0
    else:
        raise ValueError(name)
    return n / wall, n / (_cpu_seconds() - cpu0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tiles", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=HERE / "_work" / "loaders")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one pipeline
    ap.add_argument("--epoch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    paths = prepare(args.workdir, args.tiles, args.files)
    if args.only:
        rate, per_cpu = run_one(args.only, paths, args.tiles, args.epoch)
        print(json.dumps({"rate": rate, "per_cpu": per_cpu}))
        return

    tiles = realistic_tiles(args.tiles)
    mean_kb = np.mean([len(t) for t in tiles]) / 1000
    print(f"{args.tiles} tiles in {len(paths)} files, mean JPEG {mean_kb:.1f} KB")
    load_before = os.getloadavg()[0]
    best: dict[str, float] = {}
    efficiency: dict[str, float] = {}
    # Rounds interleave the pipelines, so a burst of load on the shared machine
    # hits them all alike; each run is a fresh process (clean imports, no clash).
    for r in range(args.repeat):
        for name in PIPELINES:
            cmd = [sys.executable, __file__, "--only", name, "--epoch", str(r)]
            cmd += ["--tiles", str(args.tiles), "--files", str(args.files)]
            cmd += ["--workdir", str(args.workdir)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            rate, per_cpu = result["rate"], result["per_cpu"]
            best[name] = max(best.get(name, 0.0), rate)
            efficiency[name] = max(efficiency.get(name, 0.0), per_cpu)
            print(
                f"round {r + 1}: {PIPELINES[name]}: {rate:,.0f} tiles/s, "
                f"{per_cpu:,.0f} tiles per CPU-second",
                flush=True,
            )
    load_after = os.getloadavg()[0]

    tfr, pkg, two = best["tfdata"], best["tfrecord_pkg"], best["decode_2"]

    def versus(rate: float) -> str:
        return (
            f"{rate / tfr:.2f}x tf.data, {rate / pkg:.2f}x `tfrecord`, "
            f"{rate / two:.0%} of the 2-core decode bound"
        )

    notes = {
        "tilestream_batched": versus(best["tilestream_batched"]),
        "tilestream": versus(best["tilestream"]),
        "tfdata": "TensorFlow threads on every core; `decode_jpeg` default (fast, inexact) DCT",
        "tfrecord_pkg": "same decoder as tilestream (simplejpeg)",
        "decode_1": "accurate DCT, as tilestream",
        "decode_2": "each process decodes half the tiles",
    }
    rows = [(PIPELINES[n], best[n], efficiency[n], notes[n]) for n in PIPELINES]
    import tensorflow as tf
    import torch

    body = "\n".join(
        [
            "## Loaders: shuffled batches of decoded tiles (`bench_loaders.py`)",
            "",
            f"{args.tiles:,} realistic 256 px JPEG tiles (cut from real slides, mean "
            f"{mean_kb:.0f} KB) over {len(paths)} TFRecords, read into shuffled batches of "
            f"{BATCH} decoded uint8 images; one full epoch per run (worker start-up included), "
            f"each run in a fresh process, pipelines interleaved over {args.repeat} rounds, "
            f"best run shown; warm page cache.",
            "",
            table(rows),
            "",
            "Targets: at least 2x tf.data and at least 75% of the 2-core decode bound. "
            f"This run: {best['tilestream_batched'] / tfr:.2f}x tf.data "
            f"({_verdict(best['tilestream_batched'] / tfr, 2.0)}) and "
            f"{best['tilestream_batched'] / two:.0%} of the bound "
            f"({_verdict(best['tilestream_batched'] / two, 0.75)}) in wall-clock tiles/s; "
            f"{efficiency['tilestream_batched'] / efficiency['tfdata']:.2f}x tf.data "
            f"({_verdict(efficiency['tilestream_batched'] / efficiency['tfdata'], 2.0)}) and "
            f"{efficiency['tilestream_batched'] / efficiency['decode_2']:.0%} of the 2-process "
            f"decode ({_verdict(efficiency['tilestream_batched'] / efficiency['decode_2'], 0.75)})"
            " in tiles per CPU-second. On this shared machine wall-clock rates swing by "
            "up to 2x between rounds (TensorFlow's many threads also win a larger share of a "
            "contended CPU than 3 processes do), so the CPU-second column is the steadier "
            "comparison. Where a tilestream worker's CPU goes (measured in-process): JPEG "
            "decode ~80%, fresh shared-memory batch buffers (page faults; a DataLoader worker "
            "cannot reuse a buffer the main process may still hold) ~15%, reading, CRC, "
            "Example parsing and sampling ~5%. The per-tile path also pays a CHW copy per tile "
            "and the collate copy, hence `TileDataset(batch_size=...)`.",
            "",
            f"Machine: {os.cpu_count()} cores shared with other jobs (load average "
            f"{load_before:.1f} before, {load_after:.1f} after), Python "
            f"{platform.python_version()}, torch {torch.__version__}, TensorFlow {tf.__version__}.",
            "",
            "Command:",
            "",
            "```",
            "python benchmarks/bench_loaders.py --write-docs",
            "```",
        ]
    )
    print()
    print(table(rows))
    if args.write_docs:
        write_docs(body)
        print(f"\nwrote {DOCS}")


def _verdict(value: float, target: float) -> str:
    return "met" if value >= target else "**not met**"


if __name__ == "__main__":
    main()
