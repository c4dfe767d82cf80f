"""The Slide object and the backend contract: registry, properties, painting semantics."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from slide.conftest import SlideAt
from tilestream.errors import SlideError, UnsupportedSlideError
from tilestream.slide import (
    Slide,
    SlideBackend,
    available_backends,
    detect_format,
    open_slide,
    register_backend,
    unregister_backend,
)
from tilestream.slide._paint import paint_region, paint_region_rgb, rgba_to_rgb
from tilestream.slide._resolution import mpp_from_tiff_resolution, plausible_mpp


class NpyBackend(SlideBackend):
    """A real (if small) backend: a 2-level pyramid from an RGB ``.npy`` file."""

    name = "npy"
    priority = 5

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        super().__init__(path, cache_bytes=cache_bytes)
        if path.suffix != ".npy":
            raise UnsupportedSlideError("not a .npy file", path=path)
        self.level0 = np.load(path)
        self.level1 = np.ascontiguousarray(self.level0[::2, ::2])

    @classmethod
    def detect_format(cls, path: Path) -> str | None:
        return "npy" if path.suffix == ".npy" else None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((a.shape[1], a.shape[0]) for a in (self.level0, self.level1))

    @property
    def properties(self) -> Mapping[str, str]:
        return {
            "openslide.vendor": "npy",
            "openslide.mpp-x": "0.5",
            "openslide.mpp-y": "0.5",
            "openslide.objective-power": "20",
            "openslide.bounds-x": "4",
            "openslide.bounds-y": "6",
            "openslide.bounds-width": "30",
            "openslide.bounds-height": "20",
            "openslide.background-color": "102030",
        }

    def read_level_rgb(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return (self.level0, self.level1)[level][y : y + h, x : x + w]


@pytest.fixture
def npy_backend() -> Iterator[type[NpyBackend]]:
    register_backend(NpyBackend)
    try:
        yield NpyBackend
    finally:
        unregister_backend("npy")


@pytest.fixture
def npy_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "slide.npy"
    np.save(path, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return path


def test_custom_backend_registry(npy_backend: type[NpyBackend], npy_path: Path) -> None:
    assert available_backends()[0] == "npy"  # lowest priority number is tried first
    assert detect_format(npy_path) == "npy"
    with open_slide(npy_path) as slide:
        assert slide.backend == "npy"
        assert repr(slide) == f"Slide({str(npy_path)!r}, backend='npy')"
        assert slide.dimensions == (64, 48)
        assert slide.level_downsamples == (1.0, 2.0)
        assert slide.mpp == (0.5, 0.5) and slide.objective_power == 20.0
        assert slide.bounds == (4, 6, 30, 20)
        assert slide.background_color == (0x10, 0x20, 0x30)
        assert slide.tile_size is None and slide.color_profile is None
        assert dict(slide.associated_images) == {}
        with pytest.raises(TypeError):
            slide.properties["x"] = "y"  # type: ignore[index]
        out = slide.read_region((60, 40), 0, (8, 8), as_array=True)
        assert (out[: 8 - 0, 4:] == (0x10, 0x20, 0x30)).all()  # outside: background colour
        np.testing.assert_array_equal(out[:8, :4], np.load(npy_path)[40:48, 60:64])
        level1 = slide.read_region((2, 4), 1, (5, 5), as_array=True)
        np.testing.assert_array_equal(level1, np.load(npy_path)[::2, ::2][2:7, 1:6])
    with pytest.raises(ValueError, match="built-in"):
        unregister_backend("tifffile")


def test_custom_backend_refusal_falls_back(npy_backend: type[NpyBackend], tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    from PIL import Image

    Image.new("RGB", (10, 10), (1, 2, 3)).save(path)
    with open_slide(path) as slide:
        assert slide.backend == "image"  # npy refused it; auto moved on


def test_slide_pickles_by_path(npy_backend: type[NpyBackend], npy_path: Path) -> None:
    import pickle

    with open_slide(npy_path, mpp=0.25) as slide:
        clone = pickle.loads(pickle.dumps(slide))
        with clone:
            assert clone.mpp == (0.25, 0.25) and clone.backend == "npy"


def test_closed_slide(npy_backend: type[NpyBackend], npy_path: Path) -> None:
    slide = Slide(npy_path)
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (1, 1))
    with pytest.raises(SlideError, match="closed"):
        slide.cache_info()


# -- painting with OpenSlide's semantics ------------------------------------------------


def _ramp(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 7 % 256, y * 11 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def test_paint_region_integer_positions() -> None:
    level = _ramp(20, 10)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        assert x >= 0 and y >= 0 and x + w <= 20 and y + h <= 10  # only in-bounds reads
        return level[y : y + h, x : x + w]

    out = paint_region(read, (20, 10), 15.0, 8.0, 10, 4)
    np.testing.assert_array_equal(out[:2, :5, :3], level[8:10, 15:20])
    assert (out[:2, :5, 3] == 255).all() and (out[2:, :, 3] == 0).all() and (out[:, 5:] == 0).all()
    assert (paint_region(read, (20, 10), 30.0, 0.0, 4, 4) == 0).all()  # wholly outside


def test_paint_region_fractional_is_bilinear() -> None:
    level = _ramp(32, 32).astype(np.float64)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return _ramp(32, 32)[y : y + h, x : x + w]

    fx, fy = 3.25, 5.5
    out = paint_region(read, (32, 32), fx, fy, 10, 10).astype(np.float64)
    x0, y0 = math.floor(fx), math.floor(fy)
    ax, ay = fx - x0, fy - y0
    p = level[y0 : y0 + 11, x0 : x0 + 11]
    want = (
        p[:-1, :-1] * (1 - ax) * (1 - ay)
        + p[:-1, 1:] * ax * (1 - ay)
        + p[1:, :-1] * (1 - ax) * ay
        + p[1:, 1:] * ax * ay
    )
    assert np.abs(out[..., :3] - want).max() <= 1.0
    assert (out[..., 3] == 255).all()
    edge = paint_region(read, (32, 32), 27.5, 0.0, 8, 2)
    assert edge[0, 4, 3] == 127 and edge[0, 5, 3] == 0  # half-covered, then outside


@pytest.mark.parametrize(("fx", "fy"), [(0.0, 0.5), (0.3, 0.0), (0.71, 0.13), (0.999, 0.996)])
def test_paint_region_fast_path_equals_pixman_formula(fx: float, fy: float) -> None:
    """The separable in-bounds path equals pixman's 2x2 ``(sum w * p) >> 16`` exactly."""
    rng = np.random.default_rng(11)
    level = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return level[y : y + h, x : x + w]

    got = paint_region_rgb(read, (50, 40), 5 + fx, 7 + fy, 30, 20)
    assert got is not None
    dx = ((round(fx * 65536) >> 9) & 0x7F) << 1
    dy = ((round(fy * 65536) >> 9) & 0x7F) << 1
    p = level[7:28, 5:36].astype(np.int64)
    want = (
        p[:-1, :-1] * (256 - dx) * (256 - dy)
        + p[:-1, 1:] * dx * (256 - dy)
        + p[1:, :-1] * (256 - dx) * dy
        + p[1:, 1:] * dx * dy
    ) >> 16
    np.testing.assert_array_equal(got, want)
    rgba = paint_region(read, (50, 40), 5 + fx, 7 + fy, 30, 20)
    np.testing.assert_array_equal(rgba[..., :3], want)
    assert (rgba[..., 3] == 255).all()
    assert paint_region_rgb(read, (50, 40), 45.5, 0.0, 5, 5) is None  # needs column 50


