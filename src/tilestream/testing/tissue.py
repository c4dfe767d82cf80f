"""The tissue of a synthetic slide: pixels as a pure function of position and seed.

Blob-shaped tissue regions (a smooth random field above a quantile) cover about
a given fraction of the slide, filled with 256 px patches of tissue (cut from a
real slide by :func:`tissue_patches_from_slide`, or :func:`procedural_patches`),
randomly chosen, rotated and mirrored per patch, over a near-white background.
:meth:`Tissue.render` computes any rectangle of any power-of-two level
directly, so a generator can write a slide of any size tile by tile.
:mod:`tilestream.testing.synthetic` writes it as an Aperio-style SVS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ConfigError, SlideError

__all__ = [
    "BACKGROUND",
    "PATCH",
    "Array",
    "Tissue",
    "normalise_patches",
    "procedural_patches",
    "tissue_patches_from_slide",
]

PATCH = 256
"""Side in level-0 pixels of one tissue patch (a power of two, so that every
power-of-two level downsample up to ``PATCH`` maps a patch onto whole pixels)."""

BACKGROUND = (242, 242, 242)
"""Colour of the glass around the tissue (Aperio backgrounds are near white)."""

_MAX_FIELD = 1024  # the tissue field is a grid of at most this many cells a side
_MAX_PATCHES = 64

Array = NDArray[np.uint8]


def _box_reduce(image: NDArray, factor: int) -> NDArray[np.float32]:
    """Mean over ``factor`` x ``factor`` blocks of the last two spatial axes."""
    if factor == 1:
        return image.astype(np.float32)
    *lead, h, w, c = image.shape
    blocks = image.reshape(*lead, h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(-4, -2), dtype=np.float32)


def procedural_patches(count: int, seed: int) -> Array:
    """H&E-like patches (pink stroma, purple nuclei), for use without a real slide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)
    patches = np.empty((count, PATCH, PATCH, 3), np.uint8)
    eosin = np.array([225, 150, 190], np.float32)
    hematoxylin = np.array([95, 60, 140], np.float32)
    for n in range(count):
        # Low-frequency variation of the stroma.
        wobble = np.zeros((PATCH, PATCH), np.float32)
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.01, 0.06), rng.uniform(0.01, 0.06), rng.uniform(0, 6.3)
            wobble += np.sin(xx * fx + yy * fy + phase)
        image = eosin[None, None, :] + (wobble * 6)[..., None]
        nuclei = np.zeros((PATCH, PATCH), np.float32)
        for _ in range(int(rng.integers(25, 60))):
            cx, cy = rng.uniform(0, PATCH, 2)
            rx, ry = rng.uniform(3, 7, 2)
            d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
            nuclei = np.maximum(nuclei, np.clip(1.5 - d, 0, 1))
        image = image * (1 - nuclei[..., None]) + hematoxylin * nuclei[..., None]
        image += rng.normal(0, 4, image.shape).astype(np.float32)
        patches[n] = np.clip(image, 0, 255).astype(np.uint8)
    return patches


