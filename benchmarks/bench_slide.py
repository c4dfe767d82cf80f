"""Benchmark: every 256 px tile of a large Aperio slide, tilestream against OpenSlide and libvips.

The slide: a 20,000 x 20,000 Aperio-style SVS written by
``tilestream.testing.synthetic.make_synthetic_slide`` (240 px JPEG tiles stored
as RGB like Aperio's, quality 70, levels 1/4/16, about half the area tissue
cut from the real ``CMU-1-Small-Region.svs`` of the shared test data), cached
under ``benchmarks/_work/slide/`` (git-ignored).

Two passes, each reading every whole 256 px tile in row order:

* ``level 0``: 78 x 78 = 6,084 tiles of level 0;
* ``2x``: 39 x 39 = 1,521 tiles of the slide downsampled 2x (there is no 2x
  level: every reader reads 512 px of level 0 and averages 2 x 2 blocks).

Readers, each in its own fresh process (so peak RSS is its own), single-threaded:

* ``openslide``: ``OpenSlide.read_region`` -> ``.convert("RGB")`` -> numpy
  (2x: a 512 px region, then Pillow's ``reduce(2)``), OpenSlide's default cache;
* ``openslide-cache``: the same with an ``OpenSlideCache`` of tilestream's
  largest decoded-tile budget (``MAX_AUTO_CACHE_BYTES``), so the two cache alike;
* ``pyvips``: libvips ``tiffload`` (``VIPS_CONCURRENCY=1``), ``Region.fetch``
  of each tile (the way libvips' documentation gives for many small regions);
  2x: fetch 512 px, Pillow's ``reduce(2)``; ``pyvips-shrink``: one
  ``image.shrink(2, 2)`` pipeline and ``Region.fetch`` of each tile from it,
  libvips doing the averaging on demand;
* ``tilestream``: ``Slide.read_region(..., as_array=True)`` (the stored-tile
  fast path of the tifffile backend); 2x: ``slide.tiles(scale={"scale": 2},
  resample="box")`` (each stored tile decoded and reduced 2 x 2 once, the
  reduced tiles cached); ``tilestream-tiles`` is the level-0 pass through
  ``slide.tiles()``;
* ``tilestream-dct`` (2x, opt-in, different pixels): ``Slide.read_region_reduced(
  ..., 2, scaled_decoding=True)``, stored JPEG tiles decoded at half scale by
  libjpeg-turbo (scaled inverse DCT);
* ``decode-floor``: not a reader but the floor of every reader: each stored tile
  under the pass's tiles decoded once by libjpeg-turbo (simplejpeg, as tilestream
  decodes them), their bytes read before the clock starts.

Every tile of every reader is compared whole with OpenSlide's in a separate,
untimed pass: identical pixels are required of the exact readers, at most one
grey level of ``pyvips-shrink`` (its rounding), and ``tilestream-dct``'s
difference is reported (PSNR and largest difference over every tile). The page
cache is warmed first; readers alternate over ``--repeat`` rounds and the best
round is reported, measured in CPU time of the reader's process (all threads),
which other jobs on a shared machine disturb far less than wall-clock time
(both are reported, with the load average).
``--memory-check 40000`` also runs tilestream over a 40,000 px slide to show
that peak memory does not grow with the slide.

Run::

    python benchmarks/bench_slide.py                   # print the table
    python benchmarks/bench_slide.py --write-docs      # and update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "slide"
START = "<!-- bench_slide:start -->"
END = "<!-- bench_slide:end -->"
TILE = 256
READERS = {
    "level0": (
        "openslide",
        "openslide-cache",
        "pyvips",
        "tilestream",
        "tilestream-tiles",
        "decode-floor",
    ),
    "2x": (
        "openslide",
        "openslide-cache",
        "pyvips",
        "pyvips-shrink",
        "tilestream",
        "tilestream-dct",
        "decode-floor",
    ),
}
#: Readers whose every tile must equal OpenSlide's, pixel for pixel.
EXACT = {"openslide", "openslide-cache", "pyvips", "tilestream", "tilestream-tiles"}
#: Readers whose pixels differ by design: the largest difference allowed, in grey levels.
CLOSE = {"pyvips-shrink": 1}
#: Rows that are not readers of the pass's tiles (no pixels to compare).
FLOORS = {"decode-floor"}


def testdata_root() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else REPO.parent / "shared" / "testdata"
    if not (root / "slides" / "CMU-1-Small-Region.svs").is_file():
        sys.exit(f"real test data not found under {root} (set TILESTREAM_TESTDATA)")
    return root


def ensure_slide(size: int) -> Path:
    """The benchmark slide of ``size`` x ``size`` pixels, generated once."""
    from tilestream.testing.synthetic import make_synthetic_slide

    path = WORK / f"aperio-{size}-q70-seed0.svs"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"generating {path.name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        make_synthetic_slide(
            path,
            width=size,
            height=size,
            tile_size=240,
            jpeg_quality=70,
            tissue_fraction=0.5,
            seed=0,
            source_tiles=testdata_root() / "slides" / "CMU-1-Small-Region.svs",
        )
        print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path


# --------------------------------------------------------------------------- workers


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _grid(path: Path, mode: str) -> tuple[list[tuple[int, int]], int]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        height, width = tif.pages[0].shape[:2]
    factor = 1 if mode == "level0" else 2
    cols, rows = (width // factor) // TILE, (height // factor) // TILE
    return [(c * TILE, r * TILE) for r in range(rows) for c in range(cols)], factor


TileSource = Callable[[], Iterator[np.ndarray]]


def _openslide(path: Path, grid: list[tuple[int, int]], factor: int, cache: bool) -> TileSource:
    import openslide

    from tilestream.slide.tilecache import MAX_AUTO_CACHE_BYTES

    osr = openslide.OpenSlide(path)
    if cache:  # the budget tilestream's decoded-tile cache may grow to
        osr.set_cache(openslide.OpenSlideCache(MAX_AUTO_CACHE_BYTES))
    big = TILE * factor

    def tiles() -> Iterator[np.ndarray]:
        for x, y in grid:
            image = osr.read_region((x * factor, y * factor), 0, (big, big)).convert("RGB")
            yield np.asarray(image.reduce(factor) if factor > 1 else image)

    return tiles


def _pyvips(path: Path, grid: list[tuple[int, int]], factor: int, shrink: bool) -> TileSource:
    import pyvips
    from PIL import Image

    image = pyvips.Image.new_from_file(str(path))
    if shrink:
        # libvips' way for many regions of a reduced image: one shrink pipeline, regions
        # fetched from it (libvips computes each on demand), not a crop + shrink per tile
        image = image.shrink(factor, factor)
    region = pyvips.Region.new(image)
    bands = image.bands
    step = 1 if shrink else factor
    big = TILE * step

    def tiles() -> Iterator[np.ndarray]:
        for x, y in grid:
            data = region.fetch(x * step, y * step, big, big)
            pixels = np.frombuffer(data, np.uint8).reshape(big, big, bands)[..., :3]
            yield np.asarray(Image.fromarray(pixels).reduce(step)) if step > 1 else pixels

    return tiles


def _tilestream(path: Path, grid: list[tuple[int, int]], factor: int, reader: str) -> TileSource:
    from tilestream.slide import open_slide
    from tilestream.slide.tiling import tiles as slide_tiles

    slide = open_slide(path)
    assert slide.backend == "tifffile", slide.backend

    def tiles() -> Iterator[np.ndarray]:
        if reader == "tilestream" and factor == 1:
            for x, y in grid:
                yield slide.read_region((x, y), 0, (TILE, TILE), as_array=True)
        elif reader == "tilestream-dct":
            for x, y in grid:
                location = (x * factor, y * factor)
                yield slide.read_region_reduced(
                    location, 0, (TILE, TILE), factor, scaled_decoding=True
                )
        else:
            scale = {"scale": float(factor)} if factor > 1 else None
            for tile in slide_tiles(
                slide, scale=scale, tile_size=TILE, resample="box", edge="drop"
            ):
                yield tile["tile"]

    return tiles


def _decode_floor(path: Path, grid: list[tuple[int, int]], factor: int) -> TileSource:
    """Every stored tile under the pass's tiles decoded once, as tilestream decodes them.

    The stored tiles' bytes (tables merged: a standalone JPEG each) are read before
    the clock starts, so the row is the decoding alone: no file reads, no cache, no
    assembly, no reduction. A reader of the pass cannot do less work than this.
    """
    import simplejpeg

    from tilestream.slide import open_slide

    with open_slide(path) as slide:
        size = slide.stored_tile_grid(0)
        assert size is not None, "level 0 has no stored JPEG tiles"
        tile_w, tile_h = size
        right = max(x for x, _ in grid) * factor + TILE * factor
        bottom = max(y for _, y in grid) * factor + TILE * factor
        cols, rows = -(-right // tile_w), -(-bottom // tile_h)
        stored = [slide.read_stored_tile_bytes(0, c, r) for r in range(rows) for c in range(cols)]

    def tiles() -> Iterator[np.ndarray]:
        for data in stored:
            yield simplejpeg.decode_jpeg(data, colorspace="RGB")

    return tiles


def open_reader(reader: str, mode: str, path: Path) -> tuple[TileSource, int]:
    """The reader's tiles of the pass (opened, not yet read), and how many the pass has."""
    grid, factor = _grid(path, mode)
    if reader in ("openslide", "openslide-cache"):
        source = _openslide(path, grid, factor, cache=reader == "openslide-cache")
    elif reader in ("pyvips", "pyvips-shrink"):
        source = _pyvips(path, grid, factor, shrink=reader == "pyvips-shrink")
    elif reader in ("tilestream", "tilestream-tiles", "tilestream-dct"):
        source = _tilestream(path, grid, factor, reader)
    elif reader == "decode-floor":
        source = _decode_floor(path, grid, factor)
    else:
        raise SystemExit(f"unknown reader {reader}")
    return source, len(grid)


