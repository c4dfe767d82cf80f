"""Deep Zoom: geometry equal to openslide.deepzoom's, pixels equal to its tiles."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator as OpenSlideDeepZoom

from slide.conftest import SlideAt
from tilestream.slide import Slide
from tilestream.slide.deepzoom import DeepZoomGenerator
from tilestream.testing.synthetic import make_synthetic_slide

pytestmark = pytest.mark.testdata

# (file, backends whose pyramid equals OpenSlide's, max pixel difference allowed)
SLIDES = [
    ("CMU-1-Small-Region.svs", ("auto", "openslide"), 0),
    # JPEG 2000: tifffile decodes with imagecodecs' OpenJPEG, OpenSlide with its own
    # build and YCbCr conversion; they differ by up to 3 (mean < 1).
    ("tcga-cr-7395-01a-01-ts1.svs", ("auto", "openslide"), 3),
    ("openslide-python-small.svs", ("auto", "openslide"), 0),
    ("openslide-python-boxes.tiff", ("auto", "openslide"), 0),
    ("dicom-openslide-boxes/boxes_0.dcm", ("auto",), 0),
    # OpenSlide lists 7 NDPI levels (3 synthesised), tifffile the 4 stored ones.
    ("test3-DAPI-2-387.ndpi", ("openslide",), 0),
]
SHAPES = [(254, 1), (256, 0), (126, 3), (510, 1)]


class WithBounds:
    """A slide (OpenSlide's or ours) whose properties also carry a non-empty region."""

    def __init__(self, slide: Any, bounds: tuple[int, int, int, int]) -> None:
        self._slide = slide
        x, y, w, h = bounds
        self.properties: Mapping[str, str] = {
            **slide.properties,
            "openslide.bounds-x": str(x),
            "openslide.bounds-y": str(y),
            "openslide.bounds-width": str(w),
            "openslide.bounds-height": str(h),
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slide, name)


def _all_addresses(dz: Any) -> Iterator[tuple[int, tuple[int, int]]]:
    for level, (cols, rows) in enumerate(dz.level_tiles):
        for row in range(rows):
            for col in range(cols):
                yield level, (col, row)


def _assert_same_geometry(ours: DeepZoomGenerator, theirs: OpenSlideDeepZoom) -> None:
    assert ours.level_count == theirs.level_count
    assert ours.level_tiles == theirs.level_tiles
    assert ours.level_dimensions == theirs.level_dimensions
    assert ours.tile_count == theirs.tile_count
    assert ours.get_dzi("jpeg") == theirs.get_dzi("jpeg")
    assert ours.get_dzi("png") == theirs.get_dzi("png")
    for level, address in _all_addresses(theirs):
        assert ours.get_tile_coordinates(level, address) == theirs.get_tile_coordinates(
            level, address
        ), (level, address)
        assert ours.get_tile_dimensions(level, address) == theirs.get_tile_dimensions(
            level, address
        ), (level, address)


def _sample(dz: Any, per_level: int = 6) -> Iterator[tuple[int, tuple[int, int]]]:
    """Every level; its first, last and a few middle tiles."""
    for level, (cols, rows) in enumerate(dz.level_tiles):
        count = cols * rows
        picks = {0, count - 1, *range(0, count, max(1, count // per_level))}
        for position in sorted(picks):
            yield level, (position % cols, position // cols)


#: OpenSlide's Deep Zoom tiles of a slide, read once per module (by the local and remote runs).
_THEIRS: dict[tuple[object, ...], Any] = {}


def _assert_same_pixels(
    ours: DeepZoomGenerator,
    theirs: OpenSlideDeepZoom,
    tolerance: int,
    key: tuple[object, ...] | None = None,
) -> None:
    """Sampled tiles within ``tolerance``; OpenSlide's are kept under ``key`` when given."""
    for level, address in _sample(theirs):
        a = ours.get_tile(level, address)
        if key is None:
            b = theirs.get_tile(level, address)
        elif (b := _THEIRS.get((*key, level, address))) is None:
            b = _THEIRS[(*key, level, address)] = theirs.get_tile(level, address)
        assert a.mode == b.mode == "RGB"
        assert a.size == b.size, (level, address)
        diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
        assert diff.max() <= tolerance, (level, address, diff.max())
        assert diff.mean() < 1.0
        # Tagged with the slide's ICC profile exactly when OpenSlide's tiles are.
        assert ("icc_profile" in a.info) == ("icc_profile" in b.info)


@pytest.mark.parametrize(("name", "backends", "tolerance"), SLIDES)
@pytest.mark.parametrize("limit_bounds", [False, True])
def test_geometry_equals_openslide(
    slides_dir: Path,
    name: str,
    backends: tuple[str, ...],
    tolerance: int,
    limit_bounds: bool,
    slide_at: SlideAt,
) -> None:
    path = slides_dir / name
    with openslide.OpenSlide(path) as osr:
        for backend in backends:
            with slide_at.open(path, backend=backend) as slide:
                for tile_size, overlap in SHAPES:
                    ours = DeepZoomGenerator(slide, tile_size, overlap, limit_bounds)
                    theirs = OpenSlideDeepZoom(osr, tile_size, overlap, limit_bounds)
                    _assert_same_geometry(ours, theirs)


@pytest.mark.parametrize(("name", "backends", "tolerance"), SLIDES)
def test_pixels_equal_openslide(
    slides_dir: Path, name: str, backends: tuple[str, ...], tolerance: int, slide_at: SlideAt
) -> None:
    path = slides_dir / name
    with openslide.OpenSlide(path) as osr:
        # Remote: the ranged reader ("auto"); the openslide backend would read a staged copy of
        # the same bytes (staging is covered by test_remote_conformance), for CI time.
        for backend in backends if slide_at.local else backends[:1]:
            with slide_at.open(path, backend=backend) as slide:
                ours, theirs = DeepZoomGenerator(slide), OpenSlideDeepZoom(osr)
                _assert_same_pixels(ours, theirs, tolerance, key=(name,))


@pytest.mark.parametrize(  # remote: one case over s3 (CI time)
    ("storage", "limit_bounds"),
    [("local", False), ("local", True), ("s3", True)],
    indirect=["storage"],
)
def test_non_empty_bounds(
    tmp_path: Path, slides_dir: Path, limit_bounds: bool, slide_at: SlideAt
) -> None:
    """A slide with an ``openslide.bounds-*`` region: offsets, shrunk levels, pixels."""
    synthetic = make_synthetic_slide(
        tmp_path / "b.svs",
        width=3000,
        height=2200,
        levels=3,
        seed=5,
        source_tiles=slides_dir / "CMU-1-Small-Region.svs",
    )
    bounds = (333, 150, 2001, 1777)
    # Reads at levels 1 and 2 start between level pixels (downsample 16.05, offsets):
    # the tifffile backend paints them with OpenSlide's bilinear rule, within 2 of cairo.
    with openslide.OpenSlide(synthetic.path) as osr:
        theirs = OpenSlideDeepZoom(WithBounds(osr, bounds), 254, 1, limit_bounds)
        for backend, tolerance in (("openslide", 0), ("tifffile", 2)):
            with slide_at.open(synthetic.path, backend=backend) as slide:
                ours = DeepZoomGenerator(WithBounds(slide, bounds), 254, 1, limit_bounds)
                _assert_same_geometry(ours, theirs)
                _assert_same_pixels(ours, theirs, tolerance, key=("bounds", limit_bounds))
        if limit_bounds:
            assert theirs.level_dimensions[-1] == (2001, 1777)
            assert ours.get_tile_coordinates(ours.level_count - 1, (0, 0))[0] == (333, 150)


def test_ndpi_on_its_stored_levels(slides_dir: Path, slide_at: SlideAt) -> None:
    """tifffile reads the 4 stored NDPI levels: the same Deep Zoom levels and tiles."""
    path = slides_dir / "test3-DAPI-2-387.ndpi"
    with openslide.OpenSlide(path) as osr, slide_at.open(path, backend="tifffile") as slide:
        ours, theirs = DeepZoomGenerator(slide), OpenSlideDeepZoom(osr)
        assert ours.level_dimensions == theirs.level_dimensions
        assert ours.level_tiles == theirs.level_tiles
        top = ours.level_count - 1
        for level in (top, top - 1, top - 2, top - 3):  # read from stored levels by both
            cols, rows = ours.level_tiles[level]
            for address in [(0, 0), (cols - 1, rows - 1)]:
                assert ours.get_tile_coordinates(level, address) == theirs.get_tile_coordinates(
                    level, address
                )
                a, b = ours.get_tile(level, address), theirs.get_tile(level, address)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # Below, OpenSlide reads levels it synthesised; we reduce the 8x level.
        for address in _all_addresses(theirs):
            assert ours.get_tile_dimensions(*address) == theirs.get_tile_dimensions(*address)


def test_invalid_level_and_address(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / "CMU-1-Small-Region.svs") as slide:
        dz = DeepZoomGenerator(slide)
        with pytest.raises(ValueError, match="level"):
            dz.get_tile(dz.level_count, (0, 0))
        with pytest.raises(ValueError, match="level"):
            dz.get_tile_coordinates(-1, (0, 0))
        cols = dz.level_tiles[-1][0]
        with pytest.raises(ValueError, match="address"):
            dz.get_tile(dz.level_count - 1, (cols, 0))
        with pytest.raises(ValueError, match="address"):
            dz.get_tile_dimensions(dz.level_count - 1, (0, -1))
        with pytest.raises(ValueError, match="tile_size"):
            DeepZoomGenerator(slide, tile_size=0)
        with pytest.raises(ValueError, match="overlap"):
            DeepZoomGenerator(slide, overlap=-1)
        assert "DeepZoomGenerator(Slide(" in repr(dz)


def test_package_exports_it() -> None:
    import tilestream.slide

    assert tilestream.slide.DeepZoomGenerator is DeepZoomGenerator


def test_accepts_an_openslide_object(slides_dir: Path) -> None:
    path = slides_dir / "CMU-1-Small-Region.svs"
    with openslide.OpenSlide(path) as osr:
        ours, theirs = DeepZoomGenerator(osr), OpenSlideDeepZoom(osr)
        _assert_same_geometry(ours, theirs)
        level = ours.level_count - 2
        np.testing.assert_array_equal(
            np.asarray(ours.get_tile(level, (1, 1))), np.asarray(theirs.get_tile(level, (1, 1)))
        )


def test_slide_type_is_accepted_as_is(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / "openslide-python-small.svs") as slide:
        assert isinstance(slide, Slide)
        dz = DeepZoomGenerator(slide, tile_size=8, overlap=0)
        assert dz.level_tiles[-1] == (2, 2)
        assert dz.get_tile(dz.level_count - 1, (1, 1)).size == (8, 8)
