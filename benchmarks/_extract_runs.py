"""The contenders of ``bench_extract.py``, each run in a process of its own, and its slides.

* :func:`make_slide`: a generated slide of one scanner geometry (stored tile size,
  microns per pixel, pyramid), cached under ``benchmarks/_work``;
* :func:`run_tilestream`, :func:`run_loop`: run by this file's interpreter as
  ``bench_extract.py --child WHICH SLIDE TILE_PX TILE_UM OUT``;
* :func:`run_slideflow`: Slideflow's ``extract_tiles`` run by Slideflow's own
  interpreter (``_slideflow_child.py``).

Each returns a dict with ``tiles``, ``seconds`` (the work: opening the slide and
extracting, measured inside the process), ``process_seconds`` (the whole process,
interpreter start and imports included, measured by the parent), ``cpu_seconds``
and ``peak_mb`` (``ru_maxrss``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"

#: The QC switches of the "off" contender of ``--qc``.
QC_OFF = {"pen": "off", "fold": "off", "blur_map": "off"}


@dataclass(frozen=True)
class Geometry:
    """A scanner's slide geometry: stored JPEG tile side, level-0 microns per pixel, pyramid."""

    name: str
    tile: int
    mpp: float
    objective: float
    downsample: int
    configs: tuple[tuple[int, float], ...]
    about: str

    def label(self, tile_px: int, tile_um: float) -> str:
        return f"{tile_px}px_{tile_um:g}um"


GEOMETRIES = {
    g.name: g
    for g in (
        Geometry(
            "aperio-20x",
            240,
            0.499,
            20,
            4,
            ((256, 128.0), (299, 302.0)),
            "Aperio 20x: 240 px JPEG tiles, 0.499 um/px, levels 1/4/16",
        ),
        Geometry(
            "aperio-40x",
            240,
            0.252,
            40,
            4,
            ((256, 64.0), (256, 128.0)),
            "Aperio 40x: 240 px JPEG tiles, 0.252 um/px, levels 1/4/16",
        ),
        Geometry(
            "tiles-256",
            256,
            0.5,
            20,
            4,
            ((256, 128.0), (299, 302.0)),
            "256 px JPEG tiles (GT450 and DICOM geometry), 0.5 um/px, levels 1/4/16",
        ),
        Geometry(
            "tiles-512",
            512,
            0.25,
            40,
            2,
            ((256, 64.0), (256, 128.0)),
            "512 px JPEG tiles (Philips geometry), 0.25 um/px, levels 1/2/4/...",
        ),
    )
}


def _testdata() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else HERE.parent.parent / "shared" / "testdata"
    return root / "slides" / "CMU-1-Small-Region.svs"


def make_slide(size: int, geometry: Geometry) -> Path:
    """Generate (once, cached) a ``size`` x ``size`` slide of ``geometry``, half tissue."""
    from tilestream.testing.synthetic import make_synthetic_slide

    WORK.mkdir(exist_ok=True)
    # the 256 px geometry keeps the file name the QC benchmark and older runs used
    stem = (
        f"synthetic-{size}" if geometry.name == "tiles-256" else f"synthetic-{size}-{geometry.name}"
    )
    path = WORK / f"{stem}.svs"
    if not path.exists():
        t0 = time.perf_counter()
        make_synthetic_slide(
            path,
            width=size,
            height=size,
            tile_size=geometry.tile,
            downsample=geometry.downsample,
            mpp=geometry.mpp,
            objective_power=geometry.objective,
            tissue_fraction=0.5,
            jpeg_quality=80,
            seed=0,
            source_tiles=_testdata(),
        )
        print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def peak_mb() -> float:
    """Peak resident memory of this process or its largest child, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def coords_copy(slide: Path, tile_px: int, tile_um: float) -> Path:
    """Where the tilestream child leaves the kept tiles' coordinates (for the floors)."""
    return WORK / f"coords-{slide.stem}-{tile_px}-{tile_um:g}.csv"


