"""The extraction contenders of ``bench_remote.py``, each run in a process of its own.

``bench_remote.py --child`` reads a JSON spec on stdin and runs one of:

* ``local``: tilestream's ``extract_tiles`` of the slide on local disk (two threads,
  the defaults: for the Aperio 20x geometry at 256 px / 128 um every output tile
  is assembled losslessly from the stored JPEG tiles);
* ``s3``: the same from the slide's ``s3://`` URL (``storage_options``), outputs on
  local disk;
* ``s3-out``: the slide from S3 and the outputs to an ``s3://`` prefix;
* ``tiffslide``: tiffslide over fsspec (``TiffSlide(url, storage_options=...)``, its
  default s3fs file and cache), reading the same tiles tilestream kept (their
  boxes from tilestream's ``coords.csv``: no tissue detection of its own), each
  JPEG-encoded (q95 4:4:4, simplejpeg) into a TFRecord, over two processes;
* ``download``: the slide downloaded to a local file first (tilestream's store:
  16 MiB ranged GETs, 8 at a time), then extracted locally; both timed.

Each returns ``tiles``, ``seconds`` (the work: opening and extracting, measured in
the process), ``cpu_seconds`` (the process and its children), ``peak_mb`` and, where
outputs are TFRecords, ``digest`` (SHA-256 over the TFRecord files in name order).

:func:`needed_stored_bytes` gives the denominator of read amplification: the bytes of
the stored tiles under the kept output tiles, from the TIFF's tile offsets and byte
counts.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _extract_runs import WORK, cpu_seconds, peak_mb, run_tilestream
from _floors import Box, _stored_under, kept_boxes

__all__ = ["CONTENDERS", "needed_stored_bytes", "run_contender"]

#: The contenders :func:`run_contender` knows.
CONTENDERS = ("local", "s3", "s3-out", "tiffslide", "download")

Result = dict[str, Any]


class NotAvailable(RuntimeError):
    """The contender cannot run in this build (an API or a package is missing)."""


def needed_stored_bytes(slide: Path, coords_csv: Path) -> dict[str, int]:
    """The stored tiles under the kept output tiles: how many, and their bytes in the file."""
    import tifffile

    from tilestream.slide import open_slide

    boxes = kept_boxes(coords_csv)
    with open_slide(slide) as s:
        cells = _stored_under(s, boxes)
    tiles = size = 0
    with tifffile.TiffFile(slide) as tif:
        levels = tif.series[0].levels
        for level, needed in cells.items():
            page = levels[level].keyframe
            across = -(-page.imagewidth // page.tilewidth)
            counts = page.databytecounts
            for col, row in needed:
                size += int(counts[row * across + col])
                tiles += 1
    return {"tiles": tiles, "bytes": size}


def digest(folder: Path) -> str:
    """SHA-256 over the TFRecord files under ``folder``, in name order (names included)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.tfrecords")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _remote_digest(url: str, options: dict[str, Any]) -> str:
    from tilestream.storage import store_for

    store, prefix = store_for(url, options)
    h = hashlib.sha256()
    for key in sorted(k for k in store.list(prefix) if k.endswith(".tfrecords")):
        h.update(key.rsplit("/", 1)[-1].encode())
        h.update(store.read(key))
    return h.hexdigest()


def _extract(slide: str, out: str, spec: dict[str, Any]) -> Result:
    """tilestream's ``extract_tiles`` of ``slide`` (a path or URL) into ``out``, timed."""
    from tilestream.extract import extract_tiles

    options = {"storage_options": spec["options"]} if spec.get("options") else {}
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        r = extract_tiles(
            slide, out, tile_px=spec["tile_px"], tile_um=spec["tile_um"], threads=2, **options
        )
    except TypeError as exc:  # the API does not take storage_options yet
        raise NotAvailable(f"extract_tiles: {exc}") from None
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if r.status != "done":
        raise NotAvailable(f"tilestream failed: {(r.error or '')[:200]}")
    return {
        "tiles": r.tiles,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "passthrough": r.passthrough,
        "assembled": r.assembled,
        "stages": r.timings,
        "peak_mb": peak_mb(),
    }


