"""Magnification-aware metadata, regions and tiles (large_image vocabulary).

Expected large_image numbers below were produced by large-image 1.35.6 with its
OpenSlide source on the same files (tilestream does not depend on large_image).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slide.conftest import SlideAt
from tilestream.errors import ConfigError, MissingMPPError
from tilestream.slide import Slide
from tilestream.slide.magnification import (
    convert_region_scale,
    level_for_magnification,
    magnification_for_level,
    metadata,
    native_magnification,
    region,
    region_at_another_scale,
)
from tilestream.slide.tiling import TileDict, single_tile, tiles
from tilestream.testing.synthetic import SyntheticSlide, make_synthetic_slide

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> SyntheticSlide:
    """3000 x 2000 at 20x (0.5 um/px), levels 1, 4, 16 (16.02: 2000 / 16 rounds down)."""
    return make_synthetic_slide(
        tmp_path_factory.mktemp("mag") / "slide.svs",
        width=3000,
        height=2000,
        levels=3,
        jpeg_quality=90,
        seed=11,
        source_tiles=slides_dir / "CMU-1-Small-Region.svs",
    )


@pytest.fixture
def syn(synthetic: SyntheticSlide, slide_at: SlideAt) -> Iterator[Slide]:
    with slide_at.open(synthetic.path) as slide:
        yield slide


@pytest.fixture
def cmu(slides_dir: Path, slide_at: SlideAt) -> Iterator[Slide]:
    with slide_at.open(slides_dir / "CMU-1-Small-Region.svs") as slide:
        yield slide


def _read(slide: Slide, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
    return slide.read_region((x, y), level, (w, h), as_array=True)


# -- metadata and levels ---------------------------------------------------------


def test_metadata_matches_large_image_on_real_slides(slides_dir: Path, slide_at: SlideAt) -> None:
    expected = {
        "CMU-1-Small-Region.svs": (5, 2220, 2967, 240, 240, 20.0, 0.000499),
        "tcga-cr-7395-01a-01-ts1.svs": (6, 4443, 3567, 256, 256, None, None),
        "test3-DAPI-2-387.ndpi": (6, 3968, 4864, 256, 256, 40.0, 0.0002281750559028887),
        "openslide-python-small.svs": (1, 16, 16, 16, 16, 20.0, 0.000499),
    }
    for name, (levels, sx, sy, tw, th, mag, mm) in expected.items():
        with slide_at.open(slides_dir / name) as slide:
            meta = metadata(slide)
        assert meta["levels"] == levels, name
        assert (meta["sizeX"], meta["sizeY"], meta["tileWidth"], meta["tileHeight"]) == (
            sx,
            sy,
            tw,
            th,
        ), name
        assert meta["magnification"] == mag, name
        if mm is None:
            assert meta["mm_x"] is None and meta["mm_y"] is None
        else:
            assert meta["mm_x"] == pytest.approx(mm, rel=1e-9)
            assert meta["mm_y"] == pytest.approx(mm, rel=1e-9)
        assert meta["dtype"] == "uint8"


def test_magnification_is_estimated_from_mpp_and_overridable(
    slides_dir: Path, slide_at: SlideAt
) -> None:
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"  # no MPP, no AppMag
    with slide_at.open(tcga, mpp=0.25) as slide:
        # large_image's estimate without an objective power: 0.01 / mm_x.
        assert native_magnification(slide) == {
            "magnification": pytest.approx(40.0),
            "mm_x": 0.00025,
            "mm_y": 0.00025,
        }


def test_magnification_for_level_matches_large_image(cmu: Slide) -> None:
    assert magnification_for_level(cmu) == {
        "magnification": 20.0,
        "mm_x": 0.000499,
        "mm_y": 0.000499,
        "level": 4,
        "scale": 1.0,
    }
    level0 = magnification_for_level(cmu, 0)
    assert level0["scale"] == 16.0 and level0["magnification"] == 1.25
    assert level0["mm_x"] == pytest.approx(0.007984)
    assert magnification_for_level(cmu, 2)["magnification"] == 5.0


def test_level_for_magnification_matches_large_image(
    cmu: Slide, slides_dir: Path, slide_at: SlideAt
) -> None:
    assert level_for_magnification(cmu, 10) == 3
    assert level_for_magnification(cmu, 5, rounding="ceil") == 2
    assert level_for_magnification(cmu, 7, rounding=None) == pytest.approx(2.4854)
    assert level_for_magnification(cmu, 7, rounding=False) == pytest.approx(2.4854)
    assert level_for_magnification(cmu, mm_x=0.002) == 2
    assert level_for_magnification(cmu, 3, exact=True) is None
    assert level_for_magnification(cmu, 5, exact=True) == 2
    assert level_for_magnification(cmu, 80) == 4  # clamped to full resolution
    with slide_at.open(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as tcga:
        assert level_for_magnification(tcga, 10) == 5  # unknown: full resolution
    with slide_at.open(slides_dir / "openslide-python-small.svs") as small:
        assert level_for_magnification(small, 7, rounding=None) == pytest.approx(-1.5146)


# -- region conversion -------------------------------------------------------------


def test_convert_region_scale_matches_large_image(cmu: Slide) -> None:
    got = convert_region_scale(
        cmu,
        {"left": 100, "top": 50, "width": 300, "height": 200, "units": "mag_pixels"},
        source_scale={"magnification": 5},
        target_scale={"magnification": 10},
        target_units="mag_pixels",
    )
    assert got == {
        "left": 200.0,
        "top": 100.0,
        "width": 600.0,
        "height": 400.0,
        "units": "mag_pixels",
    }
    got = convert_region_scale(
        cmu, {"left": 100, "top": 50, "right": 400, "bottom": 300}, target_units="mm"
    )
    assert got["units"] == "mm"
    assert [got[k] for k in ("left", "top", "right", "bottom")] == pytest.approx(
        [0.0499, 0.02495, 0.1996, 0.1497]
    )
    got = convert_region_scale(
        cmu,
        {"left": 0.25, "top": 0.5, "width": 0.5, "height": 0.25, "units": "fraction"},
        target_units="base_pixels",
    )
    assert got == {
        "left": 555.0,
        "top": 1484.0,
        "width": 1110.0,
        "height": 741.0,
        "units": "base_pixels",
    }
    got = convert_region_scale(
        cmu, {"left": -500, "top": -400, "width": 200, "height": 100}, target_units="fraction"
    )
    assert [got[k] for k in ("left", "top", "width", "height")] == pytest.approx(
        [0.7747747747747747, 0.8651836872261544, 0.09009009009009017, 0.03370407819346144]
    )
    got = convert_region_scale(
        cmu,
        {"left": 10, "top": 20, "width": 100, "height": 50, "units": "um"},
        target_units="mag_pixels",
        target_scale={"magnification": 10},
    )
    assert got == {"left": 10.0, "top": 20.0, "width": 100.0, "height": 50.0, "units": "mag_pixels"}
    same = {"left": 1, "top": 2, "width": 3, "height": 4, "units": "mm"}
    assert convert_region_scale(cmu, same) == same


# -- regions -----------------------------------------------------------------------


def test_region_at_full_resolution_is_read_region(cmu: Slide) -> None:
    got = region(cmu, {"left": 100, "top": 200, "width": 300, "height": 150})
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, _read(cmu, 100, 200, 300, 150))
    whole = region(cmu)
    assert isinstance(whole, np.ndarray)
    assert whole.shape == (2967, 2220, 3)
    pil = region(cmu, {"right": 10, "bottom": 20}, format="pil")
    assert isinstance(pil, Image.Image) and pil.size == (10, 20) and pil.mode == "RGB"


def test_region_at_a_pyramid_level_is_that_level(syn: Slide) -> None:
    # 5x = scale 4 = level 1 exactly: its pixels, not a resize of level 0.
    got = region(
        syn, {"left": 400, "top": 800, "width": 1200, "height": 800}, scale={"magnification": 5}
    )
    np.testing.assert_array_equal(got, _read(syn, 400, 800, 300, 200, level=1))


def test_region_between_levels_is_an_antialiased_downsample(syn: Slide) -> None:
    box = {"left": 600, "top": 400, "width": 1024, "height": 512}
    level0 = _read(syn, 600, 400, 1024, 512).astype(np.float64)
    mean2 = level0.reshape(256, 2, 512, 2, 3).mean(axis=(1, 3))
    boxed = region(syn, box, scale={"magnification": 10}, resample="box")
    assert boxed.shape == (256, 512, 3)
    assert np.abs(boxed - mean2).max() <= 1  # exactly the 2 x 2 mean, up to rounding
    lanczos = region(syn, box, scale={"mm_x": 0.001, "mm_y": 0.001})
    assert lanczos.shape == (256, 512, 3)
    assert np.abs(lanczos - mean2).mean() < 4  # sharper, but the same picture
    # Not an integer factor: Pillow's Lanczos of the level-0 read, away from the border.
    s = 20 / 7
    odd = region(
        syn, {"left": 0, "top": 0, "width": 1000, "height": 600}, scale={"magnification": 7}
    )
    assert odd.shape == (round(600 / s), round(1000 / s), 3)
    ref = np.asarray(
        Image.fromarray(_read(syn, 0, 0, 1000, 600)).resize(
            (odd.shape[1], odd.shape[0]),
            Image.Resampling.LANCZOS,
            box=(0, 0, odd.shape[1] * s, odd.shape[0] * s),
        )
    )
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(odd[inner].astype(int) - ref[inner]).max() <= 1


def test_region_never_upsamples_a_coarser_level(syn: Slide) -> None:
    fine = tiles(syn, scale={"scale": 15.5}, tile_size=64)
    assert fine.slide_level == 1  # level 2 (16.02) is coarser than 15.5
    # Level 2 is 16.02 only because 2000 / 16 = 125 px rounds 187.5 down: it counts as 16.
    assert tiles(syn, scale={"scale": 16}, tile_size=64).slide_level == 2
    assert tiles(syn, scale={"scale": 3.99}, tile_size=64).slide_level == 0


def test_region_units(syn: Slide) -> None:
    # 500 x 250 um at 0.5 um/px = 1000 x 500 level-0 pixels; at 0.002 mm/px: 250 x 125.
    got = region(
        syn,
        {"left": 0, "top": 0, "width": 500, "height": 250, "units": "um"},
        scale={"mm_x": 0.002},
    )
    assert got.shape == (125, 250, 3)
    frac = region(syn, {"left": 0.5, "top": 0.5, "units": "fraction"}, scale={"magnification": 5})
    np.testing.assert_array_equal(frac, _read(syn, 1500, 1000, 375, 250, level=1))
    mag_px = region(
        syn,
        {"left": 100, "top": 50, "width": 40, "height": 30, "units": "mag_pixels"},
        scale={"magnification": 5},
    )
    np.testing.assert_array_equal(mag_px, _read(syn, 400, 200, 40, 30, level=1))
    neg = region(syn, {"left": -100, "top": -50})
    np.testing.assert_array_equal(neg, _read(syn, 2900, 1950, 100, 50))
    wh = region(syn, {"left": 0, "top": 0, "width": 0.1, "height": 0.1, "unitsWH": "mm"})
    assert wh.shape == (200, 200, 3)


def test_region_at_another_scale(syn: Slide) -> None:
    source = {"left": 10, "top": 20, "width": 100, "height": 50, "units": "mag_pixels"}
    got = region_at_another_scale(
        syn, source, source_scale={"magnification": 5}, target_scale={"magnification": 10}
    )
    assert got.shape == (100, 200, 3)
    direct = region(
        syn, {"left": 40, "top": 80, "width": 400, "height": 200}, scale={"magnification": 10}
    )
    np.testing.assert_array_equal(got, direct)


def test_region_errors(syn: Slide, slides_dir: Path, slide_at: SlideAt) -> None:
    with pytest.raises(ConfigError, match="units"):
        region(syn, {"left": 0, "units": "parsecs"})
    with pytest.raises(ConfigError, match="empty"):
        region(syn, {"left": 5000, "top": 0})
    with pytest.raises(ConfigError, match="format"):
        region(syn, {"right": 10, "bottom": 10}, format="tiff")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scale"):
        region(syn, scale={"zoom": 2})
    with pytest.raises(ConfigError, match="positive"):
        region(syn, scale={"magnification": 0})
    with pytest.raises(ConfigError, match="exactly"):
        region(syn, scale={"magnification": 7, "exact": True})
    with pytest.raises(ConfigError, match="resample"):
        region(syn, {"right": 10, "bottom": 10}, scale={"scale": 2}, resample="sinc")  # type: ignore[arg-type]
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with slide_at.open(tcga) as slide:
        with pytest.raises(MissingMPPError, match="tcga-cr-7395") as info:
            region(slide, {"right": 100, "bottom": 100}, scale={"magnification": 10})
        assert "mpp=" in str(info.value)
        with pytest.raises(MissingMPPError):
            region(slide, {"right": 1, "bottom": 1, "units": "mm"})
        # A plain downsample needs no resolution.
        assert region(slide, {"right": 400, "bottom": 200}, scale={"scale": 2}).shape == (
            100,
            200,
            3,
        )


# -- tiles -------------------------------------------------------------------------


def test_tile_geometry(syn: Slide) -> None:
    grid = tiles(syn, tile_size=1024, tile_overlap=100)
    # Stride 924: x = 0, 924, 1848, 2772 (cropped to 228); y = 0, 924, 1848 (152).
    assert (grid.columns, grid.rows, len(grid)) == (4, 3, 12)
    got = list(grid)
    assert [(t["x"], t["width"]) for t in got[:4]] == [
        (0, 1024),
        (924, 1024),
        (1848, 1024),
        (2772, 228),
    ]
    assert [(t["y"], t["height"]) for t in got[::4]] == [(0, 1024), (924, 1024), (1848, 152)]
    first, second, last = got[0], got[1], got[-1]
    assert first["tile_overlap"] == {"left": 0, "top": 0, "right": 100, "bottom": 100}
    assert second["tile_overlap"] == {"left": 100, "top": 0, "right": 100, "bottom": 100}
    assert last["tile_overlap"] == {"left": 100, "top": 100, "right": 0, "bottom": 0}
    assert last["tile_position"] == {"region_x": 3, "region_y": 2, "position": 11}
    assert last["iterator_range"] == {"region_x_max": 4, "region_y_max": 3, "position": 12}
    assert (last["gx"], last["gy"], last["gwidth"], last["gheight"]) == (
        2772.0,
        1848.0,
        228.0,
        152.0,
    )
    assert last["tile"].shape == (152, 228, 3)
    assert last["level"] == metadata(syn)["levels"] - 1
    assert (last["magnification"], last["mm_x"], last["slide_level"]) == (20.0, 0.0005, 0)
    at10 = list(tiles(syn, scale={"magnification": 10}, tile_size=512))
    assert len(at10) == 3 * 2  # 1500 x 1000 output pixels
    assert (at10[-1]["x"], at10[-1]["width"], at10[-1]["gx"], at10[-1]["gwidth"]) == (
        1024,
        476,
        2048.0,
        952.0,
    )
    assert at10[-1]["level"] == metadata(syn)["levels"] - 2 and at10[-1]["mm_x"] == 0.001


def test_edge_tiles_crop_pad_drop(syn: Slide) -> None:
    box = {"left": 0, "top": 0, "width": 1000, "height": 600}
    cropped = list(tiles(syn, region=box, tile_size=256))
    assert len(cropped) == 4 * 3
    assert (cropped[3]["width"], cropped[-1]["height"]) == (232, 88)
    assert cropped[-1]["tile"].shape == (88, 232, 3)
    padded = list(tiles(syn, region=box, tile_size=256, edge="pad"))
    assert len(padded) == 12 and padded[-1]["tile"].shape == (256, 256, 3)
    np.testing.assert_array_equal(padded[-1]["tile"][:88, :232], cropped[-1]["tile"])
    assert (padded[-1]["tile"][88:] == np.array(syn.background_color, np.uint8)).all()
    dropped = list(tiles(syn, region=box, tile_size=256, edge="drop"))
    assert len(dropped) == 3 * 2
    assert all(t["tile"].shape == (256, 256, 3) for t in dropped)


def test_tiles_at_full_resolution_are_read_region(syn: Slide) -> None:
    for tile in tiles(
        syn, region={"left": 500, "top": 300, "width": 700, "height": 500}, tile_size=256
    ):
        expected = _read(syn, tile["gx"], tile["gy"], tile["width"], tile["height"])
        np.testing.assert_array_equal(tile["tile"], expected)


def test_tiles_are_seamless_crops_of_the_scaled_region(syn: Slide) -> None:
    scale = {"scale": 2.5}
    box = {"left": 250, "top": 500, "width": 1500, "height": 1000}
    whole = region(syn, box, scale=scale)
    assert whole.shape == (400, 600, 3)
    mosaic = np.zeros_like(whole)
    for tile in tiles(syn, region=box, scale=scale, tile_size=128):
        x, y = tile["x"] - 100, tile["y"] - 200  # the region starts at output (100, 200)
        mosaic[y : y + tile["height"], x : x + tile["width"]] = tile["tile"]
        assert tile["level"] == pytest.approx(metadata(syn)["levels"] - 1 - np.log2(2.5), abs=1e-4)
    assert np.abs(mosaic.astype(int) - whole).max() <= 1


def test_tiles_at_a_level_scale_use_that_level(slides_dir: Path, slide_at: SlideAt) -> None:
    # The NDPI stores 1, 2, 4, 8... levels (OpenSlide lists 7, tifffile 4); 10x of 40x = 4.
    with slide_at.open(slides_dir / "test3-DAPI-2-387.ndpi") as slide:
        level = slide.level_downsamples.index(4.0)
        grid = tiles(slide, scale={"magnification": 10}, tile_size=300)
        assert grid.slide_level == level
        for tile in list(grid)[:6]:
            assert tile["magnification"] == 10.0
            expected = _read(slide, tile["gx"], tile["gy"], tile["width"], tile["height"], level)
            np.testing.assert_array_equal(tile["tile"], expected)


def test_tile_is_lazy(syn: Slide) -> None:
    tile = next(iter(tiles(syn, tile_size=128, format="pil")))
    assert isinstance(tile, TileDict)
    assert not tile.loaded
    assert "tile" in tile and tile["x"] == 0
    assert not tile.loaded
    image = tile["tile"]
    assert tile.loaded and isinstance(image, Image.Image) and image.size == (128, 128)
    copied = dict(next(iter(tiles(syn, tile_size=64))))
    assert isinstance(copied["tile"], np.ndarray) and copied["tile"].shape == (64, 64, 3)


def test_single_tile(syn: Slide) -> None:
    kwargs = {"scale": {"magnification": 10}, "tile_size": 200, "tile_overlap": 20}
    every = list(tiles(syn, **kwargs))
    by_position = single_tile(syn, 7, **kwargs)
    by_xy = single_tile(syn, {"region_x": 7 % 9, "region_y": 7 // 9}, **kwargs)
    assert len(every) == 9 * 6
    for got in (by_position, by_xy):
        assert got["tile_position"] == every[7]["tile_position"]
        np.testing.assert_array_equal(got["tile"], every[7]["tile"])
    with pytest.raises(IndexError, match="out of range"):
        single_tile(syn, len(every), **kwargs)
    with pytest.raises(IndexError):
        single_tile(syn, {"region_x": 9, "region_y": 0}, **kwargs)


def test_tile_argument_errors(syn: Slide) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        tiles(syn, tile_size=64, tile_overlap=64)
    with pytest.raises(ConfigError, match="edge"):
        tiles(syn, tile_size=64, edge="wrap")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tile_size"):
        tiles(syn, tile_size=-3)
    default = tiles(syn)
    assert default.tile_size == (240, 240)  # the stored tile size, as large_image
    assert tiles(syn, tile_size={"width": 100}).tile_size == (100, 100)


def test_slide_methods_are_these_functions(syn: Slide) -> None:
    import tilestream.testing.synthetic as generator

    # The generator moved to tilestream.testing; its old module is an alias.
    assert generator.make_synthetic_slide is make_synthetic_slide
    assert syn.metadata() == metadata(syn)
    assert syn.native_magnification() == native_magnification(syn)
    assert syn.magnification_for_level(1) == magnification_for_level(syn, 1)
    assert syn.level_for_magnification(10) == level_for_magnification(syn, 10) == 3
    box = {"left": 10, "top": 20, "width": 30, "height": 40, "units": "mag_pixels"}
    assert syn.convert_region_scale(box, source_scale={"scale": 2}) == convert_region_scale(
        syn, box, source_scale={"scale": 2}
    )
    np.testing.assert_array_equal(
        syn.region({"right": 100, "bottom": 50}, scale={"scale": 2}),
        region(syn, {"right": 100, "bottom": 50}, scale={"scale": 2}),
    )
    np.testing.assert_array_equal(
        syn.region_at_another_scale(box, source_scale={"scale": 2}),
        region_at_another_scale(syn, box, source_scale={"scale": 2}),
    )
    assert len(syn.tiles(tile_size=512)) == len(tiles(syn, tile_size=512)) == 6 * 4
    np.testing.assert_array_equal(
        syn.single_tile(3, tile_size=128)["tile"], single_tile(syn, 3, tile_size=128)["tile"]
    )
