"""The fast tile path: decode-once, bounded cache, grid-order reads and JPEG pass-through."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import simplejpeg
import tifffile
from PIL import Image

from slide.conftest import SlideAt
from tilestream.errors import UnsupportedSlideError
from tilestream.slide.base import DEFAULT_CACHE_BYTES, MAX_AUTO_CACHE_BYTES
from tilestream.slide.fastpath import FileReader, StoredLevel, TileCache, merge_jpeg_tables

CMU = "CMU-1-Small-Region.svs"
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


@pytest.fixture(scope="module")
def cmu_reference(slides_dir: Path) -> np.ndarray:
    """OpenSlide's pixels of the whole CMU-1-Small-Region level 0 (RGBA)."""
    with openslide.OpenSlide(slides_dir / CMU) as osr:
        return np.asarray(osr.read_region((0, 0), 0, osr.dimensions))


# -- TileCache ------------------------------------------------------------------------


def test_tile_cache_is_an_lru_bounded_in_bytes() -> None:
    cache = TileCache(max_bytes=1000)
    tiles = {k: np.full((10, 10, 3), k, np.uint8) for k in range(4)}  # 300 bytes each
    for k in range(3):
        cache.put(k, tiles[k])
    assert cache.nbytes == 900 and len(cache) == 3
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache.put(3, tiles[3])  # evicts 1, the least recently used
    assert cache.get(1) is None
    assert [k for k in range(4) if cache.get(k) is not None] == [0, 2, 3]
    assert cache.nbytes <= 1000
    with pytest.raises(ValueError, match="read-only"):
        cache.get(0)[0, 0, 0] = 1  # type: ignore[index]
    cache.put(9, np.zeros((40, 40, 3), np.uint8))  # larger than the budget: not cached
    assert cache.get(9) is None and cache.nbytes <= 1000
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_tile_cache_disabled() -> None:
    cache = TileCache(max_bytes=0)
    cache.put("a", np.zeros((2, 2, 3), np.uint8))
    assert cache.get("a") is None and len(cache) == 0


# -- decode once, bounded memory -------------------------------------------------------


