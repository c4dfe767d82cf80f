"""Fixtures for the loader tests: TFRecords of real JPEG tiles, written by tilestream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

TILE_PX = 32


@pytest.fixture(scope="session")
def real_tiles(slides_dir: Path) -> list[bytes]:
    """80 small JPEG tiles cut from a real H&E slide (CMU-1-Small-Region.svs)."""
    openslide = pytest.importorskip("openslide")
    import simplejpeg

    slide = openslide.OpenSlide(str(slides_dir / "CMU-1-Small-Region.svs"))
    try:
        # A tissue-rich area (every tile is mostly stained tissue, not background).
        region = np.asarray(slide.read_region((1280, 896), 0, (TILE_PX * 10, TILE_PX * 8)))
    finally:
        slide.close()
    rgb = np.ascontiguousarray(region[..., :3])
    tiles = []
    for r in range(8):
        for c in range(10):
            tile = np.ascontiguousarray(
                rgb[r * TILE_PX : (r + 1) * TILE_PX, c * TILE_PX : (c + 1) * TILE_PX]
            )
            tiles.append(simplejpeg.encode_jpeg(tile, quality=90, colorspace="RGB"))
    return tiles


WriteFn = Callable[..., list[str]]


@pytest.fixture
def write_tfrecords(tmp_path: Path, real_tiles: list[bytes]) -> WriteFn:
    """``write_tfrecords([("s1", 5), ("s2", 3)])`` -> paths of Slideflow-schema TFRecords.

    Record ``j`` of slide ``s`` has ``loc_x = j`` and ``loc_y = 1000 + j``; its image
    is one of the real tiles, so ``(slide, loc_x)`` identifies every record.
    """
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    def write(
        spec: Sequence[tuple[str, int]], *, folder: Path | None = None, index: bool = True
    ) -> list[str]:
        out = folder or tmp_path
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        k = 0
        for slide, n in spec:
            path = out / f"{slide}.tfrecords"
            with TFRecordWriter(path, index=index) as w:
                for j in range(n):
                    w.write(
                        serialized_record(slide, real_tiles[k % len(real_tiles)], j, 1000 + j),
                        location=(j, 1000 + j),
                    )
                    k += 1
            paths.append(str(path))
        return paths

    return write
