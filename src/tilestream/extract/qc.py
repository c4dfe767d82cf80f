"""Quality-control masks of the low-resolution image: pen ink, dark folds, out-of-focus areas.

All masks are computed on the low-resolution image before any tile is read,
in optical density (Beer-Lambert, ``OD = -log10(I / I0)`` per channel, ``I0``
the slide's glass): ink and stain absorb on top of each other, so ink over
tissue adds the ink's absorbance to the tissue's.

Pen ink (:func:`pen_mask`)
    Marker inks absorb where haematoxylin and eosin do not: green ink
    transmits green (the channel H&E absorb most), blue ink absorbs red far
    more than blue, red ink absorbs blue nearly as much as green, and black
    ink absorbs every channel strongly. Pixels that pass a strict rule of one
    family are seeds; the mask grows from them through connected pixels that
    pass a looser rule (hysteresis), which follows a stroke from the glass
    onto tissue where the tissue's own colour dilutes the ink's.
Dark folds and thick tissue (:func:`fold_mask`)
    Tissue whose total OD is far above the slide's typical tissue OD.
Out of focus (:func:`blur_map`)
    The tile blur measure (energy of the Laplacian) computed in blocks of
    the low-resolution image, relative to the same after smoothing.

The ink rules depend on a pixel's colour only, so they are evaluated once per
colour of a table of 32^3 colours (5 bits per channel; quantising changed no
Dice score by more than 0.01) and looked up per pixel. The blur map's filters
are whole-image vector operations (see ``docs/benchmarks.md`` for what the
pass adds to an extraction).

Dark-background (fluorescence) images are not brightfield: their QC masks
are empty (:func:`is_brightfield`); none of the measures here was validated
on them.

Examples
--------
>>> img = np.full((40, 40, 3), 235, np.uint8)
>>> img[10:30, 18:22] = (40, 90, 200)        # a blue marker line on glass
>>> int(pen_mask(img).sum())
80
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tilestream.extract.tissue import _summed_area

__all__ = [
    "QC_MASKS",
    "QCMasks",
    "blur_map",
    "fold_mask",
    "glass_intensity",
    "is_brightfield",
    "optical_density",
    "pen_mask",
    "qc_masks",
]

#: The QC masks, in the order their tile filters apply.
QC_MASKS = ("pen", "fold", "blur")

#: A slide whose median brightest channel is below this is not brightfield.
MIN_BRIGHTFIELD_VALUE = 120
#: Tissue whose :func:`blur_map` is below this is out of focus.
BLUR_SHARPNESS = 2.2
#: Pixels with less total OD than this are glass for every rule here.
MIN_STAIN_OD = 0.2
#: Blocks whose green channel varies less than this (standard deviation) have no blur measure.
MIN_BLUR_CONTRAST = 3.0
#: Side of the square blocks of the blur map, in low-resolution pixels.
BLUR_BLOCK = 12
#: Pixels sampled (at most) to estimate the glass and the background.
_SAMPLE = 65_536


def _sample(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    arr = np.asarray(rgb)
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / _SAMPLE))))
    return arr[::step, ::step].reshape(-1, 3)


def is_brightfield(rgb: NDArray[np.uint8]) -> bool:
    """Whether the image is brightfield (light glass), not fluorescence (dark background)."""
    sample = _sample(rgb)
    brightest = np.maximum(np.maximum(sample[:, 0], sample[:, 1]), sample[:, 2])
    return bool(_median(brightest) >= MIN_BRIGHTFIELD_VALUE)


def _median(values: NDArray[Any]) -> float:
    """``np.median`` of a 1-D array, without its first call's import of ``numpy.ma``."""
    n = len(values)
    if n == 0:
        return float("nan")
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    low, high = np.partition(values, [k - 1, k])[k - 1 : k + 1]
    return (float(low) + float(high)) / 2.0


