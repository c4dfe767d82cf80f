"""Colour conversions for stain normalisation: sRGB <-> CIE LAB and optical density.

LAB follows the convention of scikit-image, Slideflow and torchstain (D65
white, ``L`` in 0-100, ``a`` and ``b`` centred on 0). Input pixels are uint8,
so the sRGB decoding and the optical density are 256-entry lookup tables and
everything else runs in float32.

Examples
--------
>>> import numpy as np
>>> img = np.array([[[255, 255, 255], [0, 0, 0], [200, 120, 170]]], np.uint8)
>>> lab = rgb_to_lab(img)
>>> (np.round(lab[0, :2], 1) + 0.0).tolist()
[[100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
>>> bool((lab_to_rgb(lab) == img).all())
True
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

__all__ = ["lab_to_rgb", "mm3", "od_table", "rgb_to_lab", "srgb_decode_table"]

_RGB2XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
# Forward: linear RGB -> XYZ / white; inverse: XYZ / white -> linear RGB.
_FWD_T = (np.diag(1.0 / _WHITE) @ _RGB2XYZ).T.astype(np.float32)
_INV_T = (np.linalg.inv(_RGB2XYZ) @ np.diag(_WHITE)).T.astype(np.float32)
_EPS = np.float32(0.008856)
_KAPPA = np.float32(7.787)
_OFF = np.float32(16.0 / 116.0)
_CHUNK = 4096
# (fx, fy, fz) -> (L + 16, a, b)
_TO_LAB = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]], np.float32)
# (L, a, b) -> (fx, fy, fz), plus the constant 16 / 116 in every component.
_FROM_LAB = np.array(
    [[1 / 116, 1 / 116, 1 / 116], [1 / 500, 0.0, 0.0], [0.0, 0.0, -1 / 200]], np.float32
)
_FROM_LAB_OFFSET = np.full(3, 16 / 116, np.float32)


def mm3(x: NDArray[np.float32], m: NDArray[np.float32]) -> NDArray[np.float32]:
    """``x @ m`` for pixels ``x`` of shape ``(..., c)`` and a small ``(c, k)`` matrix.

    Done in blocks of 4096 pixels: one huge matrix product goes to a
    multi-threaded BLAS call that is much slower for 3 columns (and stalls on a
    busy machine) than single-threaded blocks.
    """
    m = np.asarray(m, np.float32)
    c, k = m.shape
    flat = np.ascontiguousarray(x, np.float32).reshape(-1, c)
    p = flat.shape[0]
    out = np.empty((p, k), np.float32)
    blocks = p // _CHUNK
    head = blocks * _CHUNK
    if blocks:
        np.matmul(
            flat[:head].reshape(blocks, _CHUNK, c), m, out=out[:head].reshape(blocks, _CHUNK, k)
        )
    if head < p:
        np.matmul(flat[head:], m, out=out[head:])
    return out.reshape(*np.shape(x)[:-1], k)


@functools.lru_cache(maxsize=1)
def srgb_decode_table() -> NDArray[np.float32]:
    """Linear-light value of each 8-bit sRGB level (256 float32)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    return lin.astype(np.float32)


@functools.lru_cache(maxsize=8)
def od_table(io: float) -> NDArray[np.float32]:
    """Optical density ``-log((v + 1) / io)`` of each 8-bit level (256 float32)."""
    v = np.arange(256, dtype=np.float64)
    return (-np.log((v + 1.0) / float(io))).astype(np.float32)


def rgb_to_lab(img: NDArray[np.uint8]) -> NDArray[np.float32]:
    """CIE LAB (float32, same shape) of uint8 RGB pixels ``(..., 3)``."""
    f = mm3(np.take(srgb_decode_table(), img), _FWD_T)
    cube = np.cbrt(f)
    small = f <= _EPS
    if small.any():
        cube[small] = _KAPPA * f[small] + _OFF
    out = mm3(cube, _TO_LAB)
    out[..., 0] -= np.float32(16.0)
    return out


def lab_to_rgb(
    lab: NDArray[np.float32],
    scale: NDArray[np.floating] | None = None,
    offset: NDArray[np.floating] | None = None,
) -> NDArray[np.uint8]:
    """uint8 RGB (rounded, clipped) of float LAB pixels ``(..., 3)``.

    With ``scale`` and ``offset`` (3 values each) the LAB values are first
    mapped to ``lab * scale + offset`` (folded into the conversion matrix).
    """
    m = _FROM_LAB.astype(np.float64)
    c = _FROM_LAB_OFFSET.astype(np.float64)
    if scale is not None:
        c = np.asarray(offset, np.float64) @ m + c
        m = np.asarray(scale, np.float64)[:, None] * m
    f = mm3(lab, m.astype(np.float32))
    f += c.astype(np.float32)
    xyz = f * f
    xyz *= f
    small = f <= np.float32(0.2068966)
    if small.any():
        xyz[small] = (f[small] - _OFF) * np.float32(1.0 / 7.787)
    lin = mm3(xyz, _INV_T)
    np.clip(lin, 0.0, 1.0, out=lin)
    enc = np.power(lin, np.float32(1.0 / 2.4))
    enc *= np.float32(1.055 * 255.0)
    enc -= np.float32(0.055 * 255.0)
    low = lin <= np.float32(0.0031308)
    if low.any():
        enc[low] = lin[low] * np.float32(12.92 * 255.0)
    np.clip(enc, 0.0, 255.0, out=enc)
    return np.rint(enc, out=enc).astype(np.uint8)
