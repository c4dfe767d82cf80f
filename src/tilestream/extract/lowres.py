"""A low-resolution RGB image of a whole slide, read in strips (bounded memory).

The image is what tissue detection, background filters, ROI masks and
previews work on. It is read from the coarsest pyramid level that is still at
least as fine as wanted, strip by strip, each strip resized with antialiasing,
so a level is never held in memory whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.extract.grid import choose_level
from tilestream.slide import Slide

__all__ = ["LowRes", "mask_downsample", "read_lowres"]

#: Bytes of level pixels held at once while reading a low-resolution image.
STRIP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LowRes:
    """A low-resolution image and its scale: one pixel is ``downsample`` level-0 pixels."""

    image: NDArray[np.uint8]
    downsample: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        h, w = self.image.shape[:2]
        return h, w


def mask_downsample(
    dimensions: tuple[int, int],
    extract_px: int,
    *,
    px_per_tile: int = 16,
    preview_side: int = 1200,
    max_side: int = 8192,
) -> float:
    """Scale of the low-resolution image: fine enough for masks and previews, capped in size.

    At least ``px_per_tile`` mask pixels per tile side and at least
    ``preview_side`` pixels on the slide's longer side (for previews), but
    never more than ``max_side`` pixels on the longer side.

    >>> mask_downsample((40000, 40000), 256)
    16.0
    >>> mask_downsample((2220, 2967), 256)
    2.4725
    >>> mask_downsample((200000, 100000), 256)
    24.4140625
    """
    ds = min(extract_px / px_per_tile, max(dimensions) / preview_side)
    return max(1.0, ds, max(dimensions) / max_side)


def read_lowres(slide: Slide, downsample: float) -> LowRes:
    """Read the whole slide at about ``downsample`` (level-0 pixels per output pixel).

    The result's :attr:`LowRes.downsample` is the scale actually used.
    """
    width, height = slide.dimensions
    # A stored level up to 1.5x coarser or finer than asked is used as it is:
    # reading a level is much cheaper than reading a finer one and shrinking it.
    level = choose_level(slide.level_downsamples, downsample * 1.5)
    lw, lh = slide.level_dimensions[level]
    if slide.level_downsamples[level] >= downsample / 1.5:
        out_w, out_h = lw, lh
    else:
        out_w = max(1, math.ceil(width / downsample))
        out_h = max(1, math.ceil(height / downsample))
    # Level rows per output row, and level-0 rows per level row.
    ratio = lh / out_h
    level_ds_y = height / lh
    rows_per_strip = max(1, int(STRIP_BYTES // max(1, lw * 4 * ratio)))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for ty0 in range(0, out_h, rows_per_strip):
        ty1 = min(out_h, ty0 + rows_per_strip)
        ly0 = math.floor(ty0 * ratio)
        ly1 = min(lh, max(ly0 + 1, math.ceil(ty1 * ratio)))
        y0_base = round(ly0 * level_ds_y)
        strip = slide.read_region((0, y0_base), level, (lw, ly1 - ly0), as_array=True)
        if strip.shape[1] == out_w and strip.shape[0] == ty1 - ty0:
            out[ty0:ty1] = strip
        else:
            img = Image.fromarray(np.ascontiguousarray(strip))
            out[ty0:ty1] = np.asarray(
                img.resize((out_w, ty1 - ty0), Image.Resampling.BOX), dtype=np.uint8
            )
    return LowRes(image=out, downsample=width / out_w)