def tissue_patches_from_slide(
    path: str | os.PathLike[str], *, max_patches: int = _MAX_PATCHES, min_tissue: float = 0.6
) -> Array:
    """Cut 256 x 256 patches of tissue out of level 0 of a real slide.

    Candidate patches lie on a half-overlapping grid; the ones with the most
    tissue (saturated, not near-white pixels) are kept, at least one.

    Parameters
    ----------
    path
        A slide OpenSlide can read.
    max_patches
        Keep at most this many patches.
    min_tissue
        Fraction of tissue pixels a patch needs (ignored if no patch has that much).

    Returns
    -------
    numpy.ndarray
        ``(n, 256, 256, 3)`` RGB uint8 patches.

    Raises
    ------
    SlideError
        The slide cannot be read or is smaller than one patch.
    """
    import openslide

    try:
        with openslide.OpenSlide(os.fspath(path)) as osr:
            width, height = osr.dimensions
            if width < PATCH or height < PATCH:
                raise SlideError(f"smaller than one {PATCH} px tissue patch", path=path)
            # Rank the grid on the thumbnail first so that large slides stay cheap.
            step = PATCH // 2
            cells = [
                (x, y)
                for y in range(0, height - PATCH + 1, step)
                for x in range(0, width - PATCH + 1, step)
            ]
            scale = max(1.0, max(width, height) / 2048)
            thumb = np.asarray(
                osr.get_thumbnail((int(width / scale), int(height / scale))).convert("RGB")
            )
            tissue = _tissue_pixels(thumb)
            sy, sx = tissue.shape[0] / height, tissue.shape[1] / width

            def score(cell: tuple[int, int]) -> float:
                x, y = cell
                window = tissue[
                    int(y * sy) : max(int((y + PATCH) * sy), int(y * sy) + 1),
                    int(x * sx) : max(int((x + PATCH) * sx), int(x * sx) + 1),
                ]
                return float(window.mean())

            ranked = sorted(cells, key=score, reverse=True)[: max_patches * 4]
            found: list[tuple[float, Array]] = []
            for x, y in ranked:
                patch = np.asarray(osr.read_region((x, y), 0, (PATCH, PATCH)).convert("RGB"))
                found.append((float(_tissue_pixels(patch).mean()), patch))
    except openslide.OpenSlideError as exc:
        raise SlideError(f"cannot read tissue patches: {exc}", path=path) from exc
    found.sort(key=lambda item: -item[0])
    keep = [p for f, p in found if f >= min_tissue][:max_patches] or [found[0][1]]
    return np.stack(keep)


def _tissue_pixels(rgb: Array) -> NDArray[np.bool_]:
    rgb16 = rgb.astype(np.int16)
    saturated = (rgb16.max(axis=2) - rgb16.min(axis=2)) > 25
    return saturated & (rgb16.mean(axis=2) < 215)


def normalise_patches(tiles: NDArray | Sequence[NDArray]) -> Array:
    from PIL import Image

    out = []
    for tile in tiles:
        arr = np.asarray(tile)
        if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint8:
            raise ConfigError(
                "source tiles must be (height, width, 3) uint8 RGB arrays, "
                f"got {arr.shape} {arr.dtype}"
            )
        arr = arr[..., :3]
        if arr.shape[:2] != (PATCH, PATCH):
            arr = np.asarray(Image.fromarray(arr).resize((PATCH, PATCH), Image.Resampling.LANCZOS))
        out.append(arr)
    if not out:
        raise ConfigError("source_tiles is empty")
    return np.ascontiguousarray(np.stack(out))


