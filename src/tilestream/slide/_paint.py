"""Region painting with OpenSlide's semantics, shared by the non-OpenSlide backends.

OpenSlide reads a region at level ``L`` from a level-0 ``location`` by dividing
it by the level's downsample; when that lands between pixels it draws the
stored pixels with cairo's bilinear filter (pixman, 7-bit weights, premultiplied
alpha) and pixels outside the level are transparent. :func:`paint_region`
reproduces that so regions from every backend agree with OpenSlide's.

Examples
--------
>>> import numpy as np
>>> level = np.full((4, 4, 3), 200, np.uint8)
>>> out = paint_region(lambda x, y, w, h: level[y:y + h, x:x + w], (4, 4), 2.0, 2.0, 3, 3)
>>> out.shape, out[0, 0].tolist(), out[2, 2].tolist()
((3, 3, 4), [200, 200, 200, 255], [0, 0, 0, 0])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["ReadFn", "paint_region", "paint_region_rgb", "rgba_to_rgb"]

#: ``read(x, y, w, h)`` -> RGB uint8 array (h, w, 3) of an in-bounds rectangle of one level.
ReadFn = Callable[[int, int, int, int], NDArray[np.uint8]]


def _read_padded(
    read: ReadFn, level_size: tuple[int, int], x0: int, y0: int, w: int, h: int
) -> NDArray[np.uint8]:
    """RGBA (h, w, 4): the level's pixels, transparent black outside it."""
    lw, lh = level_size
    out = np.zeros((h, w, 4), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, lw), min(y0 + h, lh)
    if sx1 > sx0 and sy1 > sy0:
        dst = out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        dst[..., :3] = read(sx0, sy0, sx1 - sx0, sy1 - sy0)
        dst[..., 3] = 255
    return out


def _weight(frac: float) -> int:
    # cairo hands pixman a 16.16 fixed-point translation; pixman's bilinear
    # filter keeps 7 bits of the fraction and widens them to 8.
    fixed = round(frac * 65536)
    return ((fixed >> 9) & 0x7F) << 1


def _bilinear_rgb(src: NDArray[np.uint8], dx: int, dy: int) -> NDArray[np.uint8]:
    """Bilinear blend with 8-bit weights, exactly pixman's ``(sum w * p) >> 16``.

    Done separably without intermediate rounding (the horizontal pass fits in
    uint16, the vertical one in uint32), so the result equals the 2x2 formula.
    """
    if dx:
        horizontal = src[:, :-1].astype(np.uint16) * np.uint16(256 - dx)
        horizontal += src[:, 1:].astype(np.uint16) * np.uint16(dx)
    else:
        horizontal = src.astype(np.uint16) << np.uint16(8)
    if dy:
        vertical = horizontal[:-1].astype(np.uint32) * np.uint32(256 - dy)
        vertical += horizontal[1:].astype(np.uint32) * np.uint32(dy)
    else:
        vertical = horizontal.astype(np.uint32) << np.uint32(8)
    return (vertical >> np.uint32(16)).astype(np.uint8)


def paint_region_rgb(
    read: ReadFn,
    level_size: tuple[int, int],
    x: float,
    y: float,
    w: int,
    h: int,
) -> NDArray[np.uint8] | None:
    """:func:`paint_region` as RGB when every pixel it needs lies inside the level.

    Returns ``None`` when the region (with the extra pixel bilinear sampling
    needs) reaches outside the level, where transparency must be painted.
    """
    x0, y0 = math.floor(x), math.floor(y)
    dx, dy = _weight(x - x0), _weight(y - y0)
    need_w, need_h = w + (1 if dx else 0), h + (1 if dy else 0)
    lw, lh = level_size
    if x0 < 0 or y0 < 0 or x0 + need_w > lw or y0 + need_h > lh or w <= 0 or h <= 0:
        return None
    src = read(x0, y0, need_w, need_h)
    if not dx and not dy:
        return np.ascontiguousarray(src)
    return _bilinear_rgb(src, dx, dy)


def paint_region(
    read: ReadFn,
    level_size: tuple[int, int],
    x: float,
    y: float,
    w: int,
    h: int,
) -> NDArray[np.uint8]:
    """Paint ``(w, h)`` pixels of a level starting at level coordinates ``(x, y)``.

    Parameters
    ----------
    read
        Reads an in-bounds integer rectangle of the level as RGB.
    level_size
        The level's ``(width, height)``.
    x, y
        Top-left corner in the level's pixel frame (may be fractional or negative).
    w, h
        Output size.

    Returns
    -------
    numpy.ndarray
        RGBA uint8 ``(h, w, 4)``, not premultiplied, transparent outside the level.
    """
    inside = paint_region_rgb(read, level_size, x, y, w, h)
    if inside is not None:
        out = np.empty((h, w, 4), np.uint8)
        out[..., :3] = inside
        out[..., 3] = 255
        return out
    x0, y0 = math.floor(x), math.floor(y)
    dx, dy = _weight(x - x0), _weight(y - y0)
    if dx == 0 and dy == 0:
        return _read_padded(read, level_size, x0, y0, w, h)
    src = _read_padded(read, level_size, x0, y0, w + 1, h + 1)
    # Premultiply (alpha is 0 or 255 here, so premultiplied == masked).
    s = src.astype(np.int32)
    dxy = dx * dy
    w_br, w_tr, w_bl = dxy, (dx << 8) - dxy, (dy << 8) - dxy
    w_tl = 65536 - (dy << 8) - (dx << 8) + dxy
    acc = s[:-1, :-1] * w_tl
    if w_tr:
        acc += s[:-1, 1:] * w_tr
    if w_bl:
        acc += s[1:, :-1] * w_bl
    if w_br:
        acc += s[1:, 1:] * w_br
    acc >>= 16
    alpha = acc[..., 3:4]
    if bool((alpha == 255).all()):
        return acc.astype(np.uint8)
    # Un-premultiply as openslide-python does (255 * c // a, truncating).
    rgb = acc[..., :3]
    safe = np.maximum(alpha, 1)
    unpre = np.where(alpha == 255, rgb, np.where(alpha == 0, 0, (rgb * 255) // safe))
    out = np.empty(acc.shape, np.uint8)
    out[..., :3] = np.minimum(unpre, 255)
    out[..., 3] = alpha[..., 0]
    return out


def rgba_to_rgb(rgba: NDArray[np.uint8], background: tuple[int, int, int]) -> NDArray[np.uint8]:
    """Composite non-premultiplied RGBA over a background colour, giving RGB uint8.

    Examples
    --------
    >>> import numpy as np
    >>> px = np.array([[[10, 20, 30, 255], [0, 0, 0, 0]]], np.uint8)
    >>> rgba_to_rgb(px, (255, 255, 255)).tolist()
    [[[10, 20, 30], [255, 255, 255]]]
    """
    alpha = rgba[..., 3]
    if bool((alpha == 255).all()):
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint32)
    bg = np.asarray(background, np.uint32)
    rgb = (rgba[..., :3].astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)
