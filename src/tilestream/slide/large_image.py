"""large_image's vocabulary as methods of a :class:`~tilestream.slide.Slide`.

:class:`LargeImageMethods` is mixed into :class:`~tilestream.slide.Slide`:
``slide.metadata()``, ``slide.region(...)``, ``slide.tiles(...)``... are the
functions of :mod:`tilestream.slide.scales`, :mod:`tilestream.slide.regions`
and :mod:`tilestream.slide.tiling` (all listed in
:mod:`tilestream.slide.magnification`) applied to the slide, with the same
signatures. Those modules only need a :class:`~tilestream.slide.scales.ScalableSlide`,
so none of them imports the slide class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.slide import regions, scales, tiling
from tilestream.slide.scales import Format, Region, Resample, ScalableSlide, Scale

__all__ = ["LargeImageMethods"]

Edge = Literal["crop", "pad", "drop"]
TileSize = int | tuple[int, int] | Mapping[str, int] | None
TileOverlap = int | tuple[int, int] | Mapping[str, Any] | None


class LargeImageMethods:
    """Magnification-aware metadata, regions and tiles (large_image's names)."""

    def metadata(self: ScalableSlide) -> dict[str, Any]:
        """large_image's ``getMetadata``: :func:`tilestream.slide.magnification.metadata`."""
        return scales.metadata(self)

    def native_magnification(self: ScalableSlide) -> dict[str, float | None]:
        """:func:`tilestream.slide.magnification.native_magnification`."""
        return scales.native_magnification(self)

    def magnification_for_level(self: ScalableSlide, level: float | None = None) -> dict[str, Any]:
        """:func:`tilestream.slide.magnification.magnification_for_level`."""
        return scales.magnification_for_level(self, level)

    def level_for_magnification(
        self: ScalableSlide,
        magnification: float | None = None,
        *,
        mm_x: float | None = None,
        mm_y: float | None = None,
        exact: bool = False,
        rounding: Literal["round", "ceil"] | bool | None = "round",
    ) -> int | float | None:
        """:func:`tilestream.slide.magnification.level_for_magnification`."""
        return scales.level_for_magnification(
            self, magnification, mm_x=mm_x, mm_y=mm_y, exact=exact, rounding=rounding
        )

    def region(
        self: ScalableSlide,
        region: Region | None = None,
        *,
        scale: Scale | None = None,
        format: Format = "numpy",
        resample: Resample = "lanczos",
    ) -> NDArray[np.uint8] | Image.Image:
        """large_image's ``getRegion``: :func:`tilestream.slide.magnification.region`."""
        return regions.region(self, region, scale=scale, format=format, resample=resample)

    def convert_region_scale(
        self: ScalableSlide,
        region: Region,
        *,
        source_scale: Scale | None = None,
        target_scale: Scale | None = None,
        target_units: str | None = None,
        crop_to_image: bool = True,
    ) -> dict[str, Any]:
        """:func:`tilestream.slide.magnification.convert_region_scale`."""
        return regions.convert_region_scale(
            self,
            region,
            source_scale=source_scale,
            target_scale=target_scale,
            target_units=target_units,
            crop_to_image=crop_to_image,
        )

    def region_at_another_scale(
        self: ScalableSlide,
        region: Region,
        *,
        source_scale: Scale | None = None,
        target_scale: Scale | None = None,
        target_units: str | None = None,
        format: Format = "numpy",
        resample: Resample = "lanczos",
    ) -> NDArray[np.uint8] | Image.Image:
        """:func:`tilestream.slide.magnification.region_at_another_scale`."""
        return regions.region_at_another_scale(
            self,
            region,
            source_scale=source_scale,
            target_scale=target_scale,
            target_units=target_units,
            format=format,
            resample=resample,
        )

    def tiles(
        self: ScalableSlide,
        *,
        region: Region | None = None,
        scale: Scale | None = None,
        tile_size: TileSize = None,
        tile_overlap: TileOverlap = None,
        format: Format = "numpy",
        resample: Resample = "lanczos",
        edge: Edge = "crop",
    ) -> tiling.TileIterator:
        """large_image's ``tileIterator``: :func:`tilestream.slide.tiling.tiles`."""
        return tiling.tiles(
            self,
            region=region,
            scale=scale,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            format=format,
            resample=resample,
            edge=edge,
        )

    def single_tile(
        self: ScalableSlide,
        tile_position: int | Mapping[str, int],
        *,
        region: Region | None = None,
        scale: Scale | None = None,
        tile_size: TileSize = None,
        tile_overlap: TileOverlap = None,
        format: Format = "numpy",
        resample: Resample = "lanczos",
        edge: Edge = "crop",
    ) -> tiling.TileDict:
        """large_image's ``getSingleTile``: :func:`tilestream.slide.tiling.single_tile`."""
        return tiling.single_tile(
            self,
            tile_position,
            region=region,
            scale=scale,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            format=format,
            resample=resample,
            edge=edge,
        )