def glass_intensity(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``I0`` per channel: the brightness of the slide's glass (at least 200).

    The 99.5th percentile of each channel, so the white balance of the
    scanner (glass that is not 255) does not read as absorbance.
    """
    sample = _sample(rgb)
    k = int(0.995 * (len(sample) - 1))  # np.percentile's first call imports half of numpy
    high = [np.partition(sample[:, c], k)[k] for c in range(3)]
    return np.maximum(np.asarray(high, np.float32), np.float32(200.0))


def _od_table(glass: NDArray[np.float32]) -> NDArray[np.float32]:
    """OD of every intensity 0..255 per channel: ``(256, 3)``."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    return np.maximum(-np.log10((levels + 1.0) / (glass[None, :] + 1.0)), 0.0).astype(np.float32)


def optical_density(
    rgb: NDArray[np.uint8], glass: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """``-log10(I / I0)`` per channel, ``>= 0`` (``I0``: :func:`glass_intensity`)."""
    table = _od_table(glass_intensity(rgb) if glass is None else glass)
    arr = np.asarray(rgb)
    return np.stack([table[arr[..., c], c] for c in range(3)], axis=-1)


def _nonzero(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.nonzero`` of a 2-D mask (row-major order), several times faster for sparse masks."""
    flat = np.flatnonzero(mask)
    return np.divmod(flat, mask.shape[1])


def _box_fraction_at(
    mask: NDArray[np.bool_], radius: int, where: NDArray[np.bool_], fraction: float = 0.5
) -> NDArray[np.bool_]:
    """``box_mean(mask, radius) >= fraction`` at the pixels of ``where`` (else ``False``).

    Fast when ``where`` is sparse: only the bounding box of ``where`` (with a
    ``radius`` halo) is read, and for few pixels their windows are summed directly.
    """
    out = np.zeros(mask.shape, bool)
    rows, cols = np.flatnonzero(where.any(axis=1)), np.flatnonzero(where.any(axis=0))
    if not rows.size:
        return out
    h, w = mask.shape
    y0, y1 = max(0, rows[0] - radius), min(h, rows[-1] + radius + 1)
    x0, x1 = max(0, cols[0] - radius), min(w, cols[-1] + radius + 1)
    crop = mask[y0:y1, x0:x1]
    ys, xs = _nonzero(where[y0:y1, x0:x1])
    side = 2 * radius + 1
    if ys.size * side * side < crop.size // 4:  # few pixels: sum their windows directly
        count = np.zeros(ys.size, np.int32)
        ch, cw = crop.shape
        for dy in range(-radius, radius + 1):
            yy = ys + dy
            in_y = (yy >= 0) & (yy < ch)
            yy = np.clip(yy, 0, ch - 1)
            for dx in range(-radius, radius + 1):
                xx = xs + dx
                inside = in_y & (xx >= 0) & (xx < cw)
                count += crop[yy, np.clip(xx, 0, cw - 1)] & inside
    else:
        sat = _summed_area(crop)
        top, bottom = np.maximum(ys - radius, 0), np.minimum(ys + radius + 1, y1 - y0)
        left, right = np.maximum(xs - radius, 0), np.minimum(xs + radius + 1, x1 - x0)
        count = sat[bottom, right] - sat[top, right] - sat[bottom, left] + sat[top, left]
    ys, xs = ys + y0, xs + x0
    # the window clipped by the image's edges (outside the crop, inside the image: no mask)
    height = np.minimum(ys + radius + 1, h) - np.maximum(ys - radius, 0)
    width = np.minimum(xs + radius + 1, w) - np.maximum(xs - radius, 0)
    out[ys, xs] = count >= fraction * height * width
    return out


def _dilate8(cur: NDArray[np.bool_]) -> NDArray[np.bool_]:
    grown = cur.copy()
    grown[1:] |= cur[:-1]
    grown[:-1] |= cur[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def _grow(seed: NDArray[np.bool_], allowed: NDArray[np.bool_], steps: int) -> NDArray[np.bool_]:
    """Pixels of ``allowed`` connected (8-neighbourhood) to ``seed`` within ``steps`` steps."""
    cur = seed & allowed
    for _ in range(steps):
        grown = _dilate8(cur) & allowed
        if np.array_equal(grown, cur):
            break
        cur = grown
    return cur


def _ink_rules(od: NDArray[np.float32], strict: bool) -> NDArray[np.bool_]:
    """Whether OD triples (``(..., 3)``) look like marker ink: strict (seeds) or loose."""
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    lo = np.minimum(np.minimum(r, g), b)
    total = r + g + b
    if strict:
        green = (g < np.minimum(r, b) - 0.10) & (np.minimum(r, b) > 0.30)
        blue = (r > g + 0.15) & (b < 0.45 * r) & (r > 0.4)
        red = ((r < 0.2 * g) & (b > 0.65 * g) & (g > 0.5)) | (
            (r < 0.15 * g) & (b > 0.35 * g) & (g > 0.8)
        )
        black = lo > 1.0
    else:
        green = (g < np.minimum(r, b) - 0.05) & (np.minimum(r, b) > 0.15)
        blue = (r > 0.9 * g) & (b < 0.55 * r) & (r > 0.5)
        red = (r < 0.35 * g) & (b > 0.6 * g) & (g > 0.6)
        black = lo > 0.76
    return (green | blue | red | black) & (total > MIN_STAIN_OD)


#: Quantised levels per channel, and colours: 5 bits a channel.
_LEVELS = 32
_COLOURS = _LEVELS**3


@dataclass
class _Colours:
    """An image's colours quantised to 5 bits a channel, with tables over all colours.

    Per colour: its ink class (2 strict, 1 loose, 0 none) and total OD,
    evaluated once per colour of the table (fewer than the pixels of an
    image) and looked up per pixel.
    """

    index: NDArray[np.uint16]
    classes_lut: NDArray[np.uint8]
    total_lut: NDArray[np.float32]

    @classmethod
    def of(cls, rgb: NDArray[np.uint8], glass: NDArray[np.float32]) -> _Colours:
        q = np.asarray(rgb) >> 3  # 5 bits a channel (one pass over contiguous bytes)
        index = q[..., 0].astype(np.uint16) << 10
        index |= q[..., 1].astype(np.uint16) << 5
        index |= q[..., 2]
        table = _od_table(glass)[np.arange(_LEVELS) * 8 + 4]  # OD of each quantised level
        colours = np.arange(_COLOURS)
        od = np.stack(
            [table[colours >> 10, 0], table[(colours >> 5) & 31, 1], table[colours & 31, 2]],
            axis=-1,
        )
        strict, loose = _ink_rules(od, True), _ink_rules(od, False)
        classes = np.where(strict, 2, np.where(loose, 1, 0)).astype(np.uint8)
        return cls(np.asarray(index, dtype=np.uint16), classes, od.sum(axis=-1))

    def classes(self) -> NDArray[np.uint8]:
        return np.take(self.classes_lut, self.index)

    def total_od(self) -> NDArray[np.float32]:
        return np.take(self.total_lut, self.index)


def _colours(rgb: NDArray[np.uint8], glass: NDArray[np.float32] | None) -> _Colours | None:
    if glass is None:
        if not is_brightfield(rgb):
            return None
        glass = glass_intensity(rgb)
    return _Colours.of(rgb, glass)


def pen_mask(
    rgb: NDArray[np.uint8],
    *,
    glass: NDArray[np.float32] | None = None,
    grow_steps: int = 1000,
) -> NDArray[np.bool_]:
    """Marker ink (blue, green, red, black) on glass and over tissue.

    Seeds (strict rule, in patches) grow through connected pixels of the
    loose rule for up to ``grow_steps`` pixels. ``glass``: the image's
    :func:`glass_intensity`, given when known to be brightfield; without it
    an image that is not brightfield gets an empty mask.
    """
    colours = _colours(rgb, glass)
    if colours is None:
        return np.zeros(np.asarray(rgb).shape[:2], bool)
    return _pen(colours, grow_steps)


def _pen(colours: _Colours, grow_steps: int = 1000) -> NDArray[np.bool_]:
    seed = np.take(colours.classes_lut >= 2, colours.index)
    if not seed.any():
        return seed
    # a seed is a patch of ink, not a speck: most of its 5x5 square passes too
    seed &= _box_fraction_at(seed, 2, seed, 0.6)
    if not seed.any():
        return seed
    mask = _grow(seed, np.take(colours.classes_lut > 0, colours.index), grow_steps)
    # close the one-pixel gaps a stroke's soft edge leaves, never growing onto glass
    gaps = _dilate8(mask) & ~mask
    gaps &= colours.total_od() > MIN_STAIN_OD
    return mask | _box_fraction_at(mask, 1, gaps)


def fold_mask(
    rgb: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    *,
    glass: NDArray[np.float32] | None = None,
    factor: float = 3.0,
    min_od: float = 1.8,
) -> NDArray[np.bool_]:
    """Dark folds and thick tissue: total OD above ``factor`` x the slide's median tissue OD.

    (and above ``min_od``), without specks (most of a pixel's 5x5 square is
    dark too); dark regions that touch ``tissue`` are taken whole. Empty for
    an image that is not brightfield or has no tissue.
    """
    colours = _colours(rgb, glass) if tissue.any() else None
    if colours is None:
        return np.zeros(tissue.shape, bool)
    return _fold(colours, tissue, factor, min_od)


def _fold(
    colours: _Colours, tissue: NDArray[np.bool_], factor: float = 3.0, min_od: float = 1.8
) -> NDArray[np.bool_]:
    step = max(1, int(np.sqrt(colours.index.size / _SAMPLE)))
    inside = np.take(colours.total_lut, colours.index[::step, ::step][tissue[::step, ::step]])
    if not inside.size:
        inside = np.take(colours.total_lut, colours.index[tissue])
    limit = max(min_od, factor * _median(inside))
    dark = np.take(colours.total_lut > limit, colours.index)
    if not dark.any():
        return dark
    dark &= _box_fraction_at(dark, 2, dark)
    if not dark.any():  # specks only
        return dark
    # The darkest pixels of a fold are not in the tissue mask (near-black is never
    # tissue there): dark regions that touch tissue are taken whole.
    return _grow(dark & tissue, dark, 1000)


# The two filters below work on the flattened image: a row's neighbours are one
# row-length away, its left and right neighbours one element away, so each term is one
# contiguous (vectorised) operation. The wrapped-around first and last columns are
# then set as on a 2-D image.


def _laplacian(grey: NDArray[np.int16]) -> NDArray[np.int16]:
    """The 5-point Laplacian (zero on the image's border)."""
    h, w = grey.shape
    lap = np.zeros_like(grey)
    if h < 3 or w < 3:
        return lap
    flat, n = np.ascontiguousarray(grey).ravel(), grey.size
    inner = lap.ravel()[w:-w]
    np.add(flat[: n - 2 * w], flat[2 * w :], out=inner)
    inner += flat[w - 1 : n - w - 1]
    inner += flat[w + 1 : n - w + 1]
    inner -= flat[w:-w] << 2
    lap[:, 0] = lap[:, -1] = 0
    return lap


def _smooth5(values: NDArray[np.int16]) -> NDArray[np.int16]:
    """Five times the 5-point mean (a pixel plus its four neighbours; the border unsmoothed)."""
    h, w = values.shape
    out = np.array(values, order="C")
    if h < 3 or w < 3:
        return out
    flat, n = np.ascontiguousarray(values).ravel(), values.size
    inner = out.ravel()[w:-w]
    inner += flat[: n - 2 * w]
    inner += flat[2 * w :]
    inner += flat[w - 1 : n - w - 1]
    inner += flat[w + 1 : n - w + 1]
    out[:, 0], out[:, -1] = values[:, 0], values[:, -1]
    return out


def _block_sum(values: NDArray[np.integer], block: int) -> NDArray[np.int64]:
    """Sums of ``values`` over ``block``-square blocks (the last ones partial)."""
    h, w = values.shape
    fh, fw = h // block, w // block
    # the columns of a block's rows are summed in int32 where that is exact: the values
    # here are at most 5100 ** 2 (a squared Laplacian of the smoothed image)
    dtype = np.int32 if block * 5100**2 < 2**31 else np.int64
    rows = np.empty((-(-h // block), w), dtype)
    rows[:fh] = values[: fh * block].reshape(fh, block, w).sum(axis=1, dtype=dtype)
    if fh * block < h:
        rows[fh] = values[fh * block :].sum(axis=0, dtype=dtype)
    out = np.empty((rows.shape[0], -(-w // block)), np.int64)
    out[:, :fw] = rows[:, : fw * block].reshape(len(rows), fw, block).sum(axis=2, dtype=np.int64)
    if fw * block < w:
        out[:, fw] = rows[:, fw * block :].sum(axis=1, dtype=np.int64)
    return out


def _block_counts(shape: tuple[int, int], block: int) -> NDArray[np.int64]:
    """Pixels in each ``block``-square block of an image of ``shape`` (the last ones partial)."""
    h, w = shape
    rows = np.minimum(np.arange(0, h, block) + block, h) - np.arange(0, h, block)
    cols = np.minimum(np.arange(0, w, block) + block, w) - np.arange(0, w, block)
    return rows[:, None] * cols[None, :]


def _low_contrast(grey: NDArray[np.int16], block: int) -> NDArray[np.bool_]:
    """Blocks whose standard deviation is below :data:`MIN_BLUR_CONTRAST`."""
    n = _block_counts(grey.shape, block).astype(np.float64)
    total = _block_sum(grey, block).astype(np.float64)
    squares = _block_sum(np.square(grey, dtype=np.int32), block).astype(np.float64)
    # n^2 var = n sum(x^2) - sum(x)^2, compared without dividing
    return n * squares - total * total < (MIN_BLUR_CONTRAST * n) ** 2


def blur_map(rgb: NDArray[np.uint8], block: int = BLUR_BLOCK) -> NDArray[np.float64]:
    """Sharpness of the image in ``block``-square blocks: high in focus, near 1 when blurred.

    The tile blur measure (energy of the Laplacian of the green channel)
    made a map and made independent of contrast: the Laplacian's energy in
    each block divided by the same after a 5-point smoothing. Smoothing
    removes most of an in-focus image's Laplacian (its detail is at the
    finest scale) and little of a blurred one's. Pale and dark tissue score
    alike; a blur wider than about a pixel of the image falls from 3-8 (in
    focus) to 1-2.5. Blocks without contrast (standard deviation below
    :data:`MIN_BLUR_CONTRAST`) are ``inf``: nothing to judge. Returned at
    the image's size (each block's value repeated over it).

    >>> rng = np.random.default_rng(0)
    >>> sharp = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    >>> bool(blur_map(sharp, 8)[20, 20] > 3)
    True
    """
    grey = np.asarray(rgb)[..., 1].astype(np.int16)
    ratio = _sharpness(grey, block, (slice(None), slice(None)))
    h, w = grey.shape
    return np.repeat(np.repeat(ratio, block, axis=0), block, axis=1)[:h, :w]


def _sharpness(
    grey: NDArray[np.int16], block: int, inner: tuple[slice, slice]
) -> NDArray[np.float64]:
    """:func:`blur_map` per block of ``grey[inner]`` (which starts on a block's corner).

    The Laplacians are taken over all of ``grey``: two pixels around ``inner``
    suffice to make its blocks' values those of the whole image.
    """
    lap = _laplacian(grey)
    # The Laplacian of the smoothed image is the smoothing of the Laplacian (both
    # filters are linear and shift-invariant): one smoothing instead of two filters.
    fine = _block_sum(np.square(lap[inner], dtype=np.int32), block).astype(np.float64)
    coarse = _block_sum(np.square(_smooth5(lap)[inner], dtype=np.int32), block) / 25.0
    ratio = fine / (coarse + block * block)
    # a block without contrast (glass, a flat stain) holds no evidence of blur
    ratio[_low_contrast(grey[inner], block)] = np.inf
    return ratio


def _blur_mask(
    rgb: NDArray[np.uint8], tissue: NDArray[np.bool_], block: int, min_sharpness: float
) -> NDArray[np.bool_]:
    """``tissue & (blur_map(rgb, block) < min_sharpness)``, computed over the blocks that
    hold tissue only (with a two-pixel margin for the Laplacians), compared per block."""
    out = np.zeros(tissue.shape, bool)
    rows, cols = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
    if not rows.size:
        return out
    h, w = tissue.shape
    y0, x0 = int(rows[0]) // block * block, int(cols[0]) // block * block
    y1 = min(-(-(int(rows[-1]) + 1) // block) * block, h)
    x1 = min(-(-(int(cols[-1]) + 1) // block) * block, w)
    hy0, hx0, hy1, hx1 = max(y0 - 2, 0), max(x0 - 2, 0), min(y1 + 2, h), min(x1 + 2, w)
    grey = np.asarray(rgb)[hy0:hy1, hx0:hx1, 1].astype(np.int16)
    inner = (slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
    low = _sharpness(grey, block, inner) < min_sharpness
    if low.any():
        low_px = np.repeat(np.repeat(low, block, axis=0), block, axis=1)[: y1 - y0, : x1 - x0]
        out[y0:y1, x0:x1] = tissue[y0:y1, x0:x1] & low_px
    return out


@dataclass
class QCMasks:
    """The QC masks of one low-resolution image (name -> mask), and whether it is brightfield."""

    masks: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    brightfield: bool = True


def qc_masks(
    rgb: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    *,
    pen: bool = True,
    fold: bool = True,
    blur: bool = True,
    blur_block: int = BLUR_BLOCK,
    min_sharpness: float = BLUR_SHARPNESS,
) -> QCMasks:
    """The enabled QC masks of a low-resolution image (``tissue``: the tissue mask before QC).

    The blur mask holds tissue whose :func:`blur_map` is below ``min_sharpness``.
    """
    out = QCMasks(brightfield=is_brightfield(rgb))
    none = np.zeros(tissue.shape, bool)
    colours = None
    if out.brightfield and (pen or fold):
        colours = _Colours.of(rgb, glass_intensity(rgb))
    if pen:
        out.masks["pen"] = none if colours is None else _pen(colours)
    if fold:
        clean = tissue & ~out.masks["pen"] if pen else tissue
        out.masks["fold"] = none if colours is None or not clean.any() else _fold(colours, clean)
    if blur:
        out.masks["blur"] = (
            _blur_mask(rgb, tissue, blur_block, min_sharpness) if out.brightfield else none
        )
    return out
