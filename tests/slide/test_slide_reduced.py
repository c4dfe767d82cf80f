"""Regions reduced by an integer factor: exact box means from stored tiles, and scaled JPEG decoding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from slide.conftest import SlideAt
from tilestream.errors import CorruptSlideError
from tilestream.slide import open_slide
from tilestream.slide.base import MAX_AUTO_CACHE_BYTES
from tilestream.slide.tiling import tiles
from tilestream.testing.synthetic import make_synthetic_slide

CMU = "CMU-1-Small-Region.svs"
# Real slides the tifffile backend reads, with stored tiles of several kinds: RGB JPEG
# (Aperio), JPEG 2000 (Aperio 33005), deflate tiles on levels with non-integer
# downsamples, uncompressed strips, and NDPI JPEG strips.
SLIDES = [
    CMU,
    "tcga-cr-7395-01a-01-ts1.svs",
    "openslide-python-boxes.tiff",
    "kidney-48-5.tif",
    "test3-DAPI-2-387.ndpi",
]


def _reduce(pixels: np.ndarray, factor: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).reduce(factor))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _regions(dims: tuple[int, int], factor: int) -> list[tuple[int, int, int, int]]:
    """Level-pixel regions ``(x, y, w, h)`` (output size): aligned, misaligned, at the edges."""
    lw, lh = dims
    w = max(1, min(64, lw // factor // 2))
    h = max(1, min(48, lh // factor // 2))
    return [
        (0, 0, w, h),
        (factor * 7, factor * 5, w, h),  # on the factor grid, across stored tiles
        (factor * 7 + 1, factor * 5, w, h),  # off the grid: read and reduce
        (lw - w * factor, lh - h * factor, w, h),  # flush with the level's edge
        (lw - w * factor + factor, 0, w, h),  # past the edge: background
    ]


@pytest.mark.testdata
@pytest.mark.parametrize("name", SLIDES)
@pytest.mark.parametrize("factor", [2, 4])
def test_reduced_equals_read_then_reduce(
    slides_dir: Path, name: str, factor: int, slide_at: SlideAt
) -> None:
    """On every level, exactly Pillow's reduce() of the same region read at full size."""
    with slide_at.open(slides_dir / name) as slide:
        assert slide.backend == "tifffile"
        for level in range(slide.level_count):
            ds = slide.level_downsamples[level]
            for x, y, w, h in _regions(slide.level_dimensions[level], factor):
                location = (round(x * ds), round(y * ds))
                got = slide.read_region_reduced(location, level, (w, h), factor)
                full = slide.read_region(location, level, (w * factor, h * factor), as_array=True)
                assert got.shape == (h, w, 3) and got.dtype == np.uint8
                np.testing.assert_array_equal(
                    got, _reduce(full, factor), err_msg=f"{level} {x} {y}"
                )


@pytest.mark.testdata
def test_reduced_equals_openslide_and_uses_the_stored_tiles(
    slides_dir: Path, slide_at: SlideAt
) -> None:
    """CMU-1: OpenSlide's pixels reduced 2x2, 4x4, 8x8, served tile by tile from the cache."""
    with openslide.OpenSlide(slides_dir / CMU) as osr:
        reference = np.asarray(osr.read_region((0, 0), 0, osr.dimensions).convert("RGB"))
    with slide_at.open(slides_dir / CMU) as slide:
        backend = slide._impl
        for factor in (2, 4, 8):
            for x, y in [(0, 0), (480, 720), (232, 1000), (2220 - 512, 2967 - 512 - 7)]:
                w = h = 512 // factor
                x, y = x - x % factor, y - y % factor
                assert backend.read_level_reduced(0, x, y, w, h, factor) is not None
                got = slide.read_region_reduced((x, y), 0, (w, h), factor)
                want = _reduce(reference[y : y + h * factor, x : x + w * factor], factor)
                np.testing.assert_array_equal(got, want)
        # Off the grid, past the edge, or with a colour transform: the general path.
        assert backend.read_level_reduced(0, 1, 0, 10, 10, 2) is None
        assert backend.read_level_reduced(0, 2200, 0, 20, 10, 2) is None
        assert backend.read_level_reduced(0, 0, 0, 10, 10, 7) is None  # 240 % 7 != 0


