"""COCO instance masks: polygons and RLE to binary masks, and masks to PNG.

Polygons are rasterised with Pillow (pixel ``(i, j)`` is inside when its
centre ``(i + 0.5, j + 0.5)`` is, close to what ``pycocotools`` does), RLE
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
from PIL import Image, ImageDraw

__all__ = [
    "annotation_mask",
    "decode_rle",
    "encode_rle_string",
    "mask_to_png",
    "polygons_to_mask",
]

Mask = npt.NDArray[np.bool_]


def polygons_to_mask(polygons: Sequence[Sequence[float]], *, height: int, width: int) -> Mask:
    """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``, their union)."""
    image = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for poly in polygons:
        coords = [float(v) for v in poly]
        if len(coords) < 6 or len(coords) % 2:
            raise ValueError(f"a polygon needs >= 3 points as x, y pairs, got {len(coords)} values")
        # Pillow fills pixels whose integer grid point lies inside; shift so the
        # pixel centres are tested instead.
        xy = [(coords[i] - 0.5, coords[i + 1] - 0.5) for i in range(0, len(coords), 2)]
        draw.polygon(xy, fill=1)
    return np.asarray(image, dtype=bool)


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
