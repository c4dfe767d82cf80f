"""Tissue detection and per-tile background filters, vectorised over the grid.

Everything here works on a low-resolution RGB image of the whole slide (a few
mask pixels per tile): per-pixel masks are computed once, and each tile's
fractions are read from summed-area tables in one vectorised step, never in a
Python loop over tiles.

Examples
--------
>>> import numpy as np
>>> img = np.full((8, 8, 3), 240, np.uint8)
>>> img[:4, :4] = (200, 60, 120)          # a "tissue" quadrant
>>> mask = tissue_mask(img)
>>> int(mask.sum())
16
>>> box_fractions(mask, np.array([[0, 0, 4, 4], [4, 4, 4, 4]])).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "box_fractions",
    "box_mean",
    "grayspace_mask",
    "laplacian_variance",
    "otsu_threshold",
    "saturation",
    "tissue_mask",
    "whitespace_mask",
]

#: Below this Otsu threshold on saturation the image is treated as having no
#: tissue at all (a blank or uniformly grey slide has no bimodal histogram).
MIN_TISSUE_SATURATION = 0.07

#: Pixels whose brightest channel is below this are never tissue.
MIN_TISSUE_VALUE = 30


def _channel_extrema(rgb: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    # Element-wise over the three planes: much faster than a reduction over the last axis.
    arr = np.asarray(rgb)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def saturation(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """HSV saturation in [0, 1] of an RGB uint8 image: ``(max - min) / max``."""
    mx8, mn8 = _channel_extrema(rgb)
    mx = mx8.astype(np.float32)
    out = np.zeros(mx.shape, np.float32)
    np.divide(mx - mn8, mx, out=out, where=mx8 > 0)
    return out


def otsu_threshold(values: NDArray[np.floating], *, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises between-class variance).

    >>> v = np.concatenate([np.full(100, 0.1), np.full(100, 0.8)])
    >>> 0.1 <= otsu_threshold(v) < 0.8
    True
    """
    hist, edges = np.histogram(np.ravel(values), bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 1.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 / total - m0) ** 2 / (w0 * w1 / total)
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def _count_dtype(mask: NDArray[np.bool_]) -> type[np.signedinteger]:
    # Counts of up to mask.size fit in int32 for any realistic mask: half the memory traffic.
    return np.int32 if mask.size < 2**31 else np.int64