@pytest.mark.testdata
def test_reduced_with_a_colour_transform_reduces_the_transformed_pixels(
    slides_dir: Path,
    slide_at: SlideAt,
) -> None:
    with slide_at.open(slides_dir / CMU, color="srgb") as slide:
        got = slide.read_region_reduced((480, 480), 0, (100, 60), 2)
        full = slide.read_region((480, 480), 0, (200, 120), as_array=True)
        np.testing.assert_array_equal(got, _reduce(full, 2))


@pytest.mark.testdata
def test_reduced_tiles_are_cached_each_stored_tile_decoded_once(
    slides_dir: Path, slide_at: SlideAt
) -> None:
    with slide_at.open(slides_dir / CMU) as slide:
        for y in range(0, 2967 - 512 + 1, 512):
            for x in range(0, 2220 - 512 + 1, 512):
                slide.read_region_reduced((x, y), 0, (256, 256), 2)
        info = slide.cache_info()
        assert info is not None
        # 4 x 5 regions of 512 px cover 2048 x 2560 px: 9 x 11 stored 240 px tiles,
        # each decoded (and reduced) once.
        assert info["misses"] == 9 * 11
        assert info["bytes"] == 9 * 11 * 120 * 120 * 3


def test_bad_arguments(tmp_path: Path, slide_at: SlideAt) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=512, height=512, levels=1)
    with slide_at.open(path) as slide:
        with pytest.raises(ValueError, match="factor"):
            slide.read_region_reduced((0, 0), 0, (4, 4), 0)
        with pytest.raises(ValueError, match="size"):
            slide.read_region_reduced((0, 0), 0, (-1, 4), 2)
        with pytest.raises(ValueError, match="level"):
            slide.read_region_reduced((0, 0), 3, (4, 4), 2)
        same = slide.read_region_reduced((3, 5), 0, (40, 30), 1)
        np.testing.assert_array_equal(same, slide.read_region((3, 5), 0, (40, 30), as_array=True))


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_reduced_regions_are_writable_and_may_be_empty(
    tmp_path: Path, backend: str, slide_at: SlideAt
) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=512, height=512, levels=1)
    with slide_at.open(path, backend=backend) as slide:
        # On and off the stored tiles' grid, and a factor that does not divide them.
        for location, factor in (((0, 0), 2), ((1, 0), 2), ((0, 0), 7)):
            region = slide.read_region_reduced(location, 0, (20, 10), factor)
            assert region.shape == (10, 20, 3)
            assert region.flags.writeable
            region[0, 0] = 0
        for size in ((0, 10), (10, 0)):
            empty = slide.read_region_reduced((0, 0), 0, size, 2)
            assert empty.shape == (size[1], size[0], 3)


def test_open_slide_cache_may_grow(tmp_path: Path, slide_at: SlideAt) -> None:
    """``open_slide`` without ``cache_bytes`` uses the growing budget, as ``Slide`` documents."""
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=512, height=512, levels=1)
    with slide_at.open(path) as slide:
        assert slide._impl._cache.grow_limit == MAX_AUTO_CACHE_BYTES
    with slide_at.open(path, cache_bytes=1000) as slide:
        assert slide._impl._cache.grow_limit is None


# -- tiles() at an integer downsample ------------------------------------------------


@pytest.mark.testdata
def test_box_tiles_at_2x_equal_openslide_reduced(slides_dir: Path, slide_at: SlideAt) -> None:
    with openslide.OpenSlide(slides_dir / CMU) as osr:
        reference = np.asarray(osr.read_region((0, 0), 0, osr.dimensions).convert("RGB"))
    with slide_at.open(slides_dir / CMU) as slide:
        grid = tiles(slide, scale={"scale": 2.0}, tile_size=256, resample="box", edge="crop")
        for tile in grid:
            x, y, w, h = tile["x"], tile["y"], tile["width"], tile["height"]
            want = _reduce(reference[2 * y : 2 * (y + h), 2 * x : 2 * (x + w)], 2)
            np.testing.assert_array_equal(tile["tile"], want)


# -- scaled (DCT-domain) JPEG decoding: opt-in, measured against the box mean ---------------


