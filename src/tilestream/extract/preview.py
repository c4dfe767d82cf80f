"""Preview images: the slide thumbnail with tissue, pen and artifact outlines, ROIs, kept and
rejected tiles."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from tilestream._util.atomic import atomic_path
from tilestream.extract.outlines import CLASS_COLORS, OTHER_COLOR, class_name
from tilestream.extract.roi import ROI

__all__ = ["KEPT_COLOR", "REJECTED_COLOR", "render_preview", "save_preview"]

KEPT_COLOR = (0, 200, 70)
REJECTED_COLOR = (230, 40, 40)
TISSUE_COLOR = (40, 90, 255)
ROI_COLOR = (255, 200, 0)


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    edge = np.zeros_like(mask)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    return edge & mask


def _draw_outline(
    canvas: NDArray[np.uint8], mask: NDArray[np.bool_], color: tuple[int, int, int]
) -> None:
    """Draw ``mask``'s outline on ``canvas`` two pixels wide (visible after downscaling)."""
    if mask.shape != canvas.shape[:2]:
        return
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return
    # only the mask's bounding box, with a margin of one pixel before it (the outline
    # compares with the pixel above and left) and two after (the widening goes down, right)
    h, w = mask.shape
    ys = slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 3, h))
    xs = slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 3, w))
    edge = _outline(mask[ys, xs])
    edge[1:] |= edge[:-1]
    edge[:, 1:] |= edge[:, :-1]
    canvas[ys, xs][edge] = color


def render_preview(
    image: NDArray[np.uint8],
    downsample: float,
    *,
    tissue: NDArray[np.bool_] | None = None,
    kept: NDArray[np.int64] | None = None,
    rejected: NDArray[np.int64] | None = None,
    extract_px: int = 0,
    rois: Sequence[ROI] = (),
    qc_masks: Mapping[str, NDArray[np.bool_]] | None = None,
    max_side: int = 1600,
) -> Image.Image:
    """Draw the grid on a low-resolution image.

    Parameters
    ----------
    image, downsample
        The low-resolution RGB image and its level-0 pixels per pixel.
    tissue
        Tissue mask of the same shape as ``image``; its outline is drawn in blue.
    kept, rejected
        ``(n, 2)`` top-left corners in level-0 pixels; kept tiles are outlined
        green, rejected tiles red.
    extract_px
        Tile size in level-0 pixels.
    rois
        ROI polygons, drawn in yellow.
    qc_masks
        Pen and artifact masks (``{"pen": mask, ...}``, the shape of ``image``),
        each outlined in its class colour
        (:data:`tilestream.extract.outlines.CLASS_COLORS`).
    max_side
        The preview's longest side in pixels.

    Examples
    --------
    >>> img = np.full((100, 200, 3), 255, np.uint8)
    >>> im = render_preview(img, 10.0, kept=np.array([[0, 0]]), extract_px=100)
    >>> im.size
    (200, 100)
    """
    canvas = image.copy()
    if tissue is not None:
        _draw_outline(canvas, np.asarray(tissue, bool), TISSUE_COLOR)
    for key, mask in (qc_masks or {}).items():  # drawn over the tissue outline they cut
        _draw_outline(
            canvas, np.asarray(mask, bool), CLASS_COLORS.get(class_name(key), OTHER_COLOR)
        )
    pil = Image.fromarray(canvas)
    scale = min(1.0, max_side / max(pil.size))
    if scale < 1.0:
        pil = pil.resize(
            (max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
            Image.Resampling.BOX,
        )
    factor = scale / downsample
    overlay = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    size = max(extract_px * factor - 1, 1)
    if rejected is not None:
        for x, y in np.asarray(rejected, np.float64).reshape(-1, 2) * factor:
            draw.rectangle((x, y, x + size, y + size), outline=(*REJECTED_COLOR, 160))
    if kept is not None:
        for x, y in np.asarray(kept, np.float64).reshape(-1, 2) * factor:
            draw.rectangle(
                (x, y, x + size, y + size), fill=(*KEPT_COLOR, 40), outline=(*KEPT_COLOR, 255)
            )
    for roi in rois:
        for ring in (roi.exterior, *roi.holes):
            pts = [tuple(p) for p in (ring * factor).tolist()]
            draw.line([*pts, pts[0]], fill=(*ROI_COLOR, 255), width=3)
    return Image.alpha_composite(pil.convert("RGBA"), overlay).convert("RGB")


def save_preview(image: Image.Image, path: str | os.PathLike[str], *, quality: int = 85) -> None:
    """Save a preview as JPEG, atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=quality)
