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
    The tile blur measure (energy of the Laplacian) computed in windows of
    the low-resolution image, relative to the same after smoothing.

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

import numpy as np
from numpy.typing import NDArray

from tilestream.extract.tissue import box_mean

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
BLUR_SHARPNESS = 2.8
#: Pixels with less total OD than this are glass for every rule here.
MIN_STAIN_OD = 0.2


def is_brightfield(rgb: NDArray[np.uint8]) -> bool:
    """Whether the image is brightfield (light glass), not fluorescence (dark background)."""
    arr = np.asarray(rgb)
    step = max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))
    sample = arr[::step, ::step]
    return bool(np.median(sample.max(axis=-1)) >= MIN_BRIGHTFIELD_VALUE)


def glass_intensity(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``I0`` per channel: the brightness of the slide's glass (at least 200).

    The 99.5th percentile of each channel, so the white balance of the
    scanner (glass that is not 255) does not read as absorbance.
    """
    arr = np.asarray(rgb)
    step = max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))
    sample = arr[::step, ::step].reshape(-1, 3)
    return np.maximum(np.percentile(sample, 99.5, axis=0), 200.0).astype(np.float32)


def optical_density(
    rgb: NDArray[np.uint8], glass: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """``-log10(I / I0)`` per channel, ``>= 0`` (``I0``: :func:`glass_intensity`)."""
    i0 = glass_intensity(rgb) if glass is None else glass
    lut = np.arange(256, dtype=np.float32)[:, None]
    table = np.maximum(-np.log10((lut + 1.0) / (i0[None, :] + 1.0)), 0.0)  # (256, 3)
    arr = np.asarray(rgb)
    return np.stack([table[arr[..., c], c] for c in range(3)], axis=-1)


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


def pen_mask(
    rgb: NDArray[np.uint8],
    *,
    od: NDArray[np.float32] | None = None,
    grow_steps: int = 1000,
) -> NDArray[np.bool_]:
    """Marker ink (blue, green, red, black) on glass and over tissue.

    Empty for an image that is not brightfield.
    """
    if not is_brightfield(rgb):
        return np.zeros(np.asarray(rgb).shape[:2], bool)
    od = optical_density(rgb) if od is None else od
    seed = _ink_rules(od, strict=True)
    # a seed is a patch of ink, not a speck: most of its 5x5 square passes too
    seed &= box_mean(seed, 2) >= 0.6
    if not seed.any():
        return seed
    loose = _ink_rules(od, strict=False)
    mask = _grow(seed, loose | seed, grow_steps)
    # close the one-pixel gaps a stroke's soft edge leaves, never growing onto glass
    stained = od.sum(axis=-1) > MIN_STAIN_OD
    return mask | ((box_mean(mask, 1) >= 0.5) & stained)


def fold_mask(
    rgb: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    *,
    od: NDArray[np.float32] | None = None,
    factor: float = 3.0,
    min_od: float = 1.8,
) -> NDArray[np.bool_]:
    """Dark folds and thick tissue: total OD above ``factor`` x the slide's median tissue OD.

    (and above ``min_od``), smoothed over a 5-pixel square; dark regions that
    touch ``tissue`` are taken whole. Empty for an image that is not
    brightfield or has no tissue.
    """
    if not tissue.any() or not is_brightfield(rgb):
        return np.zeros(tissue.shape, bool)
    od = optical_density(rgb) if od is None else od
    total = od.sum(axis=-1)
    threshold = max(min_od, factor * float(np.median(total[tissue])))
    # The darkest pixels of a fold are not in the tissue mask (near-black is never
    # tissue there): dark regions that touch tissue are taken whole.
    dark = box_mean(total > threshold, 2) >= 0.5
    return _grow(dark & tissue, dark, 1000)


def _laplacian(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    lap = np.zeros_like(grey)
    lap[1:-1, 1:-1] = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    )
    return lap


def blur_map(rgb: NDArray[np.uint8], radius: int) -> NDArray[np.float64]:
    """Sharpness of the image around each pixel: high in focus, near 1 when blurred.

    The tile blur measure (energy of the Laplacian of the grey image) made a
    map and made independent of contrast: the Laplacian's energy in the
    ``(2 * radius + 1)``-square window around each pixel, divided by the
    same after a 5-point smoothing. Smoothing removes most of an in-focus
    image's Laplacian (its detail is at the finest scale) and little of a
    blurred one's. Pale and dark tissue score alike; a blur wider than about
    a pixel of the image falls from 3-8 (in focus) to 1-2.5.

    >>> rng = np.random.default_rng(0)
    >>> sharp = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    >>> bool(blur_map(sharp, 4)[20, 20] > 3)
    True
    """
    grey = np.asarray(rgb, np.float32).mean(axis=-1)
    smooth = grey.copy()
    smooth[1:-1, 1:-1] = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] + grey[1:-1, 1:-1]
    ) / 5
    fine = _box_mean_float(_laplacian(grey) ** 2, radius)
    coarse = _box_mean_float(_laplacian(smooth) ** 2, radius)
    return fine / (coarse + 1.0)


def _box_mean_float(values: NDArray[np.float32], radius: int) -> NDArray[np.float64]:
    run = values.astype(np.float64)
    for axis in (0, 1):
        n = run.shape[axis]
        c = np.concatenate(
            [np.zeros_like(np.take(run, [0], axis=axis)), np.cumsum(run, axis=axis)], axis=axis
        )
        idx = np.arange(n)
        hi, lo = np.minimum(idx + radius + 1, n), np.maximum(idx - radius, 0)
        shape = [1, 1]
        shape[axis] = n
        run = (np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)) / (hi - lo).reshape(shape)
    return run


@dataclass
class QCMasks:
    """The QC masks of one low-resolution image and the OD threshold results behind them."""

    masks: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    brightfield: bool = True


def qc_masks(
    rgb: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    *,
    pen: bool = True,
    fold: bool = True,
    blur: bool = True,
    blur_radius: int = 8,
    min_sharpness: float = BLUR_SHARPNESS,
) -> QCMasks:
    """The enabled QC masks of a low-resolution image (``tissue``: the tissue mask before QC).

    The blur mask holds tissue whose :func:`blur_map` is below ``min_sharpness``.
    """
    out = QCMasks(brightfield=is_brightfield(rgb))
    od = optical_density(rgb) if out.brightfield and (pen or fold) else None
    if pen:
        out.masks["pen"] = pen_mask(rgb, od=od)
    if fold:
        clean = tissue & ~out.masks["pen"] if pen else tissue
        out.masks["fold"] = fold_mask(rgb, clean, od=od)
    if blur and not out.brightfield:
        out.masks["blur"] = np.zeros(tissue.shape, bool)
    elif blur:
        out.masks["blur"] = tissue & (blur_map(rgb, blur_radius) < min_sharpness)
    return out