def run_tilestream(
    slide: str, tile_px: int, tile_um: float, out: str, **options: Any
) -> dict[str, Any]:
    """Child process: tilestream's extraction of one slide with two threads."""
    from tilestream.extract import ExtractConfig, extract_tiles

    t0, c0 = time.perf_counter(), time.process_time()
    r = extract_tiles(slide, out, tile_px=tile_px, tile_um=tile_um, threads=2, **options)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if r.status != "done":
        raise SystemExit(f"tilestream failed: {r.error}")
    coords = next(Path(out).rglob("*.coords.csv"), None)
    if coords is not None:
        shutil.copyfile(coords, coords_copy(Path(slide), tile_px, tile_um))
    config = ExtractConfig(tile_px=tile_px, tile_um=tile_um, **options)
    return {
        "tiles": r.tiles,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "passthrough": r.passthrough,
        "assembled": r.assembled,
        "resizer": config.resizer,
        "stages": r.timings,
        "peak_mb": peak_mb(),
        "rejected": r.rejected,
        "tile_grid": r.tile_grid,
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
    # Slideflow's grayspace filter on the low-resolution image, as Slideflow does it:
    # the thumbnail decides which grid tiles are read at all.
    thumb_ds = osr.level_downsamples[-1]
    thumb = np.asarray(osr.read_region((0, 0), osr.level_count - 1, osr.level_dimensions[-1]))
    sat = np.asarray(Image.fromarray(thumb[..., :3]).convert("HSV"))[..., 1]
    tiles = 0.0
    with TFRecordWriter(Path(out) / f"loop-{part}.tfrecords") as writer:
        for row, y in enumerate(range(0, h - extract + 1, extract)):
            if row % parts != part:
                continue
            for x in range(0, w - extract + 1, extract):
                ty, tx = int(y / thumb_ds), int(x / thumb_ds)
                span = max(1, int(extract / thumb_ds))
                if float((sat[ty : ty + span, tx : tx + span] < 0.05 * 255).mean()) > 0.6:
                    continue
                rgb = osr.read_region((x, y), level, (read, read)).convert("RGB")
                if read != tile_px:
                    rgb = rgb.resize((tile_px, tile_px), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                rgb.save(buf, format="JPEG", quality=95)
                writer.write(
                    serialized_record("loop", buf.getvalue(), x + extract // 2, y + extract // 2)
                )
                tiles += 1
    return {"tiles": tiles}


def run_loop(slide: str, tile_px: int, tile_um: float, out: str) -> dict[str, Any]:
    """Child process: the straightforward OpenSlide loop over two processes."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_loop_part, [(slide, tile_px, tile_um, out, i, 2) for i in range(2)]))
    return {
        "tiles": int(sum(p["tiles"] for p in parts)),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds(),
        "peak_mb": peak_mb(),
    }


def child(which: str, slide: Path, tile_px: int, tile_um: float, bench: Path) -> dict[str, Any]:
    """Run contender ``which`` in a fresh process of this interpreter (``bench`` is the script)."""
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        cmd = [sys.executable, str(bench), "--child", which, str(slide), str(tile_px)]
        cmd += [str(tile_um), out]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        whole = time.perf_counter() - t0
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = whole
    return result


def run_slideflow(python: str, slide: Path, tile_px: int, tile_um: float) -> dict[str, Any]:
    """Slideflow's ``WSI.extract_tiles`` in its own interpreter (cuCIM backend, 2 threads)."""
    env = dict(os.environ, SF_SLIDE_BACKEND="cucim", SF_BACKEND="torch")
    env.pop("PYTHONPATH", None)  # Slideflow's environment, not ours
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        cmd = [python, str(HERE / "_slideflow_child.py"), str(slide), str(tile_px)]
        cmd += [str(tile_um), out, "2"]
        t0 = time.perf_counter()
        # its working folder is the scratch folder: Slideflow leaves log files in it
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out, check=False)
        whole = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"Slideflow failed:\n{proc.stderr[-3000:]}")
    raw: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "tiles": raw["tiles"],
        "seconds": raw["work_seconds"],
        "process_seconds": whole,
        "cpu_seconds": raw["cpu_seconds"],
        "peak_mb": raw["peak_mb"],
        "extract_px": raw["extract_px"],
        "version": raw["slideflow"],
        "backend": raw["backend"],
    }


def versions() -> str:
    """The versions of what the tilestream and loop rows ran on."""
    import openslide
    import PIL
    import simplejpeg

    import tilestream
    from tilestream.extract.resample import libvips_version

    text = (
        f"Python {platform.python_version()}, tilestream {tilestream.__version__}, OpenSlide "
        f"{openslide.__library_version__}, Pillow {PIL.__version__}, simplejpeg "
        f"{simplejpeg.__version__}"
    )
    libvips = libvips_version()
    return text if libvips is None else f"{text}, libvips {libvips}"


def median(values: list[float]) -> float:
    """The median (mean of the middle two for an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
