"""Deep Zoom tile serving: the tilestream viewer vs ``openslide.deepzoom`` + Pillow JPEG.

The same tiles of the same slide, in the same run, cold caches on both sides
(fresh handles for every repeat), coarse levels first as a viewer asks for them:

* **openslide.deepzoom + Pillow**: ``openslide.deepzoom.DeepZoomGenerator(slide,
  254, 1).get_tile(level, address)`` then ``Image.save(..., "JPEG", quality=80)``,
  in a loop (what OpenSlide's example Deep Zoom server does per request).
* **tilestream renderer**: :class:`tilestream.viewer.TileRenderer` ``tile()`` in a
  loop, the encoded-tile cache off (every tile rendered).
* **tilestream over HTTP**: a fresh :class:`tilestream.viewer.ViewerServer` on
  loopback, every tile fetched with ``http.client`` over one keep-alive
  connection: the renderer plus the HTTP server's cost, what a browser sees.

Every Deep Zoom level is included, row by row; of a level with more than
``--max-per-level`` tiles, the middle rows only (as a viewer panning across the
slide; the same tiles for every contender). Slides: the two
real test slides (``CMU-1-Small-Region.svs``: one level, JPEG; the TCGA slide:
two levels, JPEG 2000) and a generated pyramidal SVS of ``--size`` px (3 levels,
downsample 4) standing in for a full-size slide.

Usage::

    python benchmarks/bench_viewer.py                 # 3 repeats, median
    python benchmarks/bench_viewer.py --size 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"

Tile = tuple[int, int, int]


def testdata_slides() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else HERE.parent.parent / "shared" / "testdata"
    return root / "slides"


def synthetic(size: int) -> Path:
    """A generated Aperio-style pyramid (cached under benchmarks/_work)."""
    from tilestream.testing.synthetic import make_synthetic_slide

    WORK.mkdir(exist_ok=True)
    path = WORK / f"viewer-synthetic-{size}.svs"
    if not path.exists():
        make_synthetic_slide(path, width=size, height=size, tile_size=256, levels=3,
                             downsample=4, jpeg_quality=80, tissue_fraction=0.5)  # fmt: skip
    return path


def tile_set(path: Path, max_per_level: int) -> list[Tile]:
    """Every tile of every level, row by row; of a larger level, its middle rows (a pan)."""
    import openslide
    import openslide.deepzoom

    with openslide.OpenSlide(path) as slide:
        dz = openslide.deepzoom.DeepZoomGenerator(slide, 254, 1)
        tiles: list[Tile] = []
        for level, (cols, rows) in enumerate(dz.level_tiles):
            keep = max(1, min(rows, max_per_level // cols))
            first = (rows - keep) // 2
            tiles.extend((level, c, r) for r in range(first, first + keep) for c in range(cols))
    return tiles


def run_peer(path: Path, tiles: list[Tile]) -> float:
    import openslide
    import openslide.deepzoom

    t0 = time.perf_counter()
    with openslide.OpenSlide(path) as slide:
        dz = openslide.deepzoom.DeepZoomGenerator(slide, 254, 1)
        for level, col, row in tiles:
            buf = io.BytesIO()
            dz.get_tile(level, (col, row)).save(buf, "JPEG", quality=80)
    return time.perf_counter() - t0


def run_renderer(path: Path, tiles: list[Tile]) -> float:
    from tilestream.viewer import SlidePool, TileRenderer

    t0 = time.perf_counter()
    pool = SlidePool(path)
    renderer = TileRenderer(pool, quality=80)
    for level, col, row in tiles:
        renderer.tile(level, col, row)
    pool.close()
    return time.perf_counter() - t0


def run_http(path: Path, tiles: list[Tile]) -> float:
    from urllib.parse import quote

    from tilestream.extract import slide_name
    from tilestream.viewer import ViewerServer

    t0 = time.perf_counter()
    with ViewerServer(path, port=0) as server:
        server.start()
        host, port = server.address
        conn = http.client.HTTPConnection(host, port, timeout=120)
        prefix = f"/dz/{quote(slide_name(path), safe='')}_files"
        for level, col, row in tiles:
            conn.request("GET", f"{prefix}/{level}/{col}_{row}.jpeg")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{resp.status}: {body[:200]!r}")
        conn.close()
    return time.perf_counter() - t0


CONTENDERS = {
    "openslide.deepzoom + Pillow": run_peer,
    "tilestream renderer": run_renderer,
    "tilestream over HTTP": run_http,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16000, help="side of the generated slide")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-per-level", type=int, default=400)
    args = parser.parse_args(argv)

    slides_dir = testdata_slides()
    slides = [slides_dir / "CMU-1-Small-Region.svs", slides_dir / "tcga-cr-7395-01a-01-ts1.svs"]
    slides = [p for p in slides if p.exists()]
    if not slides:
        print(f"note: real test slides not found under {slides_dir}", file=sys.stderr)
    slides.append(synthetic(args.size))

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, repeats={args.repeats}")
    print()
    print("| slide | tiles | contender | seconds (median) | tiles/s | speed-up |")
    print("|---|---:|---|---:|---:|---:|")
    for path in slides:
        tiles = tile_set(path, args.max_per_level)
        times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for _ in range(args.repeats):
            for name, run in CONTENDERS.items():  # interleaved: same machine load
                times[name].append(run(path, tiles))
        base = statistics.median(times["openslide.deepzoom + Pillow"])
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {path.name} | {len(tiles)} | {name} | {med:.3f} | "
                  f"{len(tiles) / med:.0f} | {base / med:.1f}x |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
