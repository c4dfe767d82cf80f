"""Fixtures for stain normalisation tests: real H&E tiles cut from two differently stained slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tilestream.slide import open_slide

TILE_PX = 256


def cut_tissue_tiles(path: Path, *, n: int = 16, px: int = TILE_PX) -> np.ndarray:
    """The first ``n`` level-0 tiles (row-major grid) that are at least 70% tissue."""
    out = []
    with open_slide(path) as slide:
        w, h = slide.dimensions
        for y in range(0, h - px, px):
            for x in range(0, w - px, px):
                tile = slide.read_region((x, y), 0, (px, px), as_array=True)
                if (tile.min(axis=-1) < 200).mean() > 0.7:
                    out.append(tile)
                if len(out) == n:
                    return np.stack(out)
    pytest.fail(f"{path}: only {len(out)} tissue tiles found, {n} needed")


def _slide(slides_dir: Path, name: str) -> Path:
    path = slides_dir / name
    if not path.exists():
        pytest.fail(f"{path} is missing from the shared test data")
    return path


@pytest.fixture(scope="session")
def cmu_tiles(slides_dir: Path) -> np.ndarray:
    """16 tissue tiles (256 px, level 0) of CMU-1-Small-Region.svs (purple H&E, JPEG)."""
    tiles = cut_tissue_tiles(_slide(slides_dir, "CMU-1-Small-Region.svs"))
    tiles.setflags(write=False)
    return tiles


@pytest.fixture(scope="session")
def tcga_tiles(slides_dir: Path) -> np.ndarray:
    """16 tissue tiles of the TCGA slide (JPEG 2000; pink, eosin-heavy staining)."""
    tiles = cut_tissue_tiles(_slide(slides_dir, "tcga-cr-7395-01a-01-ts1.svs"))
    tiles.setflags(write=False)
    return tiles
