"""Many slides on one machine: the process pool vs a Dask LocalCluster, side by side.

50 generated Aperio-style slides (realistic tissue, 256 px JPEG tiles) are extracted
twice in the same run, once with the default process pool (2 processes) and once on
a Dask ``LocalCluster`` of 2 single-threaded worker processes. Reported: tiles/s,
wall time, and the overhead per task (wall time x workers minus the time spent
inside tasks, per task), which is what scheduling costs.

Usage::

    python benchmarks/bench_cluster.py [--slides 50] [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "cluster"


def _source() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else HERE.parent.parent / "shared" / "testdata"
    return root / "slides" / "CMU-1-Small-Region.svs"


def make_slides(n: int, size: int) -> list[Path]:
    """Generate (once, cached) ``n`` slides of ``size`` x ``size`` pixels."""
    from tilestream.testing.synthetic import make_synthetic_slide

    folder = WORK / f"slides-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"slide-{i:03d}.svs"
        if not path.exists():
            make_synthetic_slide(
                path, width=size, height=size, tile_size=256, seed=i, source_tiles=_source()
            )
        paths.append(path)
    return paths


def _run(label: str, slides: list[Path], executor_factory) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from tilestream.extract import extract_slides

    out = WORK / f"out-{label}"
    shutil.rmtree(out, ignore_errors=True)
    with executor_factory() as executor:
        t0 = time.perf_counter()
        run = extract_slides(
            slides,
            out,
            executor=executor,
            workers=2,
            tile_px=256,
            tile_um=128,
            jpeg_passthrough=False,
        )
        wall = time.perf_counter() - t0
    assert not run.failed, run.failed
    inside = sum(r.seconds for r in run.results)
    return {
        "tiles": run.tiles,
        "wall": wall,
        "rate": run.tiles / wall,
        "overhead": (wall * 2 - inside) / len(run.results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=50)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    slides = make_slides(args.slides, args.size)

    import contextlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tilestream.distributed import dask_executor

    def pool():  # type: ignore[no-untyped-def]
        return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))

    @contextlib.contextmanager
    def dask():  # type: ignore[no-untyped-def]
        with dask_executor(cluster="local:2", dashboard=False) as d:
            yield d.executor

    rows = [("process pool (2 processes)", _run("pool", slides, pool))]
    rows.append(("Dask LocalCluster (2 workers)", _run("dask", slides, dask)))
    print(
        f"{args.slides} slides of {args.size} x {args.size} px, 256 px / 128 um, re-encoded; 2 cores"
    )
    print("| executor | tiles | wall s | tiles/s | overhead per task (s) |")
    print("|---|---:|---:|---:|---:|")
    for label, r in rows:
        print(
            f"| {label} | {r['tiles']:.0f} | {r['wall']:.1f} | {r['rate']:,.0f} | {r['overhead']:.3f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
