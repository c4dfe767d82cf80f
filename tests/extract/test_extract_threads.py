"""Tiles produced by several threads: one shared handle for tifffile slides, same output."""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import openslide
import pytest
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from _remote import Remote
from tilestream.extract import ExtractConfig, extract_tiles
from tilestream.extract.grid import plan_grid
from tilestream.extract.tiles import CHUNK, iter_encoded_tiles
from tilestream.slide import Slide, open_slide
from tilestream.tfrecord import TFRecord


def _opener(path: Path, backend: str, opened: list[Slide]) -> object:
    lock = threading.Lock()

    def opener() -> Slide:
        slide = open_slide(path, backend=backend)
        with lock:
            opened.append(slide)
        return slide

    return opener


def _tiles(path: Path, backend: str, threads: int) -> tuple[list[bytes], int]:
    # 64 px / 32 um: ~1,500 tiles of the sample slide, dozens of chunks for the threads.
    config = ExtractConfig(tile_px=64, tile_um=32)
    with open_slide(path) as slide:
        grid = plan_grid(
            config, dimensions=slide.dimensions, downsamples=slide.level_downsamples, mpp=0.499
        )
    opened: list[Slide] = []
    indices = np.arange(len(grid))
    out = [
        t.data
        for t in iter_encoded_tiles(
            _opener(path, backend, opened),  # type: ignore[arg-type]
            grid,
            indices,
            config,
            threads=threads,
        )
    ]
    return out, len(opened)


def test_threads_share_one_tifffile_handle(cmu_slide: Path) -> None:
    """Three threads over one tifffile handle give the bytes one thread gives."""
    one, handles_one = _tiles(cmu_slide, "tifffile", 1)
    three, handles_three = _tiles(cmu_slide, "tifffile", 3)
    assert handles_one == 1 and handles_three == 1
    assert len(one) > 40 * CHUNK and three == one


def test_other_backends_get_one_handle_per_thread(cmu_slide: Path) -> None:
    one, _ = _tiles(cmu_slide, "openslide", 1)
    two, handles = _tiles(cmu_slide, "openslide", 2)
    assert 1 <= handles <= 2 and two == one


def _lanczos(region: Image.Image, size: int, pyvips: ModuleType | None) -> NDArray[np.uint8]:
    """``region`` resized by Pillow's Lanczos, or by libvips' ``reduce(kernel="lanczos3")``."""
    if pyvips is None:
        return np.asarray(region.resize((size, size), Image.Resampling.LANCZOS))
    arr = np.ascontiguousarray(np.asarray(region))
    h, w, _ = arr.shape
    image = pyvips.Image.new_from_memory(arr.data, w, h, 3, "uchar")
    out = image.reduce(w / size, h / size, kernel="lanczos3")
    return np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8, shape=(size, size, 3))


@pytest.mark.parametrize("resizer", ["pillow", "vips"])
def test_resized_tiles_from_two_threads_match_openslide(
    cmu_slide: Path, tmp_path: Path, resizer: str, request: pytest.FixtureRequest, storage: Remote
) -> None:
    """The 299 px / 302 um extraction with threads: OpenSlide's region, Lanczos, JPEG q95.

    Byte for byte: the resize path reads exactly OpenSlide's pixels and resizes them
    with the configured resizer's plain Lanczos-3 (no cheaper approximation); from the
    slide in SeaweedFS too (by S3 and HTTP URL), against OpenSlide on the local file.
    """
    pyvips = request.getfixturevalue("pyvips") if resizer == "vips" else None
    slide = storage.name(cmu_slide)
    result = extract_tiles(
        slide, tmp_path, tile_px=299, tile_um=302, quality=95, threads=2, resizer=resizer,
        **storage.kw,
    )  # fmt: skip
    assert result.status == "done", result.error
    run = tmp_path / "299px_302um"
    rows = (run / "CMU-1-Small-Region.coords.csv").read_text().splitlines()[1:]
    with openslide.OpenSlide(cmu_slide) as osr, TFRecord(run / "CMU-1-Small-Region.tfrecords") as t:
        for i, line in enumerate(rows):
            fields = line.split(",")
            x, y, size = int(fields[3]), int(fields[4]), int(fields[5])
            region = osr.read_region((x, y), 0, (size, size)).convert("RGB")
            ref = _lanczos(region, 299, pyvips)
            # The same pixels, encoded the same way: the same bytes.
            want = simplejpeg.encode_jpeg(ref, quality=95, colorspace="RGB", colorsubsampling="444")
            assert t[i]["image_raw"] == bytes(want)
