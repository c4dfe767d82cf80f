"""Regions reduced by 2, 4 or 8 straight from stored JPEG tiles, decoded at that scale.

A Deep Zoom level with no slide level of its own is read from a finer slide
level and reduced. When that level stores plain JPEG tiles (the slide layer's
``stored_tile_grid``/``read_stored_tile_bytes``), libjpeg-turbo can decode each
stored tile directly at 1/2, 1/4 or 1/8 scale in the DCT (``simplejpeg``'s
scaled decoding): cheaper than a full decode, and no reduction afterwards.
:class:`ScaledTiles` assembles such regions from scaled tiles kept in a small
LRU; it answers ``None`` whenever the region does not fit the stored grid
exactly (misaligned, past the level's edge, another codec), and the caller reads
the region the ordinary way.

Examples
--------
>>> from tilestream.extract import demo_slide_path
>>> from tilestream.viewer.pool import SlidePool
>>> pool = SlidePool(demo_slide_path())
>>> scaled = ScaledTiles(pool)
>>> scaled.region(0, (480, 480), 2, (240, 240)).shape
(240, 240, 3)
>>> scaled.region(0, (481, 480), 2, (240, 240)) is None  # not on the 2x grid
True
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import simplejpeg
from numpy.typing import NDArray

from tilestream.errors import TileStreamError
from tilestream.viewer.pool import SlidePool

__all__ = ["ScaledTiles"]

#: Budget of the scaled decoded tiles kept per slide.
SCALED_CACHE_BYTES = 48 * 1024 * 1024


class ScaledTiles:
    """Regions of a slide level reduced ``k`` times from stored JPEG tiles (thread-safe).

    Parameters
    ----------
    pool
        Handles of the slide.
    max_bytes
        Budget of the decoded scaled tiles kept (LRU).
    """

    def __init__(self, pool: SlidePool, *, max_bytes: int = SCALED_CACHE_BYTES) -> None:
        self.pool = pool
        self.max_bytes = max_bytes
        with pool.handle() as slide:
            self._grids = tuple(slide.stored_tile_grid(i) for i in range(slide.level_count))
            self._dims = tuple(slide.level_dimensions)
            self._downsamples = tuple(slide.level_downsamples)
        self._cache: OrderedDict[tuple[int, int, int, int], NDArray[np.uint8]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def region(
        self, level: int, location: tuple[int, int], k: int, size: tuple[int, int]
    ) -> NDArray[np.uint8] | None:
        """``size`` pixels of ``level`` reduced ``k`` times from level-0 ``location``, or ``None``.

        ``None`` when the level has no stored JPEG tiles, ``k`` is not 2, 4 or
        8, the region is not on the ``k`` grid of the stored tiles or reaches
        past the level's edge.
        """
        grid = self._grids[level] if 0 <= level < len(self._grids) else None
        if grid is None or k not in (2, 4, 8):
            return None
        gw, gh = grid
        ds = self._downsamples[level]
        lx, ly = location[0] / ds, location[1] / ds
        if lx != int(lx) or ly != int(ly):
            return None
        lx, ly = int(lx), int(ly)
        w, h = size
        lw, lh = self._dims[level]
        if lx % k or ly % k or gw % k or gh % k or lx < 0 or ly < 0:
            return None
        if lx + w * k > lw or ly + h * k > lh:
            return None
        sw, sh = gw // k, gh // k
        out = np.empty((h, w, 3), np.uint8)
        cols = range(lx // gw, (lx + w * k - 1) // gw + 1)
        rows = range(ly // gh, (ly + h * k - 1) // gh + 1)
        for r in rows:
            for c in cols:
                small = self._tile(level, c, r, k, (sw, sh))
                if small is None:
                    return None
                ox, oy = (c * gw - lx) // k, (r * gh - ly) // k
                x0, x1 = max(0, ox), min(w, ox + sw)
                y0, y1 = max(0, oy), min(h, oy + sh)
                out[y0:y1, x0:x1] = small[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return out

    def _tile(
        self, level: int, col: int, row: int, k: int, size: tuple[int, int]
    ) -> NDArray[np.uint8] | None:
        key = (level, col, row, k)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            with self.pool.handle() as slide:
                data = slide.read_stored_tile_bytes(level, col, row)
            arr = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_width=size[0], min_height=size[1]
            )
        except (TileStreamError, ValueError, RuntimeError, IndexError):
            return None  # the ordinary read reports what is wrong
        if arr.shape != (size[1], size[0], 3):
            return None
        with self._lock:
            if key not in self._cache:
                self._cache[key] = arr
                self._nbytes += arr.nbytes
                while self._nbytes > self.max_bytes and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._nbytes -= dropped.nbytes
        return arr
