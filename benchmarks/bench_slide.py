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
  (2x: a 512 px region, then Pillow's ``reduce(2)``);
* ``pyvips``: libvips ``tiffload`` (``VIPS_CONCURRENCY=1``), ``Region.fetch``
  of each tile (the fastest of the ways tried: region fetch, ``crop`` +
  ``write_to_memory``, sequential access); 2x: fetch 512 px, ``reduce(2)``;
  ``pyvips-shrink``: ``crop(...).shrink(2, 2)``, libvips doing the averaging;
* ``tilestream``: ``Slide.read_region(..., as_array=True)`` (the stored-tile
  fast path of the tifffile backend); 2x: ``slide.tiles(scale={"scale": 2},
  resample="box")`` (each stored tile decoded and reduced 2 x 2 once, the
  reduced tiles cached); ``tilestream-tiles`` is the level-0 pass through
  ``slide.tiles()``;
* ``tilestream-dct`` (2x, opt-in, different pixels): ``Slide.read_region_reduced(
  ..., 2, scaled_decoding=True)``, stored JPEG tiles decoded at half scale by
  libjpeg-turbo (scaled inverse DCT). Its pixels are compared with the exact
  2 x 2 mean (PSNR and largest difference over every tile, reported).

Every reader must return the same pixels: a checksum of a pixel sample of
every tile is compared (exactly, except ``pyvips-shrink`` whose rounding may
differ, within 1 %). The page cache is warmed first; readers alternate over
``--repeat`` rounds and the best round is reported, measured in CPU time of the
reader's process (all threads), which other jobs on a shared machine disturb far
less than wall-clock time (both are reported, with the load average).
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
    "level0": ("openslide", "pyvips", "tilestream", "tilestream-tiles"),
    "2x": ("openslide", "pyvips", "pyvips-shrink", "tilestream", "tilestream-dct"),
}
EXACT = {"openslide", "pyvips", "tilestream", "tilestream-tiles"}


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


def worker(reader: str, mode: str, path: Path) -> dict[str, Any]:
    """Read every tile of one pass; return count, seconds, checksum and memory."""
    from PIL import Image

    grid, factor = _grid(path, mode)
    big = TILE * factor

    def sample(tile: np.ndarray) -> int:
        return int(tile[::61, ::61, :3].sum(dtype=np.int64))

    checksum = 0
    if reader == "openslide":
        import openslide

        osr = openslide.OpenSlide(path)
        rss_open = _rss_kib()
        start, cpu_start = time.perf_counter(), time.process_time()
        for x, y in grid:
            image = osr.read_region((x * factor, y * factor), 0, (big, big)).convert("RGB")
            if factor > 1:
                image = image.reduce(factor)
            checksum += sample(np.asarray(image))
    elif reader in ("pyvips", "pyvips-shrink"):
        import pyvips

        image = pyvips.Image.new_from_file(str(path))
        region = pyvips.Region.new(image)
        bands = image.bands
        rss_open = _rss_kib()
        start, cpu_start = time.perf_counter(), time.process_time()
        for x, y in grid:
            if reader == "pyvips-shrink":
                crop = image.crop(x * factor, y * factor, big, big).shrink(factor, factor)
                data = crop.write_to_memory()
                checksum += sample(np.frombuffer(data, np.uint8).reshape(TILE, TILE, bands))
                continue
            data = region.fetch(x * factor, y * factor, big, big)
            pixels = np.frombuffer(data, np.uint8).reshape(big, big, bands)
            if factor > 1:
                pixels = np.asarray(Image.fromarray(pixels).reduce(factor))
            checksum += sample(pixels)
    elif reader in ("tilestream", "tilestream-tiles", "tilestream-dct"):
        from tilestream.slide import open_slide
        from tilestream.slide.tiling import tiles

        slide = open_slide(path)
        assert slide.backend == "tifffile", slide.backend
        rss_open = _rss_kib()
        start, cpu_start = time.perf_counter(), time.process_time()
        if reader == "tilestream" and factor == 1:
            for x, y in grid:
                checksum += sample(slide.read_region((x, y), 0, (TILE, TILE), as_array=True))
        elif reader == "tilestream-dct":
            for x, y in grid:
                checksum += sample(
                    slide.read_region_reduced(
                        (x * factor, y * factor), 0, (TILE, TILE), factor, scaled_decoding=True
                    )
                )
        else:
            scale = {"scale": float(factor)} if factor > 1 else None
            for tile in tiles(slide, scale=scale, tile_size=TILE, resample="box", edge="drop"):
                checksum += sample(tile["tile"])
    else:
        raise SystemExit(f"unknown reader {reader}")
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # After the timed pass (and its peak memory): how far the opt-in's pixels are.
    quality = _dct_quality(path, grid, factor) if reader == "tilestream-dct" else {}
    return {
        **quality,
        "reader": reader,
        "mode": mode,
        "tiles": len(grid),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "checksum": checksum,
        "rss_open_mib": rss_open / 1024,
        "peak_rss_mib": peak_rss,
    }


