"""Deep Zoom tiles as JPEG bytes, fast: OpenSlide's geometry, tilestream's fast read path.

:class:`TileRenderer` answers the tile requests of a Deep Zoom viewer. The
geometry (levels, tile grid, overlap, the region each tile covers) is
:class:`tilestream.slide.DeepZoomGenerator`'s, itself identical to
``openslide.deepzoom``. The pixels come from the slide layer's fast path
(``read_region(..., as_array=True)``: RGB straight from the decoded-tile cache,
the background already filled in) and are encoded by libjpeg-turbo
(``simplejpeg``). Three things make it fast:

- no RGBA round trip and no compositing (``as_array=True``);
- the coarse Deep Zoom levels (up to :data:`LEVEL_IMAGE_PIXELS` pixels each)
  are rendered once as whole images, each from the next finer one by a 2x
  reduction, and their tiles are crops: the whole-slide read that every coarse
  tile of ``openslide.deepzoom`` repeats is done once per slide;
- encoded tiles are kept in a small LRU (:class:`BytesLRU`), so panning back
  costs nothing.

A tile reduced 2x, 4x or 8x from a finer slide level storing plain JPEG tiles
is the slide layer's reduced read with scaled decoding
(:meth:`tilestream.slide.Slide.read_region_reduced`, ``scaled_decoding=True``):
the stored tiles decoded at that scale in the DCT by libjpeg-turbo, kept by the
slide handle, no full decode, no reduction. Otherwise the region is read whole
(its stored tiles decoded once, kept in the handle's cache for the next finer
level) and a reduction by an exact integer factor is a box filter (area
averaging, as libvips builds Deep Zoom pyramids, several times cheaper than
Lanczos); any other factor is Lanczos, as OpenSlide's generator. Pixels
therefore equal OpenSlide's on the levels read 1:1 and are close to a
box-filtered version of OpenSlide's region elsewhere.

Examples
--------
>>> from tilestream.extract import demo_slide_path
>>> from tilestream.viewer.pool import SlidePool
>>> renderer = TileRenderer(SlidePool(demo_slide_path()))
>>> renderer.level_count, renderer.level_tiles[-1]
(13, (9, 12))
>>> renderer.tile(12, 0, 0)[:3] == b"\\xff\\xd8\\xff"
True
>>> renderer.tile(12, 9, 0)
Traceback (most recent call last):
...
tilestream.viewer.render.TileNotFound: Invalid address (9, 0) for level 12 (9 x 12)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from tilestream._util.lru import LRU
from tilestream.slide import DeepZoomGenerator, Slide
from tilestream.viewer.pool import SlidePool

__all__ = [
    "LEVEL_IMAGE_PIXELS",
    "MAX_SOURCE_PIXELS",
    "MAX_TILE_SOURCE_PIXELS",
    "BytesLRU",
    "TileNotFound",
    "TileRenderer",
]

#: Deep Zoom levels up to this many pixels are rendered once, whole, and cropped.
LEVEL_IMAGE_PIXELS = 2048 * 2048

#: Largest slide-level region read in one piece to render a whole Deep Zoom level.
MAX_SOURCE_PIXELS = 16 * 1024 * 1024

#: Largest slide-level region one tile is rendered from; past it the tile is refused
#: (a slide without a pyramid level near the tile's scale).
MAX_TILE_SOURCE_PIXELS = 256 * 1024 * 1024

#: A tile's region larger than :data:`MAX_SOURCE_PIXELS` is read in blocks of at
#: most this many pixels, each box-reduced at once: memory stays small.
READ_BLOCK_PIXELS = 4 * 1024 * 1024


class TileNotFound(LookupError):
    """A tile level or address outside the Deep Zoom pyramid (HTTP 404)."""


class BytesLRU(LRU[Hashable, bytes]):
    """A thread-safe LRU of byte strings bounded in total bytes (:class:`~tilestream._util.lru.LRU`).

    >>> lru = BytesLRU(max_bytes=5)
    >>> lru.put("a", b"abc"), lru.put("b", b"de"), lru.put("c", b"f")
    (True, True, True)
    >>> lru.get("a"), lru.get("c"), lru.nbytes
    (None, b'f', 3)
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes=max_bytes, sizeof=len)