@pytest.mark.testdata
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_scaled_decoding_is_close_to_the_box_mean(
    slides_dir: Path, factor: int, slide_at: SlideAt
) -> None:
    """CMU-1 (real Aperio RGB JPEG tiles): libjpeg-turbo's scaled IDCT against the exact mean.

    Measured over the whole slide: PSNR 54 dB at 2x, 57 dB at 4x, 59 dB at 8x, the
    largest difference 19, 9 and 4 grey levels, 0.1 on average (about 50 dB on tissue
    alone); the bounds leave a margin.
    """
    with slide_at.open(slides_dir / CMU) as slide:
        w, h = 2160 // factor, 2880 // factor
        exact = slide.read_region_reduced((0, 0), 0, (w, h), factor)
        fast = slide.read_region_reduced((0, 0), 0, (w, h), factor, scaled_decoding=True)
    diff = np.abs(exact.astype(np.int16) - fast.astype(np.int16))
    assert fast.shape == exact.shape and 0 < diff.max() <= 40
    assert float(diff.mean()) < 1.0
    assert _psnr(exact, fast) > {2: 48.0, 4: 44.0, 8: 42.0}[factor]


@pytest.mark.testdata
def test_scaled_decoding_elsewhere_is_the_box_mean(slides_dir: Path, slide_at: SlideAt) -> None:
    """JPEG 2000 tiles, factors libjpeg cannot scale by, off-grid regions: exact."""
    with slide_at.open(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        a = slide.read_region_reduced((512, 256), 0, (200, 100), 2, scaled_decoding=True)
        np.testing.assert_array_equal(a, slide.read_region_reduced((512, 256), 0, (200, 100), 2))
    with slide_at.open(slides_dir / CMU) as slide:
        for location, factor in [((480, 480), 3), ((481, 480), 2)]:
            a = slide.read_region_reduced(location, 0, (50, 40), factor, scaled_decoding=True)
            b = slide.read_region_reduced(location, 0, (50, 40), factor)
            np.testing.assert_array_equal(a, b)


def test_scaled_decoding_on_a_generated_slide(tmp_path: Path, slides_dir: Path) -> None:
    """The benchmark's kind of slide (RGB JPEG tiles, real tissue): close to the box mean."""
    path = tmp_path / "g.svs"
    make_synthetic_slide(
        path,
        width=1920,
        height=1440,
        tile_size=240,
        jpeg_quality=70,
        levels=1,
        tissue_fraction=0.6,
        seed=3,
        source_tiles=slides_dir / CMU,
    )
    with open_slide(path) as slide:
        exact = slide.read_region_reduced((0, 0), 0, (960, 720), 2)
        fast = slide.read_region_reduced((0, 0), 0, (960, 720), 2, scaled_decoding=True)
    assert _psnr(exact, fast) > 45.0


# -- full-scale decoding of plain JPEG tiles --------------------------------------------


@pytest.mark.testdata
@pytest.mark.parametrize("name", [CMU, "openslide-python-small.svs"])
def test_plain_jpeg_tiles_decode_as_tifffile_does(
    slides_dir: Path, name: str, slide_at: SlideAt
) -> None:
    """Plain JPEG tiles go through simplejpeg: every stored tile equals tifffile's decode."""
    with slide_at.open(slides_dir / name) as slide:
        stored = slide._impl.stored_level(0)
        assert stored._simplejpeg
        for row in range(stored.rows):
            for col in range(stored.cols):
                index = row * stored.cols + col
                data = stored.read_raw_tile(col, row)
                got = stored._decode_tile(data, index, col, row)
                segment, _, _ = stored.page.decode(data, index, jpegtables=stored.jpegtables)
                want = np.asarray(segment).reshape(got.shape[0], -1, 3)[:, : got.shape[1]]
                np.testing.assert_array_equal(got, want)


@pytest.mark.testdata
@pytest.mark.parametrize("scaled", [False, True])
def test_reduced_read_of_a_corrupt_tile(slides_dir: Path, scaled: bool, slide_at: SlideAt) -> None:
    """The damaged tile raises CorruptSlideError with libjpeg's cause, every time, both ways."""
    path = slides_dir / "openslide-python-unreadable.svs"
    with slide_at.open(path, backend="tifffile") as slide:
        for _ in range(2):
            with pytest.raises(CorruptSlideError, match=r"unreadable\.svs") as info:
                slide.read_region_reduced((0, 0), 0, (8, 8), 2, scaled_decoding=scaled)
            assert "Bogus marker length" in str(info.value)
