"""256 px JPEG tiles from 240 px stored tiles: lossless DCT-domain mosaic against re-encoding.

On a synthetic Aperio-style slide (240 px RGB JPEG tiles, 0.499 um/px) the
256 px tiles on a 256 px stride of level 0 are made three ways, one core each:

* **mosaic**: :class:`tilestream.slide.jpeg_mosaic.CoefficientCache` over the
  slide's stored tiles (read from the file, each entropy-decoded once and
  shared by the output tiles of a row), the MCUs copied and entropy-encoded;
  lossless.
* **re-encode**: what extraction does today: ``Slide.read_region`` (stored
  tiles decoded once by the slide's tile cache, cropped) then JPEG quality 95
  4:4:4 (simplejpeg / libjpeg-turbo, ``extract.tiles.encode_tile``).
* **floor**: the entropy-coding floor, every needed stored tile entropy-decoded
  once plus every output tile entropy-encoded once, timed on bytes and
  coefficients already in memory (no file reads, no cache, no Python per tile
  beyond the call).

With ``--processes 2`` the mosaic and re-encode rows are also run in two
processes, each on half the rows of output tiles (the time is the slower
worker's, from its first tile to its last: process start-up is not counted).
Every row is the best of ``--repeat`` runs (the machine may be shared).

Usage::

    python benchmarks/bench_jpeg_mosaic.py [--width 7680] [--height 5120] [--processes 2]
        [--repeat 3] [--optimize]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tilestream.extract.tiles import encode_tile
from tilestream.slide import jpeg_mosaic as jm
from tilestream.slide import open_slide
from tilestream.testing.synthetic import make_synthetic_slide

TILE = 256
STORED = 240


def _origins(width: int, height: int, part: int = 0, parts: int = 1) -> list[tuple[int, int]]:
    rows = list(range(0, height - TILE + 1, TILE))
    mine = rows[part::parts] if parts > 1 else rows
    return [(x, y) for y in mine for x in range(0, width - TILE + 1, TILE)]


def run_mosaic(
    path: str, part: int = 0, parts: int = 1, optimize: bool = False
) -> tuple[int, float, int]:
    """Output tiles made, seconds, output bytes."""
    with open_slide(path, backend="tifffile") as slide:
        w, h = slide.dimensions
        cache = jm.CoefficientCache(
            lambda c, r: slide.read_stored_tile_bytes(0, c, r),
            STORED,
            STORED,
            image_size=(w, h),
            optimize=optimize,
        )
        t0 = time.perf_counter()
        size = n = 0
        for x, y in _origins(w, h, part, parts):
            out = cache.mosaic(x, y, TILE, TILE)
            if out is None:
                raise RuntimeError(f"tile ({x}, {y}) could not be assembled")
            size += len(out)
            n += 1
        return n, time.perf_counter() - t0, size


def run_reencode(path: str, part: int = 0, parts: int = 1) -> tuple[int, float, int]:
    """Output tiles made, seconds, output bytes."""
    with open_slide(path, backend="tifffile") as slide:
        w, h = slide.dimensions
        t0 = time.perf_counter()
        size = n = 0
        for x, y in _origins(w, h, part, parts):
            tile = slide.read_region((x, y), 0, (TILE, TILE), as_array=True)
            size += len(encode_tile(tile[..., :3], "jpeg", 95))
            n += 1
        return n, time.perf_counter() - t0, size


def run_floor(path: str, optimize: bool = False) -> tuple[int, float, float, int]:
    """Output tiles, seconds entropy-decoding the needed stored tiles, seconds encoding, stored tiles.

    Row by row of output tiles, holding only the stored rows they need (as the
    mosaic does: holding every decoded tile at once would time page faults).
    """
    with open_slide(path, backend="tifffile") as slide:
        w, h = slide.dimensions
        origins = _origins(w, h)
        data = {
            (c, r): slide.read_stored_tile_bytes(0, c, r)
            for r in range(-(-h // STORED))
            for c in range(-(-w // STORED))
        }
    decoded: dict[tuple[int, int], jm.Coefficients] = {}
    dec = enc = 0.0
    stored = 0
    for y in sorted({y for _, y in origins}):
        rows = range(y // STORED, (y + TILE - 1) // STORED + 1)
        for key in [k for k in decoded if k[1] < rows[0]]:
            del decoded[key]
        band = [(x, yy) for x, yy in origins if yy == y]
        needed = {
            (c, r)
            for x, _ in band
            for c in range(x // STORED, (x + TILE - 1) // STORED + 1)
            for r in rows
        }
        new = needed - decoded.keys()
        t0 = time.perf_counter()
        for key in new:
            decoded[key] = jm.decode_coefficients(data[key])
        t1 = time.perf_counter()
        stored += len(new)
        plans = [jm.plan_pieces(decoded, STORED, STORED, x, y, TILE, TILE) for x, _ in band]
        t2 = time.perf_counter()
        for pieces in plans:
            jm.assemble(pieces, TILE, TILE, optimize=optimize)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        dec += t1 - t0
        enc += t3 - t2
    return len(origins), dec, enc, stored


def _parallel(
    fn: Callable[[str, int, int], tuple[int, float, int]], path: str, processes: int
) -> tuple[int, float, int]:
    with ProcessPoolExecutor(processes) as pool:
        args = ([path] * processes, range(processes), [processes] * processes)
        results = list(pool.map(fn, *args))
    return sum(r[0] for r in results), max(r[1] for r in results), sum(r[2] for r in results)


def _best(runs: list[tuple[int, float, int]]) -> tuple[int, float, int]:
    return min(runs, key=lambda r: r[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=7680)
    parser.add_argument("--height", type=int, default=5120)
    parser.add_argument("--processes", type=int, default=2, help="0 or 1: one process only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--optimize", action="store_true", help="optimal Huffman tables")
    args = parser.parse_args(argv)
    reps = range(max(1, args.repeat))
    if not jm.available():
        print("the compiled extension tilestream.slide._jpegdct is not built")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "aperio.svs")
        make_synthetic_slide(
            path, width=args.width, height=args.height, levels=1, tile_size=STORED, mpp=0.499
        )
        opt = args.optimize
        run_mosaic(path)  # warm the page cache and the code paths
        rows = []
        n, secs, size = _best([run_mosaic(path, optimize=opt) for _ in reps])
        rows.append(("mosaic (lossless), 1 process", n, secs, size))
        n, secs, size = _best([run_reencode(path) for _ in reps])
        rows.append(("decode+crop+encode q95 4:4:4, 1 process", n, secs, size))
        floors = [run_floor(path, opt) for _ in reps]
        n, stored = floors[0][0], floors[0][3]
        dec, enc = min(f[1] for f in floors), min(f[2] for f in floors)
        rows.append((f"floor: entropy-decode {stored} stored tiles", n, dec, 0))
        rows.append(("floor: entropy-encode the output tiles", n, enc, 0))
        rows.append(("floor: both", n, dec + enc, 0))
        if args.processes > 1:
            p = args.processes
            n, secs, size = _best([_parallel(run_mosaic, path, p) for _ in reps])
            rows.append((f"mosaic (lossless), {p} processes", n, secs, size))
            n, secs, size = _best([_parallel(run_reencode, path, p) for _ in reps])
            rows.append((f"decode+crop+encode, {p} processes", n, secs, size))
    print(
        f"# {args.width}x{args.height} px level 0, {STORED} px stored tiles -> {TILE} px tiles; "
        f"{'optimal' if args.optimize else 'stored'} Huffman tables; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'path':<46} {'tiles':>6} {'seconds':>8} {'tiles/s':>9} {'KB/tile':>8}")
    for name, n, secs, size in rows:
        kb = f"{size / n / 1024:8.1f}" if size else f"{'':8}"
        print(f"{name:<46} {n:>6} {secs:>8.3f} {n / secs:>9.0f} {kb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