def test_rgba_to_rgb_composites() -> None:
    px = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128]]], np.uint8)
    out = rgba_to_rgb(px, (0, 0, 255))
    assert out.tolist() == [[[200, 100, 0], [0, 0, 255], [100, 50, 127]]]


@pytest.mark.parametrize(
    ("res", "unit", "mpp", "suspicious"),
    [
        (72.0, "INCH", 352.77, True),
        (96.0, "inch", 264.58, True),
        (28.3465, "CENTIMETER", 352.78, True),
        (40000.0, "CENTIMETER", 0.25, False),
        (101600.0, "INCH", 0.25, False),
        (4000.0, "MILLIMETER", 0.25, False),
    ],
)
def test_mpp_from_tiff_resolution(res: float, unit: str, mpp: float, suspicious: bool) -> None:
    result = mpp_from_tiff_resolution(res, unit)
    assert result is not None
    assert result[0] == pytest.approx(mpp, abs=0.01) and result[1] is suspicious


def test_mpp_without_a_physical_unit() -> None:
    assert mpp_from_tiff_resolution(72.0, "NONE") is None
    assert mpp_from_tiff_resolution(0.0, "INCH") is None
    assert not plausible_mpp(None) and not plausible_mpp(float("nan")) and not plausible_mpp(0.001)
    assert plausible_mpp(0.1) and plausible_mpp(8.0) and not plausible_mpp(12.0)


# -- the large_image vocabulary is reachable from the Slide -----------------------------


@pytest.mark.testdata
def test_magnification_methods_delegate(slides_dir: Path, slide_at: SlideAt) -> None:
    from tilestream.slide import magnification, tiling

    with slide_at.open(slides_dir / "CMU-1-Small-Region.svs") as slide:
        assert slide.metadata() == magnification.metadata(slide)
        assert slide.native_magnification() == magnification.native_magnification(slide)
        assert slide.magnification_for_level(2) == magnification.magnification_for_level(slide, 2)
        scale = {"magnification": 5}
        area = {"left": 100, "top": 100, "width": 400, "height": 400, "units": "base_pixels"}
        np.testing.assert_array_equal(
            slide.region(area, scale=scale), magnification.region(slide, area, scale=scale)
        )
        assert len(slide.tiles(scale=scale, tile_size=128)) == len(
            tiling.tiles(slide, scale=scale, tile_size=128)
        )
