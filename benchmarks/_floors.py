"""The physical floors of an extraction: the work no extractor of the same tiles can skip.

Given the tiles an extraction kept (its ``<slide>.coords.csv``: level-0 box and the
level read), the floors are measured on the same slide:

* **decode**: every stored JPEG tile under a kept tile decoded once (libjpeg-turbo
  through simplejpeg, as tilestream decodes), nothing else;
* **decode + encode**: that, plus every output tile JPEG-encoded once (q95 4:4:4,
  tilestream's encoding) from its pixels;
* **entropy coding** (when ``tilestream.slide.jpeg_mosaic`` is built): every needed
  stored tile entropy-decoded once and every output tile entropy-encoded once, the
  floor of a lossless DCT-domain assembly.

Only the codec calls are timed (``time.process_time`` around each); reading the
bytes, assembling pixels and resizing are left out, so a floor is a bound, not a
contender. Each floor is measured on one core and spread over two processes
(stored-tile rows and output-tile rows dealt alternately), wall-clock.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Box", "kept_boxes", "measure_floors", "measure_floors_apart"]


@dataclass(frozen=True)
class Box:
    """A kept tile: its level-0 box and the pyramid level it was read from."""

    x: int
    y: int
    width: int
    height: int
    level: int


def kept_boxes(coords_csv: Path) -> list[Box]:
    """The kept tiles of one slide, from its coordinates table."""
    with open(coords_csv, newline="") as f:
        return [
            Box(int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"]), int(r["level"]))
            for r in csv.DictReader(f)
        ]


def _stored_under(slide: Any, boxes: list[Box]) -> dict[int, list[tuple[int, int]]]:
    """Per level, the stored tiles (col, row) that some kept tile overlaps, in row order."""
    needed: dict[int, set[tuple[int, int]]] = {}
    for b in boxes:
        grid = slide.stored_tile_grid(b.level)
        if grid is None:
            raise SystemExit(f"level {b.level} has no stored JPEG tiles: no decode floor")
        tw, th = grid
        ds = slide.level_downsamples[b.level]
        x0, y0 = int(b.x / ds), int(b.y / ds)
        x1, y1 = int(np.ceil((b.x + b.width) / ds)), int(np.ceil((b.y + b.height) / ds))
        cells = needed.setdefault(b.level, set())
        for row in range(y0 // th, (y1 - 1) // th + 1):
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                cells.add((col, row))
    return {lv: sorted(c, key=lambda t: (t[1], t[0])) for lv, c in needed.items()}


def _part(args: tuple[str, list[Box], int, int, int, bool]) -> dict[str, float]:
    """One process's share: stored rows and output rows ``part::parts``; codec CPU seconds."""
    import simplejpeg

    from tilestream.slide import open_slide

    path, boxes, tile_px, part, parts, entropy = args
    out = {"decode": 0.0, "encode": 0.0, "entropy_decode": 0.0, "entropy_encode": 0.0}
    mosaic = _mosaic_module() if entropy else None
    with open_slide(path) as slide:
        decoded: dict[tuple[int, int, int], np.ndarray] = {}
        coefficients: dict[tuple[int, int, int], Any] = {}
        for level, cells in _stored_under(slide, boxes).items():
            for col, row in cells:
                mine = row % parts == part
                if not mine and mosaic is None:
                    continue
                data = slide.read_stored_tile_bytes(level, col, row)
                if mosaic is not None:
                    # every share holds every tile's coefficients (the outputs need their
                    # neighbours); only its own share of the decodes is timed
                    t0 = time.process_time()
                    coefficients[(level, col, row)] = mosaic.decode_coefficients(data)
                    if mine:
                        out["entropy_decode"] += time.process_time() - t0
                if not mine:
                    continue
                t0 = time.process_time()
                pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
                out["decode"] += time.process_time() - t0
                decoded[(level, col, row)] = pixels
        if mosaic is not None:
            out["entropy_encode"] = _entropy_encode(slide, boxes, coefficients, part, parts, mosaic)
        # every output tile encoded once (its pixels: a crop of one decoded stored tile,
        # tiled out to the output size: the same content statistics, no assembly cost)
        for i, _ in enumerate(boxes):
            if i % parts != part or not decoded:
                continue
            source = next(_cycle(decoded, i))
            tile = _fill(source, tile_px)
            t0 = time.process_time()
            simplejpeg.encode_jpeg(tile, quality=95, colorspace="RGB", colorsubsampling="444")
            out["encode"] += time.process_time() - t0
    return out


