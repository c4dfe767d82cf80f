"""Tiles of a region at any magnification, in large_image's vocabulary.

:func:`tiles` is large_image's ``tileIterator`` and :func:`single_tile` its
``getSingleTile``, over a :class:`~tilestream.slide.Slide` (also available as
``slide.tiles(...)`` and ``slide.single_tile(...)``). Regions, scales, levels
and the pixel semantics are those of :mod:`tilestream.slide.magnification`:
tiles are crops of the slide's image at the requested scale, read from the
best pyramid level and resized with antialiasing, so they join without seams.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.slide import open_slide
>>> from tilestream.testing.synthetic import make_synthetic_slide
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.svs"
>>> _ = make_synthetic_slide(path, width=2000, height=1500, levels=2, mpp=0.5)
>>> with open_slide(path) as slide:
...     grid = tiles(slide, scale={"magnification": 10}, tile_size=256, tile_overlap=16)
...     tile = next(iter(grid))
...     print(len(grid), tile["x"], tile["gwidth"], tile["magnification"], tile.loaded)
...     print(tile["tile"].shape, tile.loaded)
20 0 512.0 10.0 False
(256, 256, 3) True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import ConfigError
from tilestream.slide.regions import as_format, output_box, read_scaled, resample_filter
from tilestream.slide.scales import (
    Format,
    Region,
    Resample,
    ScalableSlide,
    Scale,
    metadata,
    native_magnification,
    scale_factor,
    slide_level,
)

__all__ = ["TileDict", "TileIterator", "single_tile", "tiles"]


class _Pending:
    def __repr__(self) -> str:
        return "<not decoded yet>"


_PENDING = _Pending()


class TileDict(dict[str, Any]):
    """A tile's description; its pixels (``tile``) are read on first access."""

    def __init__(self, data: Mapping[str, Any], loader: Callable[[], Any]) -> None:
        super().__init__(data)
        super().__setitem__("tile", _PENDING)
        self._loader = loader

    @property
    def loaded(self) -> bool:
        """Whether the pixels have been read."""
        return dict.__getitem__(self, "tile") is not _PENDING

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if value is _PENDING:
            value = self._loader()
            dict.__setitem__(self, key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:  # routes dict(tile) through __getitem__
        return iter(list(self.keys()))

    def values(self) -> Any:
        return [self[k] for k in self.keys()]

    def items(self) -> Any:
        return [(k, self[k]) for k in self.keys()]


def _pair(
    value: Any, name: str, keys: tuple[str, str], default: tuple[int, int]
) -> tuple[int, int]:
    if value is None:
        return default
    if isinstance(value, Mapping):
        a = value.get(keys[0], value.get(keys[1], default[0]))
        b = value.get(keys[1], value.get(keys[0], default[1]))
    elif isinstance(value, (int, float)):
        a = b = value
    else:
        a, b = value
    if int(a) != a or int(b) != b or a < 0 or b < 0:
        raise ConfigError(f"{name} must be non-negative integers, not {value!r}")
    return int(a), int(b)


class TileIterator:
    """Tiles of a region at a scale, row by row; ``len()`` is the tile count.

    Made by :func:`tiles`; ``info`` describes the grid: ``region`` (output
    pixels ``left, top, right, bottom``), ``scale``, ``slide_level``,
    ``tile_size``, ``tile_overlap``, ``columns``, ``rows``, ``tile_count``.
    """

    def __init__(
        self,
        slide: ScalableSlide,
        *,
        region: Region | None,
        scale: Scale | None,
        tile_size: int | tuple[int, int] | Mapping[str, int] | None,
        tile_overlap: int | tuple[int, int] | Mapping[str, Any] | None,
        format: Format,
        resample: Resample,
        edge: Literal["crop", "pad", "drop"],
    ) -> None:
        if format not in ("numpy", "pil"):
            raise ConfigError(f"format must be 'numpy' or 'pil', not {format!r}")
        if edge not in ("crop", "pad", "drop"):
            raise ConfigError(f"edge must be 'crop', 'pad' or 'drop', not {edge!r}")
        resample_filter(resample)
        self.slide = slide
        self.format = format
        self.resample = resample
        self.edge = edge
        self.s = s = scale_factor(slide, scale)
        self.box = x0, y0, x1, y1 = output_box(slide, region, s)
        meta = metadata(slide)
        self.tile_size = tw, th = _pair(
            tile_size, "tile_size", ("width", "height"), (meta["tileWidth"], meta["tileHeight"])
        )
        self.overlap = ox, oy = _pair(tile_overlap, "tile_overlap", ("x", "y"), (0, 0))
        if tw < 1 or th < 1 or ox >= tw or oy >= th:
            raise ConfigError(
                f"tile_overlap {self.overlap} must be smaller than tile_size {self.tile_size}"
            )
        self.stride = (tw - ox, th - oy)
        self.columns = self._count(x1 - x0, tw, tw - ox)
        self.rows = self._count(y1 - y0, th, th - oy)
        self.slide_level = slide_level(slide, s)
        levels = meta["levels"]
        fractional = levels - 1 - math.log2(s)
        self.level: float = (
            round(fractional)
            if abs(fractional - round(fractional)) < 1e-4
            else (round(fractional, 4))
        )
        native = native_magnification(slide)
        self.magnification = native["magnification"] / s if native["magnification"] else None
        self.mm = (
            native["mm_x"] * s if native["mm_x"] else None,
            native["mm_y"] * s if native["mm_y"] else None,
        )
        self.info = {
            "region": {"left": x0, "top": y0, "right": x1, "bottom": y1},
            "scale": s,
            "slide_level": self.slide_level,
            "tile_size": self.tile_size,
            "tile_overlap": self.overlap,
            "columns": self.columns,
            "rows": self.rows,
            "tile_count": self.columns * self.rows,
        }
        self._position = 0

    def _count(self, extent: int, size: int, stride: int) -> int:
        if self.edge == "drop":
            return 0 if extent < size else (extent - size) // stride + 1
        return 1 if extent <= size else math.ceil((extent - size) / stride) + 1

    def __len__(self) -> int:
        return self.columns * self.rows

    def __iter__(self) -> TileIterator:
        return self

    def __next__(self) -> TileDict:
        if self._position >= len(self):
            raise StopIteration
        self._position += 1
        return self.tile(self._position - 1)

    def tile(self, position: int) -> TileDict:
        """The tile at ``position`` (row-major, 0-based)."""
        if not 0 <= position < len(self):
            raise IndexError(f"tile position {position} out of range: the grid has {len(self)}")
        col, row = position % self.columns, position // self.columns
        x0, y0, x1, y1 = self.box
        tw, th = self.tile_size
        x, y = x0 + col * self.stride[0], y0 + row * self.stride[1]
        width, height = min(tw, x1 - x), min(th, y1 - y)
        overlap = {
            "left": self.overlap[0] if col > 0 else 0,
            "top": self.overlap[1] if row > 0 else 0,
            "right": max(0, width - self.stride[0]) if col < self.columns - 1 else 0,
            "bottom": max(0, height - self.stride[1]) if row < self.rows - 1 else 0,
        }
        s = self.s
        data = {
            "x": x,
            "y": y,
            "width": tw if self.edge == "pad" else width,
            "height": th if self.edge == "pad" else height,
            "level": self.level,
            "slide_level": self.slide_level,
            "magnification": self.magnification,
            "mm_x": self.mm[0],
            "mm_y": self.mm[1],
            "scale": s,
            "gx": x * s,
            "gy": y * s,
            "gwidth": width * s,
            "gheight": height * s,
            "tile_position": {"region_x": col, "region_y": row, "position": position},
            "iterator_range": {
                "region_x_max": self.columns,
                "region_y_max": self.rows,
                "position": len(self),
            },
            "tile_overlap": overlap,
            "format": self.format,
        }
        box = (x, y, x + width, y + height)
        return TileDict(data, lambda: self._read(box))

    def _read(self, box: tuple[int, int, int, int]) -> NDArray[np.uint8] | Image.Image:
        pixels = read_scaled(
            self.slide, box, self.s, resample=self.resample, level=self.slide_level
        )
        tw, th = self.tile_size
        if self.edge == "pad" and pixels.shape[:2] != (th, tw):
            padded = np.empty((th, tw, 3), np.uint8)
            padded[...] = self.slide.background_color
            padded[: pixels.shape[0], : pixels.shape[1]] = pixels
            pixels = padded
        return as_format(pixels, self.format)


def tiles(
    slide: ScalableSlide,
    *,
    region: Region | None = None,
    scale: Scale | None = None,
    tile_size: int | tuple[int, int] | Mapping[str, int] | None = None,
    tile_overlap: int | tuple[int, int] | Mapping[str, Any] | None = None,
    format: Format = "numpy",
    resample: Resample = "lanczos",
    edge: Literal["crop", "pad", "drop"] = "crop",
) -> TileIterator:
    """Iterate over the tiles of a region at a magnification, row by row.

    Parameters
    ----------
    slide
        The slide.
    region
        The region to cover (module notes); ``None`` for the whole slide.
    scale
        Output scale, e.g. ``{"magnification": 10}``; ``None`` for full resolution.
    tile_size
        Tile size in output pixels: an int, ``(width, height)`` or
        ``{"width": .., "height": ..}``; by default the stored tile size.
    tile_overlap
        Pixels shared by neighbouring tiles (int, ``(x, y)`` or ``{"x": .., "y": ..}``):
        tiles are ``tile_size`` wide and ``tile_size - overlap`` apart.
    format
        ``"numpy"`` or ``"pil"`` for each tile's ``tile``.
    resample
        Resize filter (see :func:`region`).
    edge
        Tiles reaching past the region's right or bottom edge are ``"crop"``-ped
        (smaller, as large_image does), ``"pad"``-ded to full size with the
        slide's background colour, or ``"drop"``-ped.

    Returns
    -------
    TileIterator
        Yields :class:`TileDict` with ``x``, ``y``, ``width``, ``height``
        (output pixels at the scale), ``level`` (large_image level, fractional
        between power-of-two levels), ``slide_level`` (pyramid level read),
        ``magnification``, ``mm_x``, ``mm_y``, ``scale``, ``gx``, ``gy``,
        ``gwidth``, ``gheight`` (level-0 pixels), ``tile_position``
        (``region_x``, ``region_y``, ``position``), ``iterator_range``,
        ``tile_overlap`` (``left``, ``top``, ``right``, ``bottom``), ``format``
        and ``tile``, the pixels, read only when first accessed. Tiles are
        crops of the slide's image at that scale (see the module notes).
    """
    return TileIterator(
        slide,
        region=region,
        scale=scale,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        format=format,
        resample=resample,
        edge=edge,
    )


def single_tile(
    slide: ScalableSlide,
    tile_position: int | Mapping[str, int],
    *,
    region: Region | None = None,
    scale: Scale | None = None,
    tile_size: int | tuple[int, int] | Mapping[str, int] | None = None,
    tile_overlap: int | tuple[int, int] | Mapping[str, Any] | None = None,
    format: Format = "numpy",
    resample: Resample = "lanczos",
    edge: Literal["crop", "pad", "drop"] = "crop",
) -> TileDict:
    """One tile of :func:`tiles` (same keyword arguments), without iterating.

    ``tile_position`` is the 0-based position in the iteration, or a mapping
    with ``position`` or with ``region_x`` and ``region_y``.

    Raises
    ------
    IndexError
        The position is outside the tile grid.
    """
    grid = tiles(
        slide,
        region=region,
        scale=scale,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        format=format,
        resample=resample,
        edge=edge,
    )
    if isinstance(tile_position, Mapping):
        if tile_position.get("position") is not None:
            position = int(tile_position["position"])
        elif "region_x" in tile_position and "region_y" in tile_position:
            col, row = int(tile_position["region_x"]), int(tile_position["region_y"])
            if not (0 <= col < grid.columns and 0 <= row < grid.rows):
                raise IndexError(
                    f"tile ({col}, {row}) out of range: the grid is "
                    f"{grid.columns} x {grid.rows} tiles"
                )
            position = row * grid.columns + col
        else:
            raise ConfigError(
                "tile_position must be an int or a mapping with 'position' "
                f"or 'region_x' and 'region_y', not {tile_position!r}"
            )
    else:
        position = int(tile_position)
    return grid.tile(position)