class TileRenderer:
    """JPEG Deep Zoom tiles of one slide, safe to call from many threads.

    Parameters
    ----------
    pool
        Handles of the slide (one per thread at a time).
    tile_size, overlap, limit_bounds
        As :class:`tilestream.slide.DeepZoomGenerator`.
    quality
        JPEG quality of the tiles.
    cache
        Encoded tiles to reuse (shared between renderers; keys include the slide path).
    level_image_pixels
        Deep Zoom levels up to this size are rendered whole once and cropped (0: never).
    scaled_decoding
        Read tiles reduced 2x, 4x or 8x from a finer slide level by decoding its
        stored JPEG tiles at that scale (``scaled_decoding`` of
        :meth:`~tilestream.slide.Slide.read_region_reduced`).
    """

    def __init__(
        self,
        pool: SlidePool,
        tile_size: int = 254,
        overlap: int = 1,
        *,
        limit_bounds: bool = False,
        quality: int = 80,
        cache: BytesLRU | None = None,
        level_image_pixels: int = LEVEL_IMAGE_PIXELS,
        scaled_decoding: bool = True,
    ) -> None:
        self.pool = pool
        self.quality = quality
        with pool.handle() as slide:
            self.dz = DeepZoomGenerator(
                slide, tile_size=tile_size, overlap=overlap, limit_bounds=limit_bounds
            )
            self._downsamples = tuple(slide.level_downsamples)
            # the slide levels storing plain JPEG tiles: reductions there are decoded at scale
            jpeg = [i for i in range(slide.level_count) if slide.stored_tile_grid(i) is not None]
        self._scaled_levels = frozenset(jpeg if scaled_decoding else ())
        self.tile_size = tile_size
        self.overlap = overlap
        self._cache = cache
        self._key = (str(pool.path), tile_size, overlap, limit_bounds, quality)
        self._level_images: dict[int, NDArray[np.uint8]] = {}
        self._level_lock = threading.Lock()
        self._whole = self._whole_levels(level_image_pixels)

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels."""
        return self.dz.level_count

    @property
    def level_tiles(self) -> tuple[tuple[int, int], ...]:
        """``(columns, rows)`` of each Deep Zoom level."""
        return self.dz.level_tiles

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of the full-resolution Deep Zoom level."""
        return self.dz.level_dimensions[-1]

    def dzi(self) -> str:
        """The ``.dzi`` XML document (JPEG tiles)."""
        return self.dz.get_dzi("jpeg")

    def _whole_levels(self, budget: int) -> frozenset[int]:
        # The coarse levels up to the finest one within the budget whose source (the
        # slide level region it is read from, in one piece) is small enough; the
        # coarser ones are 2x reductions of it.
        top = -1
        for level, (w, h) in enumerate(self.dz.level_dimensions):
            if w * h > budget:
                break
            (_, slide_level, _) = self.dz.get_tile_coordinates(level, (0, 0))
            sw, sh = self._source_size(level, slide_level)
            if sw * sh <= MAX_SOURCE_PIXELS:
                top = level
        return frozenset(range(top + 1))

    def _source_size(self, level: int, slide_level: int) -> tuple[int, int]:
        # Pixels of the slide level covering the whole Deep Zoom level.
        w, h = self.dz.level_dimensions[level]
        scale = (2 ** (self.dz.level_count - 1 - level)) / self._downsamples[slide_level]
        return max(1, round(w * scale)), max(1, round(h * scale))

    def check(self, level: int, col: int, row: int) -> None:
        """Raise :class:`TileNotFound` unless ``(col, row)`` of ``level`` exists."""
        if not 0 <= level < self.dz.level_count:
            raise TileNotFound(f"Invalid level {level}: the pyramid has {self.dz.level_count}")
        cols, rows = self.dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFound(
                f"Invalid address ({col}, {row}) for level {level} ({cols} x {rows})"
            )

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of tile ``(col, row)`` of Deep Zoom ``level``.

        Raises
        ------
        TileNotFound
            When the level or address is outside the pyramid.
        tilestream.errors.SlideError
            When the slide cannot be read.
        """
        self.check(level, col, row)
        key = (*self._key, level, col, row)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        data = simplejpeg.encode_jpeg(
            np.ascontiguousarray(self.tile_array(level, col, row)),
            quality=self.quality,
            colorspace="RGB",
        )
        if self._cache is not None:
            self._cache.put(key, data)
        return data

    def tile_array(self, level: int, col: int, row: int) -> NDArray[np.uint8]:
        """Tile ``(col, row)`` of ``level`` as an RGB array ``(h, w, 3)``."""
        self.check(level, col, row)
        tw, th = self.dz.get_tile_dimensions(level, (col, row))
        if level in self._whole:
            image = self._level_image(level)
            x0 = max(0, col * self.tile_size - self.overlap)
            y0 = max(0, row * self.tile_size - self.overlap)
            return image[y0 : y0 + th, x0 : x0 + tw]
        location, slide_level, size = self.dz.get_tile_coordinates(level, (col, row))
        pixels = size[0] * size[1]
        if pixels > MAX_TILE_SOURCE_PIXELS:
            raise TileNotFound(
                f"tile {level}/{col}_{row} would be rendered from {size[0]} x {size[1]} pixels "
                f"of slide level {slide_level} (more than {MAX_TILE_SOURCE_PIXELS}): the slide "
                "has no pyramid level near this scale"
            )
        k = size[0] // tw
        with self.pool.handle() as slide:
            if pixels > MAX_SOURCE_PIXELS:
                arr = _read_reduced(slide, location, slide_level, size, (tw, th))
            elif k in (2, 4, 8) and size == (k * tw, k * th) and slide_level in self._scaled_levels:
                return slide.read_region_reduced(
                    location, slide_level, (tw, th), k, scaled_decoding=True
                )
            else:
                arr = slide.read_region(location, slide_level, size, as_array=True)
        return _fit(arr, (tw, th))

    def _level_image(self, level: int) -> NDArray[np.uint8]:
        image = self._level_images.get(level)
        if image is not None:
            return image
        with self._level_lock:
            return self._level_image_locked(level)

    def _level_image_locked(self, level: int) -> NDArray[np.uint8]:
        image = self._level_images.get(level)
        if image is not None:
            return image
        w, h = self.dz.level_dimensions[level]
        if level + 1 in self._whole:
            finer = self._level_image_locked(level + 1)
            # exactly 2x (the odd edge padded)
            fh, fw = finer.shape[:2]
            padded = np.pad(finer, ((0, 2 * h - fh), (0, 2 * w - fw), (0, 0)), mode="edge")
            image = _fit(padded, (w, h))
        else:
            (location, slide_level, _) = self.dz.get_tile_coordinates(level, (0, 0))
            size = self._source_size(level, slide_level)
            # the exact scale of the Deep Zoom level; past the level's edge, background
            with self.pool.handle() as slide:
                lw, lh = slide.level_dimensions[slide_level]
                ds = slide.level_downsamples[slide_level]
                rw = max(1, min(size[0], lw - int(location[0] / ds)))
                rh = max(1, min(size[1], lh - int(location[1] / ds)))
                arr = slide.read_region(location, slide_level, (rw, rh), as_array=True)
                if (rw, rh) != size:
                    canvas = np.empty((size[1], size[0], 3), np.uint8)
                    canvas[:] = slide.background_color
                    canvas[:rh, :rw] = arr
                    arr = canvas
            image = _fit(arr, (w, h))
        self._level_images[level] = image
        return image


def _read_reduced(
    slide: Slide,
    location: tuple[int, int],
    level: int,
    size: tuple[int, int],
    tile: tuple[int, int],
) -> NDArray[np.uint8]:
    """``size`` pixels of ``level`` at ``location``, box-reduced by an integer factor.

    Read in blocks of at most :data:`READ_BLOCK_PIXELS`, each reduced at once, so
    memory holds one block and the (at least ``tile``-sized) result, never the region.
    """
    f = max(1, min(size[0] // tile[0], size[1] // tile[1], 1024))
    side = max(f, math.isqrt(READ_BLOCK_PIXELS) // f * f)
    ds = slide.level_downsamples[level]
    out = np.empty((-(-size[1] // f), -(-size[0] // f), 3), np.uint8)
    for y in range(0, size[1], side):
        for x in range(0, size[0], side):
            w, h = min(side, size[0] - x), min(side, size[1] - y)
            at = (location[0] + round(x * ds), location[1] + round(y * ds))
            block = slide.read_region(at, level, (w, h), as_array=True)
            small = np.asarray(Image.fromarray(np.ascontiguousarray(block)).reduce(f))
            out[y // f : y // f + small.shape[0], x // f : x // f + small.shape[1]] = small
    return out


def _fit(arr: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """``arr`` at ``size``: as it is, cropped or edge-padded by a pixel, or reduced.

    An exact integer reduction is a box filter (``Image.reduce``: area
    averaging, as libvips builds Deep Zoom pyramids), anything else Lanczos.
    """
    w, h = size
    ah, aw = arr.shape[:2]
    if (aw, ah) == (w, h):
        return arr
    if abs(aw - w) <= 1 and abs(ah - h) <= 1:
        # a level 1:1 with the Deep Zoom level but for rounding at the edge
        arr = arr[:h, :w]
        pad = ((0, h - arr.shape[0]), (0, w - arr.shape[1]), (0, 0))
        return np.pad(arr, pad, mode="edge") if any(p[1] for p in pad) else arr
    image = Image.fromarray(np.ascontiguousarray(arr))
    factor = aw // w
    if factor >= 2 and aw == factor * w and ah == factor * h:
        return np.asarray(image.reduce(factor))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