def _summed_area(mask: NDArray[np.bool_]) -> NDArray[np.signedinteger]:
    """Summed-area table with a zero first row and column: ``sat[y, x]`` counts ``mask[:y, :x]``."""
    h, w = mask.shape
    dtype = _count_dtype(mask)
    sat = np.zeros((h + 1, w + 1), dtype)
    np.cumsum(mask, axis=0, dtype=dtype, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    return sat


def _window_sums(counts: NDArray[np.signedinteger], radius: int, axis: int) -> NDArray[Any]:
    """Sums of ``counts`` over the ``2 * radius + 1`` window along ``axis`` (edges clipped)."""
    n = counts.shape[axis]
    shape = list(counts.shape)
    shape[axis] = n + 1
    run = np.zeros(shape, counts.dtype)
    inner = [slice(None)] * counts.ndim
    inner[axis] = slice(1, None)
    np.cumsum(counts, axis=axis, out=run[tuple(inner)])
    idx = np.arange(n)
    hi = np.minimum(idx + radius + 1, n)
    lo = np.maximum(idx - radius, 0)
    return np.take(run, hi, axis=axis) - np.take(run, lo, axis=axis)


def _box_counts(mask: NDArray[np.bool_], radius: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """``True`` pixels and pixels in the clipped ``(2 * radius + 1)``-square around each pixel."""
    h, w = mask.shape
    total = _window_sums(_window_sums(mask.astype(_count_dtype(mask)), radius, 0), radius, 1)
    ys, xs = np.arange(h), np.arange(w)
    rows = np.minimum(ys + radius + 1, h) - np.maximum(ys - radius, 0)
    cols = np.minimum(xs + radius + 1, w) - np.maximum(xs - radius, 0)
    return total, rows[:, None] * cols[None, :]


def box_mean(mask: NDArray[np.bool_], radius: int) -> NDArray[np.float64]:
    """Mean of ``mask`` over the ``(2 * radius + 1)``-square around each pixel (edges clipped).

    Separable: running sums along the rows, then along the columns.

    >>> box_mean(np.eye(3, dtype=bool), 1).round(2).tolist()[1]
    [0.33, 0.33, 0.33]
    """
    total, area = _box_counts(mask, radius)
    return total / area


def tissue_mask(
    rgb: NDArray[np.uint8],
    *,
    min_saturation: float = MIN_TISSUE_SATURATION,
    smooth: int = 0,
    sat: NDArray[np.float32] | None = None,
) -> NDArray[np.bool_]:
    """Tissue pixels: HSV saturation above its Otsu threshold (and above ``min_saturation``).

    ``smooth`` > 0 closes the gaps between stained structures (fibres,
    nuclei): a pixel is tissue when at least a quarter of the square of that
    radius around it is. ``sat`` is the image's :func:`saturation`, if already computed.
    """
    sat = saturation(rgb) if sat is None else sat.copy()
    # Near-black pixels (fluorescence background, scanner padding) have noisy,
    # meaningless saturation: they are never tissue in a brightfield image.
    sat[_channel_extrema(rgb)[0] < MIN_TISSUE_VALUE] = 0.0
    threshold = max(otsu_threshold(sat), min_saturation)
    mask = sat > threshold
    if smooth > 0 and mask.any():
        total, area = _box_counts(mask, smooth)
        mask = 4 * total >= area  # box_mean(mask, smooth) >= 0.25, in integers
    return mask


def grayspace_mask(
    rgb: NDArray[np.uint8], threshold: float, *, sat: NDArray[np.float32] | None = None
) -> NDArray[np.bool_]:
    """Pixels whose HSV saturation is below ``threshold`` (Slideflow's grayspace)."""
    return (saturation(rgb) if sat is None else sat) < threshold


def whitespace_mask(rgb: NDArray[np.uint8], threshold: float) -> NDArray[np.bool_]:
    """Pixels whose mean RGB is above ``threshold`` (Slideflow's whitespace)."""
    arr = np.asarray(rgb)
    total = arr[..., 0].astype(np.uint16) + arr[..., 1] + arr[..., 2]
    return total > 3 * threshold


def _summed_area_rows(mask: NDArray[np.bool_], at: NDArray[np.int64]) -> NDArray[Any]:
    """``_summed_area(mask)[at]`` for sorted distinct rows ``at`` (in ``0..h``), computed
    from the sums of the bands of rows between them (one pass over ``mask``)."""
    h, w = mask.shape
    dtype = _count_dtype(mask)
    starts = at[at < h]
    if not starts.size or starts[0] != 0:
        starts = np.r_[0, starts]
    bands = np.add.reduceat(mask, starts, axis=0, dtype=dtype)  # rows starts[i]..starts[i+1]
    table = np.zeros((len(starts) + 1, w + 1), dtype)
    np.cumsum(bands, axis=0, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    # table[i] counts the rows above np.r_[starts, h][i]
    return table[np.searchsorted(np.r_[starts, h], at)]


def box_fractions(mask: NDArray[np.bool_], boxes: NDArray[np.integer]) -> NDArray[np.float64]:
    """Fraction of ``True`` pixels of ``mask`` inside each box ``(x, y, w, h)``.

    Boxes are in mask pixels and may run over the mask's edge: the area
    outside counts as ``False``. Computed from a summed-area table.
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    mask = np.asarray(mask, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return np.zeros(len(boxes))
    # the table covers only the mask's bounding box: the boxes' parts outside it hold no
    # True pixel, so clipping them to it changes no count (a small mask costs little)
    top, left = int(rows[0]), int(cols[0])
    crop = mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1]
    h, w = crop.shape
    x0 = np.clip(boxes[:, 0] - left, 0, w)
    y0 = np.clip(boxes[:, 1] - top, 0, h)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2] - left, 0, w)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3] - top, 0, h)
    at = np.unique(np.concatenate([y0, y1]))  # the table's rows that are read
    sat = _summed_area_rows(crop, at)
    r0, r1 = np.searchsorted(at, y0), np.searchsorted(at, y1)
    inside = sat[r1, x1] - sat[r0, x1] - sat[r1, x0] + sat[r0, x0]
    area = np.maximum(boxes[:, 2] * boxes[:, 3], 1)
    return inside / area


def laplacian_variance(rgb: NDArray[np.uint8]) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image: low means blurry.

    >>> flat = np.full((32, 32, 3), 128, np.uint8)
    >>> laplacian_variance(flat)
    0.0
    """
    grey = np.asarray(rgb, np.float32).mean(axis=-1)
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0
