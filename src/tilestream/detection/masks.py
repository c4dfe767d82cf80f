"""COCO instance masks: polygons and RLE to binary masks, and masks to PNG.

Polygons are rasterised exactly as ``pycocotools`` does, RLE
(uncompressed ``counts`` lists and the compressed string form) is decoded with
numpy; ``pycocotools`` is not needed. Masks are written as the TF Object
Detection API stores them: a single-channel PNG of 0 and 1 per object.

Examples
--------
>>> m = decode_rle({"counts": [0, 20, 30], "size": [10, 5]})
>>> m.shape, int(m.sum()), m[:, :2].all()
((10, 5), 20, np.True_)
>>> p = polygons_to_mask([[0, 0, 2, 0, 2, 3, 0, 3]], height=4, width=4)
>>> p.astype(int).tolist()
[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
>>> decode_rle(encode_rle_string(p)).tolist() == p.tolist()
True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "annotation_mask",
    "decode_rle",
    "encode_rle_string",
    "mask_to_png",
    "polygons_to_mask",
]

Mask = npt.NDArray[np.bool_]


def _polygon_runs(coords: npt.NDArray[np.float64], height: int, width: int) -> list[int]:
    """RLE runs of one polygon, by the algorithm of the COCO API (``rleFrPoly``).

    The outline is traced on a 5x finer grid; every place where it crosses a
    pixel column's centre line toggles inside/outside at that pixel, in
    column-major order. Matching it exactly keeps masks identical to the ones
    the TF OD API's own COCO tool (which calls ``pycocotools``) writes.
    """
    scale = 5.0
    # C's (int)(v + .5): truncation toward zero
    px = np.trunc(scale * coords[0::2] + 0.5).astype(np.int64)
    py = np.trunc(scale * coords[1::2] + 0.5).astype(np.int64)
    us: list[npt.NDArray[np.int64]] = []
    vs: list[npt.NDArray[np.int64]] = []
    n = len(px)
    for j in range(n):
        xs, ys = int(px[j]), int(py[j])
        xe, ye = int(px[(j + 1) % n]), int(py[(j + 1) % n])
        dx, dy = abs(xe - xs), abs(ye - ys)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx == 0 and dy == 0:
            us.append(np.array([xs]))
            vs.append(np.array([ys]))
            continue
        if dx >= dy:
            t = np.arange(dx + 1)
            t = dx - t if flip else t
            us.append(t + xs)
            vs.append(np.trunc(ys + (ye - ys) / dx * t + 0.5).astype(np.int64))
        else:
            t = np.arange(dy + 1)
            t = dy - t if flip else t
            vs.append(t + ys)
            us.append(np.trunc(xs + (xe - xs) / dy * t + 0.5).astype(np.int64))
    u, v = np.concatenate(us), np.concatenate(vs)
    step = u[1:] != u[:-1]
    cur_u, prev_u, cur_v, prev_v = u[1:][step], u[:-1][step], v[1:][step], v[:-1][step]
    xd = (np.where(cur_u < prev_u, cur_u, cur_u - 1) + 0.5) / scale - 0.5
    yd = (np.minimum(cur_v, prev_v) + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    xi = xd[keep].astype(np.int64)
    yi = np.ceil(np.clip(yd[keep], 0, height)).astype(np.int64)
    toggles = np.sort(np.append(xi * height + yi, height * width))
    runs = np.diff(toggles, prepend=0).tolist()
    # a zero-length run joins its neighbours
    merged = [runs[0]]
    i = 1
    while i < len(runs):
        if runs[i] > 0:
            merged.append(runs[i])
            i += 1
        else:
            if i + 1 < len(runs):
                merged[-1] += runs[i + 1]
            i += 2
    return merged


def polygons_to_mask(polygons: Sequence[Sequence[float]], *, height: int, width: int) -> Mask:
    """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``), their union.

    Pixel for pixel what ``pycocotools`` gives (``frPyObjects`` + ``merge`` +
    ``decode``), checked in the tests. (Pillow's ``ImageDraw.polygon`` rounds
    vertices to whole pixels, shifting fractional COCO polygons by up to half a
    pixel, so it is not used.)
    """
    mask = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        coords = np.asarray([float(v) for v in poly], dtype=np.float64)
        if coords.size < 6 or coords.size % 2 or not np.isfinite(coords).all():
            raise ValueError(
                f"a polygon needs >= 3 finite points as x, y pairs, got {coords.size} values"
            )
        runs = _polygon_runs(coords, height, width)
        mask |= decode_rle({"size": [height, width], "counts": runs})
    return mask


def _counts_from_string(counts: str) -> list[int]:
    # The LEB128-like code of pycocotools' rleFrString.
    out: list[int] = []
    data = counts.encode("ascii")
    p = 0
    while p < len(data):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(data):
                raise ValueError("compressed RLE ends inside a number")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def encode_rle_string(mask: npt.NDArray[Any]) -> dict[str, Any]:
    """Encode a binary mask as a compressed COCO RLE (``{"size", "counts"}``)."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    chars = bytearray()
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = not ((c & 0x10) == 0 and x == 0) and not ((c & 0x10) and x == -1)
            if more:
                c |= 0x20
            chars.append(c + 48)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": chars.decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> Mask:
    """Decode a COCO RLE (``counts`` as a list or a compressed string) to a mask.

    Runs alternate 0s and 1s, starting with 0s, in column-major order over an
    image of ``size = [height, width]``.
    """
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = _counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(
            f"RLE counts sum to {sum(runs)}, the mask has {height}x{width}={height * width} pixels"
        )
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((width, height)).T.copy()


def annotation_mask(segmentation: Any, *, height: int, width: int) -> Mask:
    """The mask of one COCO ``segmentation`` (polygon list or RLE) on a ``height x width`` image.

    Raises
    ------
    ValueError
        When the segmentation is malformed or its RLE size is not the image size.
    """
    if isinstance(segmentation, dict):
        mask = decode_rle(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {list(mask.shape)} differs from the image {height}x{width}")
        return mask
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height=height, width=width)
    raise ValueError(f"unsupported segmentation {type(segmentation).__name__}")


def mask_to_png(mask: npt.NDArray[Any]) -> bytes:
    """Encode a mask as a single-channel 8-bit PNG of 0 and 1 (the OD API form)."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()