def _splitmix(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Tissue:
    """Pixels of the synthetic slide as a pure function of position and seed."""

    def __init__(
        self, width: int, height: int, patches: Array, tissue_fraction: float, seed: int
    ) -> None:
        self.patches = patches
        self.seed = seed
        self._reduced: dict[int, Array] = {1: patches}
        self.background = np.array(BACKGROUND, np.float32)
        # A smooth random field on a coarse grid; tissue where it exceeds a quantile.
        cell = max(16, math.ceil(max(width, height) / _MAX_FIELD))
        gw, gh = math.ceil(width / cell) + 2, math.ceil(height / cell) + 2
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((gh, gw))
        sigma = max(1.5, min(width, height) / 14 / cell)
        fy = np.fft.fftfreq(gh)[:, None]
        fx = np.fft.rfftfreq(gw)[None, :]
        kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
        smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(gh, gw))
        smooth = (smooth - smooth.mean()) / (smooth.std() or 1.0)
        self.field = smooth.astype(np.float32)
        self.cell = cell
        inside = self.field[: gh - 2, : gw - 2]
        if tissue_fraction <= 0:
            self.threshold = math.inf
        elif tissue_fraction >= 1:
            self.threshold = -math.inf
        else:
            self.threshold = float(np.quantile(inside, 1 - tissue_fraction))
        self.edge = 0.03  # field units over which tissue fades into glass

    def reduced_patches(self, factor: int) -> Array:
        if factor not in self._reduced:
            reduced = _box_reduce(self.patches, factor)
            self._reduced[factor] = np.rint(reduced).astype(np.uint8)
        return self._reduced[factor]

    def alpha(self, x0: NDArray[np.float64], y0: NDArray[np.float64]) -> NDArray[np.float32]:
        """Tissue opacity at level-0 positions ``x0`` (columns) and ``y0`` (rows)."""
        if math.isinf(self.threshold):
            value = 0.0 if self.threshold > 0 else 1.0
            return np.full((y0.size, x0.size), value, np.float32)
        gh, gw = self.field.shape
        u = np.clip(x0 / self.cell, 0, gw - 1.001)
        v = np.clip(y0 / self.cell, 0, gh - 1.001)
        iu, iv = u.astype(np.intp), v.astype(np.intp)
        fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
        f = self.field
        top = f[iv][:, iu] * (1 - fu) + f[iv][:, iu + 1] * fu
        bottom = f[iv + 1][:, iu] * (1 - fu) + f[iv + 1][:, iu + 1] * fu
        value = top * (1 - fv)[:, None] + bottom * fv[:, None]
        return np.clip((value - self.threshold) / self.edge + 0.5, 0, 1).astype(np.float32)

    def texture(self, lx: int, ly: int, w: int, h: int, downsample: int) -> Array:
        """Tissue texture for level pixels ``[lx, lx+w) x [ly, ly+h)``."""
        if downsample > PATCH:
            factor = downsample // PATCH
            big = self.texture(lx * factor, ly * factor, w * factor, h * factor, PATCH)
            return np.rint(_box_reduce(big, factor)).astype(np.uint8)
        side = PATCH // downsample
        patches = self.reduced_patches(downsample)
        c0, r0 = lx // side, ly // side
        c1, r1 = (lx + w - 1) // side, (ly + h - 1) // side
        cols = np.arange(c0, c1 + 1, dtype=np.int64)
        rows = np.arange(r0, r1 + 1, dtype=np.int64)
        salt = np.uint64((self.seed * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
        with np.errstate(over="ignore"):
            key = (
                (rows[:, None].astype(np.uint64) << np.uint64(32))
                ^ (cols[None, :].astype(np.uint64) & np.uint64(0xFFFFFFFF))
            ) + salt
        hashes = _splitmix(key)
        choice = (hashes % np.uint64(len(patches))).astype(np.intp)
        orient = ((hashes >> np.uint64(40)) % np.uint64(8)).astype(np.intp)
        canvas = np.empty(((r1 - r0 + 1) * side, (c1 - c0 + 1) * side, 3), np.uint8)
        for i in range(rows.size):
            for j in range(cols.size):
                patch = patches[choice[i, j]]
                o = int(orient[i, j])
                if o >= 4:
                    patch = patch[:, ::-1]
                canvas[i * side : (i + 1) * side, j * side : (j + 1) * side] = np.rot90(
                    patch, o % 4
                )
        ox, oy = lx - c0 * side, ly - r0 * side
        return canvas[oy : oy + h, ox : ox + w]

    def render(self, lx: int, ly: int, w: int, h: int, downsample: int) -> Array:
        x0 = (np.arange(lx, lx + w, dtype=np.float64) + 0.5) * downsample
        y0 = (np.arange(ly, ly + h, dtype=np.float64) + 0.5) * downsample
        alpha = self.alpha(x0, y0)
        if not alpha.any():
            out = np.empty((h, w, 3), np.uint8)
            out[...] = BACKGROUND
            return out
        tissue = self.texture(lx, ly, w, h, downsample)
        if alpha.min() >= 1:
            return np.ascontiguousarray(tissue)
        a = alpha[..., None]
        mixed = tissue * a + self.background * (1 - a)
        return np.rint(mixed).astype(np.uint8)


# ---------------------------------------------------------------------------
# Aperio-style JPEG
