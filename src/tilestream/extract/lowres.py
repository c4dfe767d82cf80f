"""A low-resolution RGB image of a whole slide, read in chunks (bounded memory).

The image is what tissue detection, background filters, ROI masks and
previews work on. It is read from the coarsest pyramid level that is still at
least as fine as wanted, chunk by chunk, shrunk by box means, so a level is
never held in memory whole and a sparse file's never-written tiles are not
read (:meth:`tilestream.slide.Slide.read_level_resized`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tilestream.extract.grid import choose_level
from tilestream.slide import Slide

__all__ = ["LowRes", "mask_downsample", "read_lowres"]


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

    The result's :attr:`LowRes.downsample` is the scale actually used. The level
    is read through :meth:`~tilestream.slide.Slide.read_level_resized`: in
    chunks of bounded size (memory is the image plus a few tens of MiB), box
    means, and stored tiles that were never written (a sparse file) not read,
    so the time follows the tiles the file holds, not the area it declares.
    An image over the slide's region budget raises
    :class:`~tilestream.errors.SlideTooLargeError` before it is allocated
    (:func:`mask_downsample` caps it at 8192 px a side, 192 MiB, within the
    default budget).
    """
    width, height = slide.dimensions
    # A stored level up to 1.5x coarser or finer than asked is used as it is:
    # reading a level is much cheaper than reading a finer one and shrinking it.
    level = choose_level(slide.level_downsamples, downsample * 1.5)
    lw, lh = slide.level_dimensions[level]
    if slide.level_downsamples[level] >= downsample / 1.5:
        out_w, out_h = lw, lh
    else:
        out_w = min(lw, max(1, math.ceil(width / downsample)))
        out_h = min(lh, max(1, math.ceil(height / downsample)))
    image = slide.read_level_resized(level, (out_w, out_h))
    return LowRes(image=image, downsample=width / out_w)
