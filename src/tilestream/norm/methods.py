"""Stain normalisation algorithms on pixel arrays (the engine behind :class:`StainNormalizer`).

Everything here works on uint8 RGB pixels shaped ``(n, pixels, 3)`` (Reinhard,
vectorised over images) or ``(pixels, 3)`` (Macenko, Vahadane: one image at
a time) and returns ``None`` where an image cannot be normalised sensibly
(too little tissue, uniform colour, a degenerate stain estimate), so callers
return such tiles unchanged instead of producing NaNs or garbage.

- Reinhard: LAB means and standard deviations matched to a target.
- Macenko: stain vectors from the angular extremes of optical density (OD)
  projected on its two main eigenvectors; least-squares concentrations.
- Vahadane: stain vectors by sparse non-negative dictionary learning of OD
  (SPAMS' ``trainDL`` approach: alternating a non-negative lasso, solved
  exactly for two stains, with block coordinate descent on the dictionary).

Examples
--------
>>> import numpy as np
>>> from tilestream.norm.methods import nn_lasso2
>>> d = np.array([[0.6, 0.7, 0.4], [0.2, 0.8, 0.56]], np.float32)
>>> od = np.array([[1.2, 1.4, 0.8]], np.float32)  # twice the first stain
>>> np.round(nn_lasso2(od, d, 0.0), 3).tolist()
[[2.0, 0.0]]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tilestream.norm._color import lab_to_rgb, mm3, od_table, rgb_to_lab

__all__ = [
    "MIN_TISSUE_PIXELS",
    "macenko_estimate",
    "macenko_transform",
    "nn_lasso2",
    "percentile",
    "reinhard_stats",
    "reinhard_transform",
    "tissue_od",
    "vahadane_concentrations",
    "vahadane_estimate",
    "vahadane_transform",
]

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

#: Fewer tissue pixels than this never make a fit or a normalised tile.
MIN_TISSUE_PIXELS = 64
#: LAB lightness at or above which a pixel is background (Reinhard methods).
BACKGROUND_L = 93.0
#: An image whose LAB channels all have a smaller standard deviation is uniform.
UNIFORM_STD = 1.0
#: Tissue whose optical density varies less than this (largest principal standard deviation) is uniform.
UNIFORM_OD_STD = 0.02
#: Floor on a source LAB standard deviation (no wild stretching of a flat channel).
_STD_FLOOR = 1.0


def percentile(x: F32, q: float | list[float], *, axis: int = 0) -> NDArray[np.float64]:
    """``numpy.percentile`` (linear interpolation) in float64 over ``axis``."""
    return np.percentile(x, q, axis=axis).astype(np.float64)


# --------------------------------------------------------------------------- Reinhard


def reinhard_stats(
    lab: F32, *, masked: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_] | None]:
    """Per-image LAB means, standard deviations and tissue fraction of ``(n, p, 3)`` LAB.

    With ``masked`` the statistics use tissue pixels only (lightness below
    :data:`BACKGROUND_L`) and the tissue mask is returned too.
    """
    planes = np.ascontiguousarray(lab.transpose(0, 2, 1))  # (n, 3, p): fast pairwise sums
    tissue = planes[:, 0] < np.float32(BACKGROUND_L)
    count = tissue.sum(axis=1)
    frac = count / max(lab.shape[1], 1)
    if not masked:
        n = np.float64(max(lab.shape[1], 1))
        means = planes.sum(axis=2).astype(np.float64) / n
        centred = planes - means[:, :, None].astype(np.float32)
        centred *= centred
        stds = np.sqrt(centred.sum(axis=2).astype(np.float64) / n)
        return means, stds, frac, None
    w = tissue.astype(np.float32)[:, None, :]
    n = np.maximum(count, 1).astype(np.float64)[:, None]
    means = (planes * w).sum(axis=2).astype(np.float64) / n
    centred = (planes - means[:, :, None].astype(np.float32)) * w
    centred *= centred
    stds = np.sqrt(centred.sum(axis=2).astype(np.float64) / n)
    return means, stds, frac, tissue


def reinhard_transform(
    img: U8,
    target_means: NDArray[np.float64],
    target_stds: NDArray[np.float64],
    *,
    masked: bool,
    min_tissue: float,
) -> tuple[U8, NDArray[np.bool_]]:
    """Reinhard-normalise ``(n, p, 3)`` uint8 images; returns them and which were skipped.

    ``target_*`` are ``(3,)`` or per-image ``(n, 3)``. Skipped images (too
    little tissue, uniform) come back unchanged.
    """
    lab = rgb_to_lab(img)
    means, stds, frac, tissue = reinhard_stats(lab, masked=masked)
    count = frac * img.shape[1]
    skip = (frac < min_tissue) | (count < MIN_TISSUE_PIXELS) | (stds.max(axis=1) < UNIFORM_STD)
    tm = np.broadcast_to(np.asarray(target_means, np.float64), means.shape)
    ts = np.broadcast_to(np.asarray(target_stds, np.float64), stds.shape)
    scale = ts / np.maximum(stds, _STD_FLOOR)
    offset = tm - means * scale
    out = np.empty_like(img)
    for i in range(img.shape[0]):
        out[i] = lab_to_rgb(lab[i], scale[i], offset[i])
    if tissue is not None:
        out = np.where(tissue[..., None], out, img)
    if skip.any():
        out[skip] = img[skip]
    return out, skip


# --------------------------------------------------------------------------- optical density


def tissue_od(
    pixels: U8, io: float, beta: float, black: int = 16
) -> tuple[F32, F32, NDArray[np.bool_]]:
    """Optical density of ``(p, 3)`` pixels as ``(p, 3)`` and as channel planes ``(3, p)``, and the tissue mask.

    A pixel is tissue when every channel has OD >= ``beta`` and it is not
    black (some channel at least ``black``; 0 keeps black pixels); OD is
    ``-log((v + 1) / io)`` (a lookup table on the uint8 values).
    """
    table = od_table(io)
    od = np.take(table, pixels)
    planes = np.take(table, pixels.T)
    # OD >= beta  <=>  v + 1 <= io * exp(-beta): decided on the uint8 values.
    vmax = int(np.floor(io * np.exp(-beta) - 1.0 + 1e-9))
    mask = (pixels[:, 0] <= vmax) & (pixels[:, 1] <= vmax) & (pixels[:, 2] <= vmax)
    # Black pixels (scanner padding, pen, dust) are not stain: their OD is noise.
    if black > 0:
        mask &= (pixels[:, 0] >= black) | (pixels[:, 1] >= black) | (pixels[:, 2] >= black)
    return od, planes, mask


def _enough(mask: NDArray[np.bool_], min_tissue: float) -> bool:
    n = int(mask.sum())
    return n >= MIN_TISSUE_PIXELS and n >= min_tissue * mask.size


def _angle_percentiles(x: F32, y: F32, alpha: float) -> tuple[float, float]:
    """``numpy.percentile`` of ``arctan2(y, x)`` at ``alpha`` and ``100 - alpha``.

    Where every point has ``x > 0`` the angle is monotone in the slope, so the
    order statistics are found on slopes and only they go through arctan.
    """
    n = x.shape[0]
    if not (x > 0).all():
        lo, hi = np.percentile(np.arctan2(y, x), [alpha, 100.0 - alpha])
        return float(lo), float(hi)
    slope = y / x
    pos = [q / 100.0 * (n - 1) for q in (alpha, 100.0 - alpha)]
    ks = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, n - 1) for p in pos})
    part = np.partition(slope, ks)
    out = []
    for p in pos:
        k = int(np.floor(p))
        a = float(np.arctan(np.float64(part[k])))
        b = float(np.arctan(np.float64(part[min(k + 1, n - 1)])))
        out.append(a + (b - a) * (p - k))
    return out[0], out[1]


def _rows(m: NDArray[np.float64], planes: F32) -> F32:
    """``m @ planes`` for a small ``(k, 3)`` matrix and channel planes ``(3, p)``."""
    w = np.asarray(m, np.float32)
    out = np.empty((w.shape[0], planes.shape[1]), np.float32)
    for i in range(w.shape[0]):
        np.multiply(planes[0], w[i, 0], out=out[i])
        out[i] += w[i, 1] * planes[1]
        out[i] += w[i, 2] * planes[2]
    return out


def macenko_estimate(
    planes: F32, mask: NDArray[np.bool_], *, alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None:
    """Macenko stain matrix ``(2, 3)`` (rows H, E), its pseudo-inverse ``(2, 3)`` and 99th-percentile concentrations.

    ``planes`` is OD ``(3, p)``, ``mask`` the tissue pixels that give the
    stain vectors; concentrations are of all pixels. ``None`` when degenerate.
    """
    odhat = np.compress(mask, planes, axis=1)
    n = odhat.shape[1]
    if n < 3:
        return None
    mean = odhat.sum(axis=1, dtype=np.float64) / n
    x = odhat - mean[:, None].astype(np.float32)
    cov = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[i, j] = cov[j, i] = float(np.dot(x[i], x[j])) / (n - 1)
    if not np.isfinite(cov).all():
        return None
    evals, vecs = np.linalg.eigh(cov)
    if evals[-1] < UNIFORM_OD_STD**2:
        return None  # nearly uniform: no stain directions to find
    plane = vecs[:, 1:3].copy()
    t = _rows(plane.T, odhat)
    # Orient the plane so the data sit around angle 0 (no wrap-around at +-pi).
    if t[0].mean() < 0:
        plane[:, 0] = -plane[:, 0]
        t[0] = -t[0]
    lo, hi = _angle_percentiles(t[0], t[1], alpha)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v_min, v_max]) if v_min[0] > v_max[0] else np.stack([v_max, v_min])
    return _finish_matrix(planes, he)


def _finish_matrix(
    planes: F32, he: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None:
    """Pseudo-inverse and 99th-percentile least-squares concentrations for stain rows ``he``."""
    if not np.isfinite(he).all():
        return None
    unit = he / np.linalg.norm(he, axis=1, keepdims=True)
    if abs(float(unit[0] @ unit[1])) > 0.9999:
        return None
    pinv = np.linalg.pinv(he.T)  # (2, 3): least-squares concentrations = pinv @ od
    conc = _rows(pinv, planes)
    max_c = np.array([np.percentile(conc[0], 99.0), np.percentile(conc[1], 99.0)], np.float64)
    if not np.isfinite(max_c).all() or (max_c <= 1e-6).any():
        return None
    return he, pinv, max_c


def macenko_transform(
    pixels: U8,
    target_matrix: NDArray[np.float64],
    target_max: NDArray[np.float64],
    *,
    io: float,
    alpha: float,
    beta: float,
    black: int,
    min_tissue: float,
) -> U8 | None:
    """Macenko-normalise ``(p, 3)`` pixels towards a target; ``None`` when it cannot."""
    od, planes, mask = tissue_od(pixels, io, beta, black)
    if not _enough(mask, min_tissue):
        return None
    est = macenko_estimate(planes, mask, alpha=alpha)
    if est is None:
        return None
    _, pinv, max_c = est
    # od -> concentrations -> rescaled to the target maxima -> target OD: one 3x3 matrix.
    to_target = pinv.T * (np.asarray(target_max) / max_c) @ np.asarray(target_matrix, np.float64)
    return _to_rgb(od, to_target, io)


def _to_rgb(x: F32, matrix: NDArray[np.float64], io: float) -> U8:
    """``io * exp(-x @ matrix)`` as rounded, clipped uint8 ``(p, 3)``."""
    out = mm3(x, -np.asarray(matrix, np.float32))
    np.exp(out, out=out)
    out *= np.float32(io)
    np.minimum(out, np.float32(255.0), out=out)
    return np.rint(out, out=out).astype(np.uint8)


# --------------------------------------------------------------------------- Vahadane


def nn_lasso2(od: F32, dictionary: NDArray, lam: float) -> F32:
    """Exact non-negative lasso codes ``(p, 2)`` of OD pixels ``(p, 3)`` on two atoms.

    Minimises ``0.5 * ||x - a @ D||^2 + lam * sum(a)`` with ``a >= 0`` per
    pixel by checking the KKT conditions of the four active sets (the problem
    is strictly convex, so exactly one holds).
    """
    d = np.asarray(dictionary, np.float64)
    g = d @ d.T
    b = mm3(od, d.T.astype(np.float32)) - np.float32(lam)
    b1, b2 = b[:, 0], b[:, 1]
    g11, g12, g22 = np.float32(g[0, 0]), np.float32(g[0, 1]), np.float32(g[1, 1])
    det = g11 * g22 - g12 * g12
    out = np.zeros_like(b)
    s1 = b1 / g11
    s2 = b2 / g22
    one = (s1 > 0) & (g12 * s1 - b2 >= 0)
    two = (s2 > 0) & (g12 * s2 - b1 >= 0)
    out[:, 0] = np.where(one, s1, 0)
    out[:, 1] = np.where(two, s2, 0)
    if det > 1e-12:
        a1 = (g22 * b1 - g12 * b2) / det
        a2 = (g11 * b2 - g12 * b1) / det
        both = (a1 > 0) & (a2 > 0)
        out[:, 0] = np.where(both, a1, out[:, 0])
        out[:, 1] = np.where(both, a2, out[:, 1])
    return out


def vahadane_estimate(
    planes: F32,
    mask: NDArray[np.bool_],
    *,
    init: NDArray[np.float64],
    lam: float = 0.1,
    iterations: int = 100,
    max_pixels: int = 10000,
    tol: float = 1e-5,
) -> NDArray[np.float64] | None:
    """Vahadane stain matrix ``(2, 3)`` (rows H, E) by sparse non-negative dictionary learning.

    Alternates the exact non-negative lasso (:func:`nn_lasso2`, penalty
    ``lam``) and one pass of block coordinate descent on the atoms, each
    projected on the non-negative part of the unit ball (SPAMS ``trainDL``
    with ``mode=2, modeD=0, posAlpha, posD``) until no atom entry moves by
    ``tol``. At most ``max_pixels`` tissue pixels are used, picked with a
    fixed seed, so the result is reproducible.
    """
    xt = np.compress(mask, planes, axis=1)  # (3, n)
    if xt.shape[1] > max_pixels:
        idx = np.sort(np.random.default_rng(0).choice(xt.shape[1], max_pixels, replace=False))
        xt = xt[:, idx]
    x = np.ascontiguousarray(xt.T)
    d = np.maximum(np.asarray(init, np.float64), 0.0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    for _ in range(iterations):
        at = np.ascontiguousarray(nn_lasso2(x, d, lam).T)  # (2, n)
        aa = np.array([[float(np.dot(at[i], at[j])) for j in range(2)] for i in range(2)])
        bb = np.array([[float(np.dot(xt[c], at[j])) for j in range(2)] for c in range(3)])
        prev = d.copy()
        for j in range(2):
            if aa[j, j] < 1e-10:
                continue
            u = d[j] + (bb[:, j] - d.T @ aa[:, j]) / aa[j, j]
            u = np.maximum(u, 0.0)
            d[j] = u / max(float(np.linalg.norm(u)), 1.0)
        if np.abs(d - prev).max() < tol:
            break
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    if not np.isfinite(d).all() or (norms < 1e-6).any():
        return None
    d = d / norms
    if d[0, 0] < d[1, 0]:
        d = d[::-1].copy()
    if abs(float(d[0] @ d[1])) > 0.9999:
        return None
    return d


def vahadane_concentrations(od: F32, matrix: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """99th-percentile non-negative lasso concentrations (penalty 0.01) of all pixels."""
    max_c = percentile(nn_lasso2(od, matrix, 0.01), 99.0)
    if not np.isfinite(max_c).all() or (max_c <= 1e-6).any():
        return None
    return max_c


def vahadane_transform(
    pixels: U8,
    target_matrix: NDArray[np.float64],
    target_max: NDArray[np.float64],
    *,
    io: float,
    beta: float,
    black: int,
    min_tissue: float,
) -> U8 | None:
    """Vahadane-normalise ``(p, 3)`` pixels towards a target; ``None`` when it cannot."""
    od, planes, mask = tissue_od(pixels, io, beta, black)
    if not _enough(mask, min_tissue):
        return None
    init = macenko_estimate(planes, mask, alpha=1.0)
    if init is None:
        return None  # uniform or degenerate: no two stains to separate
    d = vahadane_estimate(planes, mask, init=init[0])
    if d is None:
        return None
    conc = nn_lasso2(od, d, 0.01)
    max_c = percentile(conc, 99.0)
    if not np.isfinite(max_c).all() or (max_c <= 1e-6).any():
        return None
    conc *= (np.asarray(target_max, np.float64) / max_c).astype(np.float32)
    return _to_rgb(conc, np.asarray(target_matrix, np.float64), io)