@pytest.mark.testdata
def test_grid_order_read_decodes_each_stored_tile_once(
    slides_dir: Path, cmu_reference: np.ndarray, slide_at: SlideAt
) -> None:
    with slide_at.open(slides_dir / CMU) as slide:
        assert slide.backend == "tifffile"
        w, h = slide.dimensions
        for y in range(0, h, 256):
            for x in range(0, w, 256):
                tile = slide.read_region((x, y), 0, (256, 256), as_array=True)
                ref = cmu_reference[y : y + 256, x : x + 256]
                np.testing.assert_array_equal(tile[: ref.shape[0], : ref.shape[1]], ref[..., :3])
        info = slide.cache_info()
        assert info is not None
        stored = -(-w // 240) * -(-h // 240)
        assert info["misses"] == stored  # every stored tile decoded exactly once
        assert info["hits"] > 0


@pytest.mark.testdata
def test_small_cache_stays_bounded_and_correct(
    slides_dir: Path, cmu_reference: np.ndarray, slide_at: SlideAt
) -> None:
    budget = 4 * 240 * 240 * 3  # four decoded tiles
    with slide_at.open(slides_dir / CMU, cache_bytes=budget) as slide:
        w, h = slide.dimensions
        rng = np.random.default_rng(7)
        for _ in range(60):
            x, y = int(rng.integers(0, w - 300)), int(rng.integers(0, h - 300))
            tile = slide.read_region((x, y), 0, (300, 300), as_array=True)
            np.testing.assert_array_equal(tile, cmu_reference[y : y + 300, x : x + 300, :3])
            info = slide.cache_info()
            assert info is not None and info["bytes"] <= budget and info["max_bytes"] == budget


@pytest.mark.testdata
@pytest.mark.parametrize("region", [256, 512])
def test_growing_budget_decodes_once_where_a_fixed_one_cannot(
    slides_dir: Path, cmu_reference: np.ndarray, region: int
) -> None:
    """A budget of one tile that may grow behaves like a wide slide's default cache:
    it grows to the stored rows a region spans plus one, and no further."""
    tile_bytes = 240 * 240 * 3
    results = {}
    for name, cache in {
        "growing": TileCache(tile_bytes, grow_limit=1 << 30),
        "fixed": TileCache(3 * tile_bytes),
    }.items():
        with tifffile.TiffFile(slides_dir / CMU) as tif:
            reader = FileReader(slides_dir / CMU)
            try:
                level = StoredLevel(tif.pages[0], reader, cache, key=0)
                for y in range(0, 2967 - region + 1, region):
                    for x in range(0, 2220 - region + 1, region):
                        got = level.read_rgb(x, y, region, region)
                        want = cmu_reference[y : y + region, x : x + region, :3]
                        np.testing.assert_array_equal(got, want)
            finally:
                reader.close()
        assert cache.nbytes <= cache.max_bytes
        results[name] = (cache.misses, cache.max_bytes)
    rows = 2967 // region * region
    needed = (2220 // region * region + 239) // 240 * ((rows + 239) // 240)
    assert results["growing"][0] == needed  # each stored tile under the regions decoded once
    spans = -(-region // 240) + 1  # rows a region can span
    assert results["growing"][1] <= (spans + 1) * level.row_bytes
    assert results["fixed"][0] > needed and results["fixed"][1] == 3 * tile_bytes


@pytest.mark.testdata
def test_default_budget(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / CMU) as slide:
        info = slide.cache_info()
        assert info is not None and info["max_bytes"] == DEFAULT_CACHE_BYTES
        slide.read_region((0, 0), 0, (2220, 2967), as_array=True)
        info = slide.cache_info()
        assert info is not None and DEFAULT_CACHE_BYTES <= info["max_bytes"] <= MAX_AUTO_CACHE_BYTES


@pytest.mark.testdata
def test_no_cache_still_reads(
    slides_dir: Path, cmu_reference: np.ndarray, slide_at: SlideAt
) -> None:
    with slide_at.open(slides_dir / CMU, cache_bytes=0) as slide:
        got = slide.read_region((500, 700), 0, (480, 480), as_array=True)
        np.testing.assert_array_equal(got, cmu_reference[700:1180, 500:980, :3])
        assert slide.cache_info() == {
            "hits": 0,
            "misses": 9,  # the 3x3 stored tiles under the region
            "tiles": 0,
            "bytes": 0,
            "max_bytes": 0,
        }


@pytest.mark.testdata
def test_threads_share_one_slide(
    slides_dir: Path, cmu_reference: np.ndarray, slide_at: SlideAt
) -> None:
    failures: list[BaseException] = []
    with slide_at.open(slides_dir / CMU, cache_bytes=8 * 240 * 240 * 3) as slide:

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(40):
                    x, y = int(rng.integers(0, 1900)), int(rng.integers(0, 2600))
                    got = slide.read_region((x, y), 0, (256, 256), as_array=True)
                    np.testing.assert_array_equal(got, cmu_reference[y : y + 256, x : x + 256, :3])
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not failures, failures[0]


@pytest.mark.testdata
def test_other_backends_have_no_tile_cache(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / CMU, backend="openslide") as slide:
        assert slide.cache_info() is None


# -- stored JPEG pass-through ----------------------------------------------------------


def _decoders(data: bytes) -> dict[str, np.ndarray]:
    return {
        "pillow": np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
        "simplejpeg": simplejpeg.decode_jpeg(data),
        "imagecodecs": np.asarray(imagecodecs.jpeg8_decode(data)),
    }


@pytest.mark.testdata
def test_stored_aperio_tiles_decode_to_openslide_pixels(
    slides_dir: Path, cmu_reference: np.ndarray, slide_at: SlideAt
) -> None:
    """Aperio tiles are RGB-coded JPEG with shared tables: the bytes we hand out
    carry the tables and an Adobe transform=0 marker, so every decoder agrees."""
    with slide_at.open(slides_dir / CMU) as slide:
        assert slide.stored_tile_grid(0) == (240, 240)
        w, h = slide.dimensions
        for row in range(-(-h // 240)):
            for col in range(-(-w // 240)):
                data = slide.read_stored_tile_bytes(0, col, row)
                assert data[:2] == b"\xff\xd8" and data[2:18] == ADOBE_RGB
                ref = cmu_reference[row * 240 : row * 240 + 240, col * 240 : col * 240 + 240]
                rh, rw = ref.shape[:2]
                decoders = _decoders(data) if (col + row) % 4 == 0 else {"simplejpeg": None}
                if decoders["simplejpeg"] is None:
                    decoders = {"simplejpeg": simplejpeg.decode_jpeg(data)}
                for name, pixels in decoders.items():
                    assert pixels.shape == (240, 240, 3), name  # stored full size
                    np.testing.assert_array_equal(pixels[:rh, :rw], ref[..., :3], err_msg=name)
        with pytest.raises(IndexError, match="outside"):
            slide.read_stored_tile_bytes(0, 10, 0)


@pytest.mark.testdata
def test_stored_ycbcr_tiles_pass_through(
    tmp_path: Path, slides_dir: Path, slide_at: SlideAt
) -> None:
    """Generic JPEG TIFF (YCbCr, subsampled, tables in JPEGTables): no Adobe marker."""
    pixels = tifffile.imread(slides_dir / CMU)[:512, :768]
    path = tmp_path / "ycbcr.tif"
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", photometric="rgb")
    with slide_at.open(path) as slide, openslide.OpenSlide(path) as osr:
        assert slide.stored_tile_grid(0) == (256, 256)
        for col, row in [(0, 0), (2, 1)]:
            data = slide.read_stored_tile_bytes(0, col, row)
            assert ADOBE_RGB not in data
            ref = np.asarray(osr.read_region((col * 256, row * 256), 0, (256, 256)))[..., :3]
            for name, got in _decoders(data).items():
                np.testing.assert_array_equal(got, ref, err_msg=name)


@pytest.mark.testdata
@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("tcga-cr-7395-01a-01-ts1.svs", "tifffile"),  # JPEG 2000
        ("openslide-python-boxes.tiff", "tifffile"),  # deflate
        ("kidney-48-5.tif", "tifffile"),  # not tiled
        (CMU, "openslide"),
        ("kidney-48-5.tif", "image"),
    ],
)
def test_no_pass_through_without_stored_jpeg_tiles(
    slides_dir: Path, name: str, backend: str, slide_at: SlideAt
) -> None:
    with slide_at.open(slides_dir / name, backend=backend) as slide:
        assert slide.stored_tile_grid(0) is None
        with pytest.raises(UnsupportedSlideError, match="no stored JPEG tiles"):
            slide.read_stored_tile_bytes(0, 0, 0)


def test_merge_jpeg_tables() -> None:
    tables = b"\xff\xd8\xff\xdb\x00\x03\x01\xff\xd9"
    tile = b"\xff\xd8\xff\xda\x00\x02\xff\xd9"
    assert merge_jpeg_tables(tile, tables, rgb=True) == (
        b"\xff\xd8" + ADOBE_RGB + b"\xff\xdb\x00\x03\x01" + b"\xff\xda\x00\x02\xff\xd9"
    )
    assert merge_jpeg_tables(tile, None, rgb=False) == tile
    with pytest.raises(ValueError, match="SOI"):
        merge_jpeg_tables(b"garbage", tables, rgb=False)


def test_tile_cache_is_the_project_lru_and_grows_only_when_allowed() -> None:
    from tilestream._util.lru import LRU

    tile = np.zeros((10, 10, 3), np.uint8)  # 300 bytes
    fixed = TileCache(max_bytes=600)
    assert isinstance(fixed, LRU)
    fixed.reserve(10_000)
    assert fixed.max_bytes == 600  # no grow_limit: the budget stays
    growing = TileCache(max_bytes=300, grow_limit=900)
    for k in range(3):
        assert growing.put(k, tile.copy())
    assert len(growing) == 1  # 300 bytes: one tile
    growing.reserve(5_000)
    assert growing.max_bytes == 900  # raised, capped at grow_limit
    growing.reserve(100)
    assert growing.max_bytes == 900  # never shrunk by reserve
    for k in range(3):
        growing.put(k, tile.copy())
    assert len(growing) == 3 and growing.nbytes == 900
    assert growing.peek(0) is not None and (growing.hits, growing.misses) == (0, 0)
    assert growing.get(0) is not None and growing.get(7) is None
    assert (growing.hits, growing.misses) == (1, 1)
    big = np.zeros((40, 40, 3), np.uint8)
    assert not growing.put("big", big) and big.flags.writeable  # not cached, left writable
