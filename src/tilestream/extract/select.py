"""Which grid tiles are kept: ROI, tissue, grayspace, whitespace and count limits.

All decisions are made on the low-resolution image before any tile is read,
vectorised over the whole grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ExtractionError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import Grid
from tilestream.extract.lowres import LowRes
from tilestream.extract.outlines import EXCLUDED_CLASSES, class_name
from tilestream.extract.roi import ROI, outline_mask, rasterize_rois, rois_contain, split_outlines
from tilestream.extract.tissue import (
    box_fractions,
    grayspace_mask,
    saturation,
    tissue_mask,
    whitespace_mask,
)

__all__ = ["REJECT_REASONS", "Selection", "outline_excluded_classes", "select_tiles"]

#: Why a tile was rejected, in the order the filters apply.
REJECT_REASONS = ("roi", "tissue", "grayspace", "whitespace", "max_tiles", "blur")


def outline_excluded_classes() -> tuple[str, ...]:
    """Classes an outline file given back as ROI removes from the tissue.

    The pen and artifact classes of
    :data:`~tilestream.extract.outlines.EXCLUDED_CLASSES` and one per reject
    reason (``"pen"`` -> ``Pen``) except ``roi`` and ``tissue``: every QC mask
    an extraction writes to ``<slide>.geojson`` reads back as excluded.
    """
    reasons = tuple(class_name(r) for r in REJECT_REASONS if r not in ("roi", "tissue"))
    return tuple(dict.fromkeys((*EXCLUDED_CLASSES, *reasons)))


@dataclass
class Selection:
    """The outcome of filtering a grid.

    ``reason[i]`` is ``""`` for a kept tile, else one of :data:`REJECT_REASONS`.
    """

    keep: NDArray[np.bool_]
    reason: NDArray[np.str_]
    tissue: NDArray[np.float64]
    grayspace: NDArray[np.float64]
    whitespace: NDArray[np.float64]
    tissue_mask: NDArray[np.bool_]
    roi_mask: NDArray[np.bool_] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def kept_indices(self) -> NDArray[np.int64]:
        """Grid indices of kept tiles, in grid order."""
        return np.flatnonzero(self.keep)


def _reject(
    sel_keep: NDArray[np.bool_], reason: NDArray[np.str_], drop: NDArray[np.bool_], why: str
) -> None:
    hit = sel_keep & drop
    reason[hit] = why
    sel_keep &= ~drop


def select_tiles(
    grid: Grid,
    lowres: LowRes,
    config: ExtractConfig,
    *,
    rois: Sequence[ROI] | None = None,
    name: str = "slide",
) -> Selection:
    """Apply the configured filters to every tile of ``grid`` at once.

    ``rois`` features classified ``Tissue`` replace the detected tissue mask
    and those of :func:`outline_excluded_classes` are removed from it (an
    outline file such as ``<slide>.geojson``, corrected in QuPath or not; the
    tissue filter then applies to that mask as usual); the other features are
    regions of interest for ``config.roi_method``. With ``roi_method="ignore"``
    the whole file is ignored.
    """
    n = len(grid)
    ds = lowres.downsample
    img = lowres.image
    boxes = np.stack(
        [
            np.floor(grid.xs / ds),
            np.floor(grid.ys / ds),
            np.full(n, max(1, round(grid.extract_px / ds))),
            np.full(n, max(1, round(grid.extract_px / ds))),
        ],
        axis=1,
    ).astype(np.int64)
    keep = np.ones(n, bool)
    reason = np.full(n, "", dtype="<U10")

    method = config.roi_method
    if method == "auto":
        method = "inside" if rois else "ignore"
    if method in ("inside", "outside") and not rois:
        raise ExtractionError(f"{name}: roi_method={method!r} but the slide has no ROI")
    # classified Tissue / pen / artifact features define the tissue, the rest are ROIs
    rois, tissue_rois, excluded_rois = (
        split_outlines(rois or (), outline_excluded_classes())
        if method != "ignore"
        else ([], [], [])
    )
    roi_mask = None
    if method in ("inside", "outside") and rois:
        roi_mask = rasterize_rois(rois, lowres.shape, ds)
        if config.roi_fraction is None:
            inside = rois_contain(rois, grid.centers.astype(np.float64))
            ok = inside if method == "inside" else ~inside
        else:
            frac = box_fractions(roi_mask, boxes)
            frac = frac if method == "inside" else 1.0 - frac
            ok = frac >= config.roi_fraction
        _reject(keep, reason, ~ok, "roi")

    sat = saturation(img)
    if tissue_rois or excluded_rois:  # an outline file (e.g. corrected in QuPath) is the tissue
        detected = (
            tissue_mask(img, smooth=max(1, round(24 / ds)), sat=sat)
            if config.tissue_method == "otsu" and not tissue_rois
            else np.ones(lowres.shape, bool)
        )
        tmask = outline_mask(tissue_rois, excluded_rois, detected, ds)
        tissue = box_fractions(tmask, boxes)
        _reject(keep, reason, tissue < config.min_tissue, "tissue")
    elif config.tissue_method == "otsu":
        # close gaps between stained structures over about 24 level-0 pixels
        tmask = tissue_mask(img, smooth=max(1, round(24 / ds)), sat=sat)
        tissue = box_fractions(tmask, boxes)
        _reject(keep, reason, tissue < config.min_tissue, "tissue")
    else:
        tmask = np.ones(lowres.shape, bool)
        tissue = np.ones(n)

    gray = np.zeros(n)
    if config.grayspace_fraction is not None:
        gray = box_fractions(grayspace_mask(img, config.grayspace_threshold, sat=sat), boxes)
        _reject(keep, reason, gray > config.grayspace_fraction, "grayspace")
    white = np.zeros(n)
    if config.whitespace_fraction is not None:
        white = box_fractions(whitespace_mask(img, config.whitespace_threshold), boxes)
        _reject(keep, reason, white > config.whitespace_fraction, "whitespace")

    if config.max_tiles is not None and keep.sum() > config.max_tiles:
        kept = np.flatnonzero(keep)
        rng = np.random.default_rng(config.seed)
        chosen = np.zeros(n, bool)
        chosen[rng.choice(kept, size=config.max_tiles, replace=False)] = True
        _reject(keep, reason, ~chosen, "max_tiles")

    counts = {r: int((reason == r).sum()) for r in REJECT_REASONS}
    return Selection(
        keep=keep,
        reason=reason,
        tissue=tissue,
        grayspace=gray,
        whitespace=white,
        tissue_mask=tmask,
        roi_mask=roi_mask,
        counts=counts,
    )