def worker(reader: str, mode: str, path: Path) -> dict[str, Any]:
    """Read every tile of one pass, timed; return count, seconds and memory."""
    source, count = open_reader(reader, mode, path)
    rss_open = _rss_kib()
    start, cpu_start = time.perf_counter(), time.process_time()
    decoded = sum(1 for _ in source())
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "reader": reader,
        "mode": mode,
        "tiles": count,
        "decoded": decoded,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_open_mib": rss_open / 1024,
        "peak_rss_mib": peak_rss,
    }


def verify(mode: str, path: Path) -> dict[str, Any]:
    """Every tile of the pass from every reader, compared whole with OpenSlide's (untimed)."""
    readers = [r for r in READERS[mode] if r not in FLOORS]
    sources = [open_reader(reader, mode, path)[0]() for reader in readers]
    worst = dict.fromkeys(readers, 0)
    squared = dict.fromkeys(readers, 0.0)
    count = 0
    for tiles in zip(*sources, strict=True):
        reference = tiles[0].astype(np.int16)
        for reader, tile in zip(readers, tiles, strict=True):
            assert tile.shape == reference.shape, (mode, reader, tile.shape)
            diff = tile.astype(np.int16) - reference
            worst[reader] = max(worst[reader], int(np.abs(diff).max()))
            squared[reader] += float((diff.astype(np.int64) ** 2).sum())
        count += reference.size
    psnr = {
        r: (10 * np.log10(255.0**2 * count / squared[r]) if squared[r] else float("inf"))
        for r in readers
    }
    return {"mode": mode, "max_diff": worst, "psnr": psnr}