def _dct_quality(path: Path, grid: list[tuple[int, int]], factor: int) -> dict[str, float]:
    """PSNR and largest difference of the scaled-decoding pixels against the exact mean."""
    from tilestream.slide import open_slide

    squared, count, worst = 0.0, 0, 0
    with open_slide(path) as slide:
        for x, y in grid:
            location = (x * factor, y * factor)
            exact = slide.read_region_reduced(location, 0, (TILE, TILE), factor)
            fast = slide.read_region_reduced(
                location, 0, (TILE, TILE), factor, scaled_decoding=True
            )
            diff = exact.astype(np.int32) - fast.astype(np.int32)
            squared += float((diff * diff).sum())
            count += diff.size
            worst = max(worst, int(np.abs(diff).max()))
    mse = squared / count
    return {"psnr": 10 * np.log10(255.0**2 / mse) if mse else float("inf"), "max_diff": worst}


def run_worker(reader: str, mode: str, path: Path) -> dict[str, Any]:
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


def reading(best: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The paragraph reading the table against the targets (>= 5x OpenSlide, >= pyvips)."""

    def ratio(mode: str, peer: str, reader: str = "tilestream") -> float:
        return float(best[(mode, peer)]["cpu_seconds"] / best[(mode, reader)]["cpu_seconds"])

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "**not met**"

    l0_os, l0_vips = ratio("level0", "openslide"), ratio("level0", "pyvips")
    x2_os, x2_vips = ratio("2x", "openslide"), ratio("2x", "pyvips")
    dct = best[("2x", "tilestream-dct")]
    dct_os = ratio("2x", "openslide", "tilestream-dct")
    return (
        "Reading the table. Targets: at least 5x OpenSlide and at least pyvips. "
        f"Level 0: {l0_os:.2f}x OpenSlide ({verdict(l0_os, 5)}), {l0_vips:.2f}x pyvips "
        f"({verdict(l0_vips, 1)}). 2x with the exact 2 x 2 mean (the default, OpenSlide's "
        f"pixels reduced): {x2_os:.2f}x OpenSlide ({verdict(x2_os, 5)}), {x2_vips:.2f}x "
        f"pyvips ({verdict(x2_vips, 1)}). 2x with scaled JPEG decoding (opt-in, "
        "`read_region_reduced(..., scaled_decoding=True)`): "
        f"{dct_os:.2f}x OpenSlide ({verdict(dct_os, 5)}), with pixels "
        f"{dct['psnr']:.1f} dB PSNR from the exact mean over every tile of the pass (largest "
        f"difference {dct['max_diff']} grey levels).\n\n"
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
        print(json.dumps(worker(reader, mode, Path(path))))
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

    # Same pixels from everyone.
    for mode in modes:
        reference = best[(mode, "openslide")]["checksum"]
        for reader in READERS[mode]:
            got = best[(mode, reader)]["checksum"]
            if reader in EXACT:
                assert got == reference, f"{mode} {reader}: checksum {got} != OpenSlide {reference}"
            else:
                assert abs(got - reference) <= 1e-2 * reference, (mode, reader, got, reference)

    memory: dict[str, Any] | None = None
    if args.memory_check:
        big_path = ensure_slide(args.memory_check)
        warm(big_path)
        memory = run_worker("tilestream", "level0", big_path)
        memory["size"] = args.memory_check

    lines = [
        "| pass | reader | tiles | tiles per CPU-second | vs OpenSlide | vs pyvips "
        "| wall-clock tiles/s | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
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
                f"{r['tiles'] / r['seconds']:,.0f} | {r['peak_rss_mib']:.0f} |"
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
                "(checksums equal; `pyvips-shrink` rounds its own way and `tilestream-dct` "
                "decodes at half scale, both within 1 %). The "
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
                reading(best),
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
