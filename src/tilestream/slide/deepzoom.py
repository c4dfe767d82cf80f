"""Deep Zoom tiles of a slide, geometry identical to OpenSlide's generator.

:class:`DeepZoomGenerator` serves the tiles a Deep Zoom viewer (OpenSeadragon)
asks for, with the same API and the same arithmetic as
``openslide.deepzoom.DeepZoomGenerator``: for every level and address the
``read_region`` arguments (:meth:`~DeepZoomGenerator.get_tile_coordinates`)
and the tile size are equal, and the pixels are equal when the slide's pixels
are (tilestream's backends read OpenSlide's pixels). It takes a tilestream
:class:`~tilestream.slide.Slide` or any object with OpenSlide's interface.

The Deep Zoom pyramid halves the (bounded) level-0 size down to 1 x 1 pixel;
each Deep Zoom level is read from the best slide level for its downsample
(OpenSlide's rule), composited over the slide's background colour and, where
the slide level is finer, reduced with Lanczos to the tile's size.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.slide import open_slide
>>> from tilestream.testing.synthetic import make_synthetic_slide
>>> path = pathlib.Path(tempfile.mkdtemp()) / "dz.svs"
>>> _ = make_synthetic_slide(path, width=1000, height=600, levels=2)
>>> with open_slide(path) as slide:
...     dz = DeepZoomGenerator(slide, tile_size=254, overlap=1)
...     print(dz.level_count, dz.level_dimensions[-1], dz.level_tiles[-1], dz.tile_count)
...     print(dz.get_tile_coordinates(9, (1, 0)), dz.get_tile_dimensions(9, (1, 0)))
...     print(dz.get_tile(9, (1, 0)).size)
11 (1000, 600) (4, 3) 25
((506, 0), 0, (494, 510)) (247, 255)
(247, 255)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol
from xml.etree.ElementTree import Element, SubElement, tostring

from PIL import Image

from tilestream.slide.levels import best_level
from tilestream.slide.limits import SlideLimits, default_limits
from tilestream.slide.overview import thumbnail_size, thumbnail_source_size

__all__ = ["DeepZoomGenerator", "SlideLike"]

_BOUNDS_OFFSET = ("openslide.bounds-x", "openslide.bounds-y")
_BOUNDS_SIZE = ("openslide.bounds-width", "openslide.bounds-height")
_DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"

Coordinates = tuple[tuple[int, int], int, tuple[int, int]]


class SlideLike(Protocol):
    """What the generator needs of a slide (OpenSlide's interface)."""

    @property
    def properties(self) -> Mapping[str, str]: ...

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any: ...


class DeepZoomGenerator:
    """Deep Zoom tiles of a slide.

    Parameters
    ----------
    slide
        A :class:`~tilestream.slide.Slide` (or an ``openslide.OpenSlide``).
    tile_size
        Side of a tile without its overlap; for viewers, ``tile_size + 2 *
        overlap`` is best a power of two.
    overlap
        Pixels added to each interior edge of a tile.
    limit_bounds
        Render only the slide's non-empty region (``openslide.bounds-*``
        properties) instead of the whole level-0 image.
    """

    def __init__(
        self,
        slide: SlideLike,
        tile_size: int = 254,
        overlap: int = 1,
        limit_bounds: bool = False,
    ) -> None:
        if int(tile_size) != tile_size or tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, not {tile_size!r}")
        if int(overlap) != overlap or overlap < 0:
            raise ValueError(f"overlap must be a non-negative integer, not {overlap!r}")
        self._slide = slide
        self._tile = int(tile_size)
        self._overlap = int(overlap)
        self._limit_bounds = limit_bounds
        props = slide.properties
        if limit_bounds:
            self._offset = (
                int(props.get(_BOUNDS_OFFSET[0], 0)),
                int(props.get(_BOUNDS_OFFSET[1], 0)),
            )
            w0, h0 = slide.dimensions
            fx = int(props.get(_BOUNDS_SIZE[0], w0)) / w0
            fy = int(props.get(_BOUNDS_SIZE[1], h0)) / h0
            self._slide_dims = tuple(
                (math.ceil(w * fx), math.ceil(h * fy)) for w, h in slide.level_dimensions
            )
        else:
            self._offset = (0, 0)
            self._slide_dims = tuple((int(w), int(h)) for w, h in slide.level_dimensions)
        # Deep Zoom levels: halve (rounding up) from the level-0 size down to 1 x 1.
        size = self._slide_dims[0]
        sizes = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            sizes.append(size)
        self._dims = tuple(reversed(sizes))
        self._tiles = tuple(
            (math.ceil(w / self._tile), math.ceil(h / self._tile)) for w, h in self._dims
        )
        count = len(self._dims)
        l0_downsamples = tuple(2 ** (count - level - 1) for level in range(count))
        self._level_downsamples = tuple(slide.level_downsamples)
        # OpenSlide's rule (no tolerance): the tiles must equal OpenSlide's generator's.
        self._slide_level = tuple(
            best_level(self._level_downsamples, d, tolerance=0.0) for d in l0_downsamples
        )
        # Deep Zoom pixels per pixel of the slide level each Deep Zoom level reads.
        self._dz_per_slide = tuple(
            l0_downsamples[level] / self._level_downsamples[self._slide_level[level]]
            for level in range(count)
        )
        background = props.get("openslide.background-color", "ffffff")
        self._background = "#" + background

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._slide!r}, tile_size={self._tile!r}, "
            f"overlap={self._overlap!r}, limit_bounds={self._limit_bounds!r})"
        )

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels."""
        return len(self._dims)

    @property
    def level_tiles(self) -> tuple[tuple[int, int], ...]:
        """``(columns, rows)`` of tiles of each Deep Zoom level."""
        return self._tiles

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` in pixels of each Deep Zoom level."""
        return self._dims

    @property
    def tile_count(self) -> int:
        """Total number of tiles over all levels."""
        return sum(cols * rows for cols, rows in self._tiles)

    def _info(self, level: int, address: tuple[int, int]) -> tuple[Coordinates, tuple[int, int]]:
        if not 0 <= level < len(self._dims):
            raise ValueError(f"Invalid level {level}: the generator has {len(self._dims)}")
        col, row = address
        cols, rows = self._tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(
                f"Invalid address {tuple(address)} for level {level} ({cols} x {rows})"
            )
        slide_level = self._slide_level[level]
        ratio = self._dz_per_slide[level]
        z_w, z_h = self._dims[level]
        level_w, level_h = self._slide_dims[slide_level]
        ds = self._level_downsamples[slide_level]
        location: list[int] = []
        read_size: list[int] = []
        tile_size: list[int] = []
        for t, t_count, z_lim, l_lim, offset in (
            (col, cols, z_w, level_w, self._offset[0]),
            (row, rows, z_h, level_h, self._offset[1]),
        ):
            before = self._overlap if t != 0 else 0
            after = self._overlap if t != t_count - 1 else 0
            z_size = min(self._tile, z_lim - self._tile * t) + before + after
            l_start = ratio * (self._tile * t - before)
            location.append(int(ds * l_start + offset))
            read_size.append(int(min(math.ceil(ratio * z_size), l_lim - math.ceil(l_start))))
            tile_size.append(z_size)
        coordinates = ((location[0], location[1]), slide_level, (read_size[0], read_size[1]))
        return coordinates, (tile_size[0], tile_size[1])

    def get_tile_coordinates(self, level: int, address: tuple[int, int]) -> Coordinates:
        """The ``read_region`` arguments ``(location, slide_level, size)`` of a tile."""
        return self._info(level, address)[0]

    def get_tile_dimensions(self, level: int, address: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of a tile, overlap included."""
        return self._info(level, address)[1]

    def get_tile(self, level: int, address: tuple[int, int]) -> Image.Image:
        """A tile as an RGB image.

        Parameters
        ----------
        level
            Deep Zoom level (0 = 1 x 1 pixel).
        address
            ``(column, row)`` of the tile in that level.

        Raises
        ------
        ValueError
            An invalid level or address (as OpenSlide's generator).
        """
        (location, slide_level, size), tile_size = self._info(level, address)
        limits = getattr(self._slide, "limits", None)
        budget = limits if isinstance(limits, SlideLimits) else default_limits()
        if size[0] * size[1] * 4 > budget.region_bytes:
            image = self._large_tile(level, address, location, slide_level, size, tile_size)
            profile = None
        else:
            tile = self._slide.read_region(location, slide_level, size)
            profile = tile.info.get("icc_profile")
            background = Image.new("RGB", tile.size, self._background)
            image = Image.composite(tile, background, tile)
            if image.size != tile_size:
                image.thumbnail(tile_size, Image.Resampling.LANCZOS)
        if profile is None:
            profile = self._icc_profile()
        if profile is not None:
            image.info["icc_profile"] = profile
        return image

    def _large_tile(
        self,
        level: int,
        address: tuple[int, int],
        location: tuple[int, int],
        slide_level: int,
        size: tuple[int, int],
        tile_size: tuple[int, int],
    ) -> Image.Image:
        """A tile whose region is over the region budget, box-reduced in bounded memory.

        Deep Zoom levels coarser than the slide's coarsest level read regions
        as large as the slide (OpenSlide's generator allocates them whole). A
        tilestream :class:`~tilestream.slide.Slide` reduces such a region in
        chunks instead (:meth:`~tilestream.slide.Slide.read_level_resized`,
        box means, never-written tiles not read); anything else raises
        :class:`~tilestream.errors.SlideTooLargeError`.
        """
        slide = self._slide
        resized = getattr(slide, "read_level_resized", None)
        if resized is None:
            budget = default_limits()
            budget.check_region(
                *size, path=None, what=f"Deep Zoom tile {tuple(address)} of level {level} reads"
            )
        assert resized is not None
        ds = self._level_downsamples[slide_level]
        level_w, level_h = slide.level_dimensions[slide_level]
        x = min(max(0, round(location[0] / ds)), level_w - 1)
        y = min(max(0, round(location[1] / ds)), level_h - 1)
        w, h = min(size[0], level_w - x), min(size[1], level_h - y)
        # The size OpenSlide's generator gives: Image.thumbnail of the region.
        final = thumbnail_size((w, h), tile_size)
        mid = thumbnail_source_size((w, h), final)
        image = Image.fromarray(resized(slide_level, mid, rect=(x, y, w, h)), "RGB")
        return image if image.size == final else image.resize(final, Image.Resampling.LANCZOS)

    def _icc_profile(self) -> bytes | None:
        # A tilestream Slide reading stored (unconverted) colours: tag its profile.
        if getattr(self._slide, "_color", "srgb") is None:
            profile = getattr(self._slide, "color_profile", None)
            return profile if isinstance(profile, bytes) else None
        return None

    def get_dzi(self, format: str) -> str:
        """The ``.dzi`` XML document describing the image.

        Parameters
        ----------
        format
            Tile image format, ``"jpeg"`` or ``"png"``.
        """
        image = Element(
            "Image",
            TileSize=str(self._tile),
            Overlap=str(self._overlap),
            Format=format,
            xmlns=_DZI_NAMESPACE,
        )
        width, height = self._slide_dims[0]
        SubElement(image, "Size", Width=str(width), Height=str(height))
        return tostring(image, encoding="unicode")