def run_worker(reader: str, mode: str, path: Path) -> dict[str, Any]:
    """``worker`` (or ``verify`` for reader ``"verify"``) in a fresh process."""
    env = dict(os.environ, VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", reader, mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def versions() -> str:
    import imagecodecs
    import openslide
    import PIL
    import pyvips
    import tifffile

    from tilestream.extract.resample import libvips_version

    return (
        f"Python {platform.python_version()}, OpenSlide {openslide.__library_version__} "
        f"(openslide-python {openslide.__version__}), libvips {libvips_version()} (pyvips "
        f"{pyvips.__version__}), tifffile {tifffile.__version__}, imagecodecs "
        f"{imagecodecs.__version__}, Pillow {PIL.__version__}"
    )


def reading(best: dict[tuple[str, str], dict[str, Any]], checks: dict[str, Any]) -> str:
    """The paragraph reading the table against the targets (>= 5x OpenSlide, >= pyvips)."""

    def ratio(mode: str, peer: str, reader: str = "tilestream") -> float:
        return float(best[(mode, peer)]["cpu_seconds"] / best[(mode, reader)]["cpu_seconds"])

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "**not met**"

    l0_os, l0_vips = ratio("level0", "openslide"), ratio("level0", "pyvips")
    l0_osc = ratio("level0", "openslide-cache")
    x2_os, x2_vips = ratio("2x", "openslide"), ratio("2x", "pyvips")
    x2_osc = ratio("2x", "openslide-cache")
    floor0 = 100 * ratio("level0", "decode-floor")
    floor2 = 100 * ratio("2x", "decode-floor")
    dct_psnr = checks["2x"]["psnr"]["tilestream-dct"]
    dct_diff = checks["2x"]["max_diff"]["tilestream-dct"]
    dct_os = ratio("2x", "openslide", "tilestream-dct")
    return (
        "Reading the table. Targets: at least 5x OpenSlide and at least pyvips. "
        f"Level 0: {l0_os:.2f}x OpenSlide ({verdict(l0_os, 5)}), {l0_osc:.2f}x OpenSlide "
        f"given tilestream's cache budget, {l0_vips:.2f}x pyvips ({verdict(l0_vips, 1)}); "
        f"tilestream runs at {floor0:.0f} % of the decode floor's rate. 2x with the exact "
        f"2 x 2 mean (the default, OpenSlide's pixels reduced): {x2_os:.2f}x OpenSlide "
        f"({verdict(x2_os, 5)}), {x2_osc:.2f}x OpenSlide with the same cache budget, "
        f"{x2_vips:.2f}x pyvips ({verdict(x2_vips, 1)}), {floor2:.0f} % of the decode floor's "
        "rate. 2x with scaled JPEG decoding (opt-in, "
        "`read_region_reduced(..., scaled_decoding=True)`): "
        f"{dct_os:.2f}x OpenSlide ({verdict(dct_os, 5)}), with pixels "
        f"{dct_psnr:.1f} dB PSNR from the exact mean over every tile of the pass (largest "
        f"difference {dct_diff} grey levels).\n\n"
        "Where the time goes (cProfile and `process_time` around the stages). Level 0: "
        "libjpeg-turbo decoding each stored 240 px tile once is most of the time (80-90 %) "
        "(simplejpeg on the standalone JPEG of the tile, a little cheaper per call than "
        "tifffile's decoder, same pixels); assembling the 256 px tiles from the cache and "
        "the call chain (`read_region` goes straight to the stored tiles for whole-pixel "
        "regions inside the level) are the rest, so this pass is at its decode floor. 2x: "
        "`tiles(scale=2, resample='box')` reads through `Slide.read_region_reduced`, which "
        "decodes each stored tile once, reduces it once (Pillow's `reduce(2)`, exact) and "
        "caches it reduced: no 512 px intermediate and no copy of it. Decoding level 0 is "
        "about 70 % of that pass and the 2 x 2 mean (about 0.1 ms per stored tile, Pillow's "
        "C loop) most of the rest: the exact mean cannot reach 5x OpenSlide without a "
        "faster box kernel than Pillow's. libjpeg-turbo's scaled decoding skips both the "
        "full inverse DCT and the reduction (a half-scale decode costs about 80 % of a "
        "full one: entropy decoding, which every reader pays, dominates), which is why it "
        "is offered as an explicit opt-in with its difference measured, not as the default."
    )


def _pixels_note(check: dict[str, Any], reader: str, result: dict[str, Any]) -> str:
    if reader in FLOORS:
        return f"floor: {result['decoded']:,} stored tiles decoded once"
    worst = check["max_diff"][reader]
    if worst == 0:
        return "identical, every tile"
    return f"{check['psnr'][reader]:.1f} dB PSNR, largest difference {worst}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="slide side in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument("--modes", default="level0,2x")
    parser.add_argument("--memory-check", type=int, default=0, metavar="SIZE")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("READER", "MODE", "PATH"))
    args = parser.parse_args()
    if args.worker:
        reader, mode, path = args.worker
        run = verify(mode, Path(path)) if reader == "verify" else worker(reader, mode, Path(path))
        print(json.dumps(run))
        return

    path = ensure_slide(args.size)
    warm(path)
    modes = args.modes.split(",")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for round_ in range(args.repeat):
        for mode in modes:
            readers = READERS[mode] if round_ % 2 == 0 else READERS[mode][::-1]
            for reader in readers:
                result = run_worker(reader, mode, path)
                rate = result["tiles"] / result["seconds"]
                cpu_rate = result["tiles"] / result["cpu_seconds"]
                print(
                    f"round {round_ + 1} {mode:6} {reader:17} {cpu_rate:8.1f} tiles/CPU-s "
                    f"{rate:8.1f} tiles/s",
                    flush=True,
                )
                key = (mode, reader)
                if key not in best or result["cpu_seconds"] < best[key]["cpu_seconds"]:
                    best[key] = result
    load = os.getloadavg()

    # Same pixels from everyone: every tile compared whole with OpenSlide's, untimed.
    checks = {mode: run_worker("verify", mode, path) for mode in modes}
    for mode, check in checks.items():
        for reader, worst in check["max_diff"].items():
            if reader in EXACT:
                assert worst == 0, f"{mode} {reader}: pixels differ from OpenSlide's by {worst}"
            elif reader in CLOSE:
                assert worst <= CLOSE[reader], f"{mode} {reader}: differs by {worst}"

    memory: dict[str, Any] | None = None
    if args.memory_check:
        big_path = ensure_slide(args.memory_check)
        warm(big_path)
        memory = run_worker("tilestream", "level0", big_path)
        memory["size"] = args.memory_check

    lines = [
        "| pass | reader | tiles | tiles per CPU-second | vs OpenSlide | vs pyvips "
        "| wall-clock tiles/s | peak RSS (MiB) | pixels vs OpenSlide's |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in modes:
        base = best[(mode, "openslide")]
        vips = best[(mode, "pyvips")]
        for reader in READERS[mode]:
            r = best[(mode, reader)]
            lines.append(
                f"| {'level 0' if mode == 'level0' else '2x downsample'} | {reader} | "
                f"{r['tiles']:,} | {r['tiles'] / r['cpu_seconds']:,.0f} | "
                f"{base['cpu_seconds'] / r['cpu_seconds']:.2f}x | "
                f"{vips['cpu_seconds'] / r['cpu_seconds']:.2f}x | "
                f"{r['tiles'] / r['seconds']:,.0f} | {r['peak_rss_mib']:.0f} | "
                f"{_pixels_note(checks[mode], reader, r)} |"
            )
    table = "\n".join(lines)
    print()
    print(table)
    if memory:
        note = (
            f"tilestream, level 0 of a {memory['size']:,} px slide: {memory['tiles']:,} tiles, "
            f"{memory['tiles'] / memory['cpu_seconds']:,.0f} tiles per CPU-second, peak RSS "
            f"{memory['peak_rss_mib']:.0f} MiB"
        )
        print("\n" + note)
    print(f"\nload average at the end: {load[0]:.1f} (cpus: {os.cpu_count()})")

    if args.write_docs:
        command = "python benchmarks/bench_slide.py --write-docs"
        if args.memory_check:
            command += f" --memory-check {args.memory_check}"
        if args.repeat != 3:
            command += f" --repeat {args.repeat}"
        section = "\n".join(
            [
                START,
                "## Slide reading: every 256 px tile, tilestream vs OpenSlide and libvips",
                "",
                "`benchmarks/bench_slide.py`: a "
                f"{args.size:,} x {args.size:,} Aperio-style SVS (240 px JPEG tiles stored as "
                "RGB, quality 70, levels 1/4/16, half the area real tissue from "
                "CMU-1-Small-Region.svs) generated by `make_synthetic_slide`; every whole 256 px "
                "tile read in row order, at level 0 and 2x downsampled (512 px of level 0 "
                "averaged 2 x 2, no 2x level exists). One process per reader, single-threaded "
                "(`VIPS_CONCURRENCY=1`), page cache warm, best of "
                f"{args.repeat} alternating rounds; every reader returned the same pixels "
                "(every tile compared whole with OpenSlide's in an untimed pass: see the last "
                "column). `openslide-cache` is OpenSlide given tilestream's largest cache budget; "
                "`decode-floor` is every stored tile under the pass decoded once, nothing else. The "
                "machine is shared with other jobs, so rates are per CPU-second of the "
                "reader's process (all its threads; on an idle machine this is its "
                "single-threaded tiles/s) and ratios are of CPU time; wall-clock rates, "
                "which varied up to 2x between rounds, are shown for reference.",
                "",
                table,
                "",
                *(
                    [
                        f"Memory: {note}; at {args.size:,} px it was "
                        f"{best[('level0', 'tilestream')]['peak_rss_mib']:.0f} MiB. Peak RSS is "
                        "the interpreter and libraries (about 75 MiB, as for OpenSlide) plus the "
                        "decoded-tile cache, bounded by its budget (`cache_bytes`: by default "
                        "64 MiB, growing to the stored rows a region spans, at most 256 MiB) "
                        "whatever the slide's size.",
                        "",
                    ]
                    if memory
                    else []
                ),
                reading(best, checks),
                "",
                f"Machine: {os.cpu_count()} shared CPUs (load average {load[0]:.1f} at the end "
                f"of the run: other jobs were running), {versions()}.",
                "",
                f"Command: `{command}`",
                END,
                "",
            ]
        )
        sys.path.insert(0, str(HERE))
        from _docs import write_section

        write_section(section, START, END)


if __name__ == "__main__":
    main()
