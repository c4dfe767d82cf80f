"""Extraction speed: tilestream vs a straightforward OpenSlide loop, on a large generated slide.

Both sides extract the same grid of the same slide with the same filters, on both
cores, in the same run:

* **tilestream**: ``extract_tiles`` (background decided on the low-resolution
  mask before any tile is read; threads; stored JPEG tiles passed through when
  the grid aligns with them and no resize is needed).
* **loop**: the straightforward approach: every grid tile read with OpenSlide's
  ``read_region``, the grayspace filter computed on the tile, Pillow resize and
  JPEG encode, written to a TFRecord; the grid split over two processes.

Each contender runs in its own subprocess so its peak memory is its own.

Usage::

    python benchmarks/bench_extract.py                  # 40,000 x 40,000 slide
    python benchmarks/bench_extract.py --size 20000     # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"

CONFIGS = {"256px_128um": (256, 128.0), "299px_302um": (299, 302.0)}


def _testdata() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else HERE.parent.parent / "shared" / "testdata"
    return root / "slides" / "CMU-1-Small-Region.svs"


def make_slide(size: int) -> Path:
    """Generate (once, cached) an Aperio-style slide of ``size`` x ``size`` with 256 px tiles."""
    from tilestream.slide.synthetic import make_synthetic_slide

    WORK.mkdir(exist_ok=True)
    path = WORK / f"synthetic-{size}.svs"
    if not path.exists():
        t0 = time.perf_counter()
        make_synthetic_slide(
            path,
            width=size,
            height=size,
            tile_size=256,
            mpp=0.5,
            tissue_fraction=0.5,
            jpeg_quality=80,
            seed=0,
            source_tiles=_testdata(),
        )
        print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run_tilestream(slide: str, tile_px: int, tile_um: float, out: str) -> dict[str, object]:
    """Child process: tilestream's extraction of one slide with two threads."""
    from tilestream.extract import extract_tiles

    t0 = time.perf_counter()
    r = extract_tiles(slide, out, tile_px=tile_px, tile_um=tile_um, threads=2)
    seconds = time.perf_counter() - t0
    if r.status != "done":
        raise SystemExit(f"tilestream failed: {r.error}")
    return {
        "tiles": r.tiles,
        "grid": r.grid,
        "seconds": seconds,
        "passthrough": r.passthrough,
        "stages": r.timings,
        "peak_mb": _peak_mb(),
    }


def _loop_part(args: tuple[str, int, float, str, int, int]) -> dict[str, float]:
    """One process of the straightforward loop: rows ``part::parts`` of the grid."""
    import io

    import numpy as np
    import openslide
    from PIL import Image

    from tilestream.tfrecord import TFRecordWriter, serialized_record

    slide_path, tile_px, tile_um, out, part, parts = args
    osr = openslide.OpenSlide(slide_path)
    mpp = float(osr.properties["openslide.mpp-x"])
    extract = round(tile_um / mpp)
    w, h = osr.dimensions
    level = osr.get_best_level_for_downsample(extract / tile_px)
    ds = osr.level_downsamples[level]
    read = round(extract / ds)
    times = {"read": 0.0, "filter": 0.0, "resize": 0.0, "encode": 0.0, "write": 0.0, "tiles": 0.0}
    with TFRecordWriter(Path(out) / f"loop-{part}.tfrecords") as writer:
        for row, y in enumerate(range(0, h - extract + 1, extract)):
            if row % parts != part:
                continue
            for x in range(0, w - extract + 1, extract):
                t0 = time.perf_counter()
                rgb = osr.read_region((x, y), level, (read, read)).convert("RGB")
                t1 = time.perf_counter()
                # Slideflow's grayspace filter: fraction of pixels with HSV saturation < 0.05
                sat = np.asarray(rgb.convert("HSV"))[..., 1]
                gray = float((sat < 0.05 * 255).mean())
                t2 = time.perf_counter()
                times["read"] += t1 - t0
                times["filter"] += t2 - t1
                if gray > 0.6:
                    continue
                img = rgb
                if read != tile_px:
                    img = img.resize((tile_px, tile_px), Image.Resampling.LANCZOS)
                t3 = time.perf_counter()
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                t4 = time.perf_counter()
                writer.write(
                    serialized_record("loop", buf.getvalue(), x + extract // 2, y + extract // 2)
                )
                t5 = time.perf_counter()
                times["resize"] += t3 - t2
                times["encode"] += t4 - t3
                times["write"] += t5 - t4
                times["tiles"] += 1
    return times


def run_loop(slide: str, tile_px: int, tile_um: float, out: str) -> dict[str, object]:
    """Child process: the straightforward loop over two processes."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_loop_part, [(slide, tile_px, tile_um, out, i, 2) for i in range(2)]))
    seconds = time.perf_counter() - t0
    stages = {k: round(sum(p[k] for p in parts), 2) for k in parts[0] if k != "tiles"}
    return {
        "tiles": int(sum(p["tiles"] for p in parts)),
        "seconds": seconds,
        "stages": stages,
        "peak_mb": _peak_mb(),
    }


def _child(which: str, slide: Path, tile_px: int, tile_um: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            which,
            str(slide),
            str(tile_px),
            str(tile_um),
            out,
        ]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40000, help="slide side in level-0 pixels")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, slide, tile_px, tile_um, out = args.child
        fn = run_tilestream if which == "tilestream" else run_loop
        print(json.dumps(fn(slide, int(tile_px), float(tile_um), out)))
        return
    slide = make_slide(args.size)
    print(f"slide: {args.size} x {args.size}, 256 px JPEG tiles, 0.5 um/px, ~50% tissue; 2 cores")
    rows = []
    for label, (px, um) in CONFIGS.items():
        ours = _child("tilestream", slide, px, um)
        loop = _child("loop", slide, px, um)
        rate_ours = ours["tiles"] / ours["seconds"]  # type: ignore[operator]
        rate_loop = loop["tiles"] / loop["seconds"]  # type: ignore[operator]
        rows.append((label, ours, loop, rate_ours, rate_loop))
    print()
    print(
        "| config | contender | tiles | seconds | tiles/s | ratio | peak MB | stages (s, summed over threads/processes) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for label, ours, loop, r_ours, r_loop in rows:
        st_o = ", ".join(f"{k} {v:.1f}" for k, v in ours["stages"].items() if v)  # type: ignore[union-attr]
        st_l = ", ".join(f"{k} {v:.1f}" for k, v in loop["stages"].items() if v)  # type: ignore[union-attr]
        extra = f" (passthrough {ours['passthrough']})" if ours.get("passthrough") else ""
        print(
            f"| {label} | tilestream{extra} | {ours['tiles']} | {ours['seconds']:.1f} | {r_ours:,.0f} | "
            f"**{r_ours / r_loop:.1f}x** | {ours['peak_mb']:.0f} | {st_o} |"
        )
        print(
            f"| {label} | OpenSlide loop | {loop['tiles']} | {loop['seconds']:.1f} | {r_loop:,.0f} | 1.0x | "
            f"{loop['peak_mb']:.0f} | {st_l} |"
        )


if __name__ == "__main__":
    main()