def _entropy_encode(
    slide: Any,
    boxes: list[Box],
    coefficients: dict[tuple[int, int, int], Any],
    part: int,
    parts: int,
    mosaic: Any,
) -> float:
    """CPU seconds assembling (entropy-encoding) this share's output tiles from coefficients."""
    seconds = 0.0
    for i, b in enumerate(boxes):
        if i % parts != part:
            continue
        grid = slide.stored_tile_grid(b.level)
        ds = slide.level_downsamples[b.level]
        x, y, w = round(b.x / ds), round(b.y / ds), round(b.width / ds)
        tw, th = grid
        keys = [
            (col, row)
            for row in range(y // th, (y + w - 1) // th + 1)
            for col in range(x // tw, (x + w - 1) // tw + 1)
        ]
        sources = {k: coefficients[(b.level, *k)] for k in keys}
        t0 = time.process_time()
        mosaic.mosaic(sources, tw, th, x, y, w, w)
        seconds += time.process_time() - t0
    return seconds


def _cycle(decoded: dict[tuple[int, int, int], np.ndarray], i: int) -> Iterator[np.ndarray]:
    values = list(decoded.values())
    yield values[i % len(values)]


def _fill(source: np.ndarray, size: int) -> np.ndarray:
    reps = (-(-size // source.shape[0]), -(-size // source.shape[1]), 1)
    return np.ascontiguousarray(np.tile(source, reps)[:size, :size])


def _mosaic_module() -> Any:
    try:
        from tilestream.slide import jpeg_mosaic
    except ImportError:
        return None
    return jpeg_mosaic


def measure_floors(path: Path, boxes: list[Box], tile_px: int) -> dict[str, dict[str, float]]:
    """CPU seconds of each floor's codec calls on one core, and over two processes.

    ``two_cores`` gives, per floor, the larger of the two processes' shares (the
    wall-clock bound with both cores busy); ``wall_all`` the two processes' wall
    clock, reading and opening included.
    """
    entropy = _mosaic_module() is not None
    one = _part((str(path), boxes, tile_px, 0, 1, entropy))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        jobs = [(str(path), boxes, tile_px, i, 2, entropy) for i in (0, 1)]
        halves = list(pool.map(_part, jobs))
    wall = time.perf_counter() - t0

    def floors(parts: list[dict[str, float]]) -> dict[str, float]:
        out = {
            "decode": max(h["decode"] for h in parts),
            "decode_encode": max(h["decode"] + h["encode"] for h in parts),
        }
        if entropy:
            out["entropy"] = max(h["entropy_decode"] + h["entropy_encode"] for h in parts)
        return out

    return {"one_core": floors([one]), "two_cores": {**floors(halves), "wall_all": wall}}


def measure_floors_apart(path: Path, boxes_csv: Path, tile_px: int) -> dict[str, dict[str, float]]:
    """:func:`measure_floors` in a process of its own.

    The floors hold every decoded tile in memory; a child started later inherits its
    parent's peak resident size (Linux keeps it across exec), so the benchmark's own
    process must stay small for the contenders' peaks to be their own.
    """
    cmd = [sys.executable, __file__, str(path), str(boxes_csv), str(tile_px)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, dict[str, float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    slide_path, coords_path, px = sys.argv[1:4]
    floors = measure_floors(Path(slide_path), kept_boxes(Path(coords_path)), int(px))
    print(json.dumps(floors))