def _download(spec: dict[str, Any], target: Path) -> float:
    """Download the slide with tilestream's store (16 MiB ranges, 8 in flight); seconds."""
    from tilestream.storage import store_for

    t0 = time.perf_counter()
    store, key = store_for(spec["url"], spec["options"])
    size = store.size(key)
    piece, group = 16 << 20, 8
    with open(target, "wb") as f:
        for start in range(0, size, piece * group):
            ranges = [
                (o, min(piece, size - o))
                for o in range(start, min(size, start + piece * group), piece)
            ]
            for block in store.read_ranges(key, ranges):
                f.write(block)
    return time.perf_counter() - t0


def _tiffslide_part(args: tuple[str, dict[str, Any], list[Box], int, str, int, int]) -> int:
    """One process of the tiffslide peer: every ``parts``-th row of kept tiles."""
    import simplejpeg
    import tiffslide

    from tilestream.tfrecord import TFRecordWriter, serialized_record

    url, options, boxes, tile_px, out, part, parts = args
    slide = tiffslide.TiffSlide(url, storage_options=options or None)
    rows = sorted({b.y for b in boxes})
    mine = {y for i, y in enumerate(rows) if i % parts == part}
    n = 0
    with TFRecordWriter(Path(out) / f"tiffslide-{part}.tfrecords") as writer:
        for b in boxes:
            if b.y not in mine:
                continue
            ds = slide.level_downsamples[b.level]
            size = (round(b.width / ds), round(b.height / ds))
            rgb = slide.read_region((b.x, b.y), b.level, size, as_array=True)[..., :3]
            if size != (tile_px, tile_px):
                from PIL import Image

                image = Image.fromarray(rgb).resize((tile_px, tile_px), Image.Resampling.LANCZOS)
                rgb = np.asarray(image)
            jpeg = simplejpeg.encode_jpeg(rgb, quality=95, colorspace="RGB", colorsubsampling="444")
            writer.write(
                serialized_record("tiffslide", jpeg, b.x + b.width // 2, b.y + b.height // 2)
            )
            n += 1
    slide.close()
    return n


def _tiffslide(spec: dict[str, Any], out: str) -> Result:
    try:
        import tiffslide  # noqa: F401
    except ImportError:
        raise NotAvailable("tiffslide is not installed (pip install tiffslide)") from None
    boxes = kept_boxes(Path(spec["coords"]))
    Path(out).mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    jobs = [(spec["url"], spec["options"], boxes, spec["tile_px"], out, i, 2) for i in range(2)]
    with ProcessPoolExecutor(2) as pool:
        tiles = sum(pool.map(_tiffslide_part, jobs))
    return {
        "tiles": tiles,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - c0,
        "peak_mb": peak_mb(),
    }


def run_contender(spec: dict[str, Any]) -> Result:
    """Run the contender ``spec["which"]`` (in this process) and return its result."""
    which = spec["which"]
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        out = str(Path(tmp) / "out")
        if which == "local":
            result = run_tilestream(spec["slide"], spec["tile_px"], spec["tile_um"], out)
            result["seconds_total"] = result["seconds"]
        elif which == "s3":
            result = _extract(spec["url"], out, spec)
        elif which == "s3-out":
            result = _extract(spec["url"], spec["out_url"], spec)
            result["digest"] = _remote_digest(spec["out_url"], spec["direct_options"])
            return result
        elif which == "tiffslide":
            return _tiffslide(spec, out)
        elif which == "download":
            local = Path(tmp) / Path(spec["slide"]).name
            c0 = cpu_seconds()
            fetch = _download(spec, local)
            result = _extract(str(local), out, {**spec, "options": None})
            result["download_seconds"] = fetch
            result["extract_seconds"] = result["seconds"]
            result["seconds"] += fetch
            result["cpu_seconds"] = cpu_seconds() - c0
        else:
            raise ValueError(f"unknown contender {which!r}")
        result["digest"] = digest(Path(out))
        shutil.rmtree(out, ignore_errors=True)
    return result
