"""Which grid tiles are kept: ROI, tissue, pen/artifact QC, grayspace, whitespace, count limits.

An outline file given as ROI (``<slide>.geojson``, maybe corrected in QuPath) replaces
the detected tissue with its ``Tissue`` features and the QC masks with its pen and
artifact features.

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
from tilestream.extract.qc import qc_masks
from tilestream.extract.roi import ROI, outline_mask, rasterize_rois, rois_contain, split_outlines
from tilestream.extract.tissue import (
    box_fractions,
    box_mean,
    grayspace_mask,
    saturation,
    tissue_mask,
    whitespace_mask,
)

__all__ = [
    "QC_REASONS",
    "REJECT_REASONS",
    "Selection",
    "outline_excluded_classes",
    "qc_areas_mm2",
    "select_tiles",
    "tile_boxes",
]

#: Why a tile was rejected, in the order the filters apply. ``pen``, ``fold``
#: and ``blur_map`` come from the QC masks of the low-resolution image
#: (:mod:`tilestream.extract.qc`); ``blur`` from the tiles' own pixels.
REJECT_REASONS = (
    "roi", "tissue", "pen", "fold", "blur_map", "grayspace", "whitespace", "max_tiles", "blur"
)  # fmt: skip
#: QC mask name -> the reject reason (and coordinates column) of its tiles.
QC_REASONS = {"pen": "pen", "fold": "fold", "blur": "blur_map"}


def outline_excluded_classes() -> tuple[str, ...]:
    """Classes an outline file given back as ROI removes from the tissue.

    The pen and artifact classes of
    :data:`~tilestream.extract.outlines.EXCLUDED_CLASSES`, one per QC mask
    (``"pen"`` -> ``Pen``) and one per reject reason except ``roi`` and
    ``tissue``: every QC mask an extraction writes to ``<slide>.geojson``
    reads back as excluded.
    """
    names = (*QC_REASONS, *(r for r in REJECT_REASONS if r not in ("roi", "tissue")))
    return tuple(dict.fromkeys((*EXCLUDED_CLASSES, *(class_name(r) for r in names))))


@dataclass
class Selection:
    """The outcome of filtering a grid.

    ``reason[i]`` is ``""`` for a kept tile, else one of :data:`REJECT_REASONS`.
    ``tissue_mask`` is the final tissue mask, after the removal of pen and
    artifacts that are switched on; ``qc_masks`` holds each computed QC mask
    (``pen``, ``fold``, ``blur``; same shape) and ``qc_fractions`` each
    tile's fraction covered by it.
    """

    keep: NDArray[np.bool_]
    reason: NDArray[np.str_]
    tissue: NDArray[np.float64]
    grayspace: NDArray[np.float64]
    whitespace: NDArray[np.float64]
    tissue_mask: NDArray[np.bool_]
    roi_mask: NDArray[np.bool_] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    qc_masks: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    qc_fractions: dict[str, NDArray[np.float64]] = field(default_factory=dict)

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


def tile_boxes(grid: Grid, downsample: float) -> NDArray[np.int64]:
    """Each grid tile's box ``(x, y, width, height)`` in pixels of an image ``downsample`` times smaller."""
    n = len(grid)
    side = max(1, round(grid.extract_px / downsample))
    return np.stack(
        [
            np.floor(grid.xs / downsample),
            np.floor(grid.ys / downsample),
            np.full(n, side),
            np.full(n, side),
        ],
        axis=1,
    ).astype(np.int64)


def select_tiles(
    grid: Grid,
    lowres: LowRes,
    config: ExtractConfig,
    *,
    rois: Sequence[ROI] | None = None,
    name: str = "slide",
) -> Selection:
    """Apply the configured filters to every tile of ``grid`` at once.

    In :data:`REJECT_REASONS` order: the ROIs, the tissue with its pen and
    artifact QC, grayspace and whitespace, then the count limit. A tile
    rejected by one filter keeps that filter's reason.
    """
    n = len(grid)
    boxes = tile_boxes(grid, lowres.downsample)
    keep = np.ones(n, bool)
    reason = np.full(n, "", dtype="<U10")
    roi_mask, tissue_rois, excluded_rois = _filter_rois(
        keep, reason, grid, lowres, boxes, config, rois=rois, name=name
    )
    sat = saturation(lowres.image)
    tissue, tmask, masks, fractions = _filter_tissue(
        keep, reason, lowres, boxes, config, sat=sat, tissue_rois=tissue_rois,
        excluded_rois=excluded_rois,
    )  # fmt: skip
    gray, white = _filter_background(keep, reason, lowres.image, boxes, config, sat=sat)
    _limit_count(keep, reason, config)
    return Selection(
        keep=keep,
        reason=reason,
        tissue=tissue,
        grayspace=gray,
        whitespace=white,
        tissue_mask=tmask,
        roi_mask=roi_mask,
        counts={r: int((reason == r).sum()) for r in REJECT_REASONS},
        qc_masks=masks,
        qc_fractions=fractions,
    )


def _filter_rois(
    keep: NDArray[np.bool_],
    reason: NDArray[np.str_],
    grid: Grid,
    lowres: LowRes,
    boxes: NDArray[np.int64],
    config: ExtractConfig,
    *,
    rois: Sequence[ROI] | None,
    name: str,
) -> tuple[NDArray[np.bool_] | None, list[ROI], list[ROI]]:
    """Reject the tiles outside (or inside) the ROIs; return the ROI mask and the outline ROIs.

    Classified ``Tissue`` / pen / artifact features of an outline file are not
    ROIs: they come back as ``(tissue_rois, excluded_rois)`` for the tissue filter.
    """
    method = config.roi_method
    if method == "auto":
        method = "inside" if rois else "ignore"
    if method in ("inside", "outside") and not rois:
        raise ExtractionError(f"{name}: roi_method={method!r} but the slide has no ROI")
    if method == "ignore":
        return None, [], []
    plain, tissue_rois, excluded_rois = split_outlines(rois or (), outline_excluded_classes())
    roi_mask = None
    if method in ("inside", "outside") and plain:
        roi_mask = rasterize_rois(plain, lowres.shape, lowres.downsample)
        if config.roi_fraction is None:
            inside = rois_contain(plain, grid.centers.astype(np.float64))
            ok = inside if method == "inside" else ~inside
        else:
            frac = box_fractions(roi_mask, boxes)
            frac = frac if method == "inside" else 1.0 - frac
            ok = frac >= config.roi_fraction
        _reject(keep, reason, ~ok, "roi")
    return roi_mask, tissue_rois, excluded_rois


def _filter_tissue(
    keep: NDArray[np.bool_],
    reason: NDArray[np.str_],
    lowres: LowRes,
    boxes: NDArray[np.int64],
    config: ExtractConfig,
    *,
    sat: NDArray[np.float32],
    tissue_rois: Sequence[ROI],
    excluded_rois: Sequence[ROI],
) -> tuple[
    NDArray[np.float64],
    NDArray[np.bool_],
    dict[str, NDArray[np.bool_]],
    dict[str, NDArray[np.float64]],
]:
    """Reject tiles with too little tissue, and by the pen and artifact QC masks.

    Returns each tile's tissue fraction, the final tissue mask (pen and
    artifacts removed), the QC masks and each tile's fraction of each.
    """
    img, ds = lowres.image, lowres.downsample
    outline = bool(tissue_rois or excluded_rois)
    given: dict[str, NDArray[np.bool_]] | None = None
    detect = config.tissue_method == "otsu" and not tissue_rois
    # close gaps between stained structures over about 24 level-0 pixels
    tmask = (
        tissue_mask(img, smooth=max(1, round(24 / ds)), sat=sat)
        if detect
        else np.ones(lowres.shape, bool)
    )
    if outline:  # an outline file (e.g. corrected in QuPath) is the tissue and its QC regions
        tmask, given = _outline_masks(tissue_rois, excluded_rois, tmask, ds, config)
    if config.tissue_method == "otsu" or outline:
        before = box_fractions(tmask, boxes)
        _reject(keep, reason, before < config.min_tissue, "tissue")
    final, masks, fractions = _apply_qc(keep, reason, tmask, img, boxes, config, given=given)
    if config.tissue_method != "otsu" and not outline:
        tissue = np.ones(len(boxes))
    elif final is tmask:  # nothing was removed
        tissue = before
    else:
        tissue = box_fractions(final, boxes)
        _reject(keep, reason, tissue < config.min_tissue, "tissue")
    return tissue, final, masks, fractions


def _filter_background(
    keep: NDArray[np.bool_],
    reason: NDArray[np.str_],
    img: NDArray[np.uint8],
    boxes: NDArray[np.int64],
    config: ExtractConfig,
    *,
    sat: NDArray[np.float32],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reject tiles with too much grayspace or whitespace; return each tile's fractions of both."""
    n = len(boxes)
    gray = np.zeros(n)
    if config.grayspace_fraction is not None:
        gray = box_fractions(grayspace_mask(img, config.grayspace_threshold, sat=sat), boxes)
        _reject(keep, reason, gray > config.grayspace_fraction, "grayspace")
    white = np.zeros(n)
    if config.whitespace_fraction is not None:
        white = box_fractions(whitespace_mask(img, config.whitespace_threshold), boxes)
        _reject(keep, reason, white > config.whitespace_fraction, "whitespace")
    return gray, white


def _limit_count(keep: NDArray[np.bool_], reason: NDArray[np.str_], config: ExtractConfig) -> None:
    """Keep at most ``max_tiles`` tiles, chosen at random (``seed``) among those kept."""
    if config.max_tiles is not None and keep.sum() > config.max_tiles:
        kept = np.flatnonzero(keep)
        rng = np.random.default_rng(config.seed)
        chosen = np.zeros(len(keep), bool)
        chosen[rng.choice(kept, size=config.max_tiles, replace=False)] = True
        _reject(keep, reason, ~chosen, "max_tiles")


def _apply_qc(
    keep: NDArray[np.bool_],
    reason: NDArray[np.str_],
    tmask: NDArray[np.bool_],
    img: NDArray[np.uint8],
    boxes: NDArray[np.int64],
    config: ExtractConfig,
    *,
    given: dict[str, NDArray[np.bool_]] | None = None,
) -> tuple[NDArray[np.bool_], dict[str, NDArray[np.bool_]], dict[str, NDArray[np.float64]]]:
    """Compute the QC masks (or take ``given`` ones), reject tiles by them, and remove
    them from the tissue mask."""
    if given is not None:
        masks = given
    else:
        masks = qc_masks(
            img,
            tmask,
            pen=config.pen != "off",
            fold=config.fold != "off",
            blur=config.blur_map != "off",
        ).masks
    limits = {
        "pen": (config.pen, config.max_pen_fraction),
        "fold": (config.fold, config.max_fold_fraction),
        "blur": (config.blur_map, config.max_blur_fraction),
    }
    fractions: dict[str, NDArray[np.float64]] = {}
    final = tmask
    for key, mask in masks.items():
        if not mask.any():  # the common case: nothing to measure or remove
            fractions[key] = np.zeros(len(boxes))
            continue
        fractions[key] = box_fractions(mask, boxes)
        mode, limit = limits[key]
        if mode != "remove":
            continue
        # decide on the mask grown by a pixel: a stroke's faint edge is ink too
        grown = box_fractions(box_mean(mask, 1) > 0, boxes) if key == "pen" else fractions[key]
        _reject(keep, reason, grown > limit, QC_REASONS[key])
        final = final & ~mask
    return final, masks, fractions


def _qc_modes(config: ExtractConfig) -> dict[str, str]:
    return {"pen": config.pen, "fold": config.fold, "blur": config.blur_map}


def _outline_masks(
    tissue_rois: Sequence[ROI],
    excluded_rois: Sequence[ROI],
    detected: NDArray[np.bool_],
    downsample: float,
    config: ExtractConfig,
) -> tuple[NDArray[np.bool_], dict[str, NDArray[np.bool_]]]:
    """The tissue mask and the QC masks an outline file gives back.

    Regions of a QC class this config computes (``Pen``, ``Fold``, ``Blur``) become
    that QC mask, handled as a detected one would be (removed or kept by its
    switch), so that a file exported by an extraction and given back unchanged
    keeps the same tiles; regions of the other pen/artifact classes are removed
    from the tissue.
    """
    shape = (int(detected.shape[0]), int(detected.shape[1]))
    modes = _qc_modes(config)
    by_class = {class_name(k).lower(): k for k, mode in modes.items() if mode != "off"}
    grouped: dict[str, list[ROI]] = {k: [] for k in by_class.values()}
    other: list[ROI] = []
    for roi in excluded_rois:
        key = by_class.get((roi.label or "").strip().lower())
        (grouped[key] if key is not None else other).append(roi)
    tmask = outline_mask(tissue_rois, other, detected, downsample)
    given = {
        k: rasterize_rois(rs, shape, downsample) if rs else np.zeros(shape, bool)
        for k, rs in grouped.items()
    }
    return tmask, given


def qc_areas_mm2(
    selection: Selection, downsample: float, mpp: float | None
) -> dict[str, float | None]:
    """Areas in mm² of the final tissue mask and of each QC mask (``None`` without mpp).

    Keys ``tissue_mm2`` and ``<mask>_mm2`` (``pen_mm2``, ``fold_mm2``, ``blur_mm2``).
    """
    masks = {"tissue": selection.tissue_mask, **selection.qc_masks}
    if mpp is None:
        return {f"{k}_mm2": None for k in masks}
    px_mm2 = (downsample * mpp / 1000.0) ** 2
    return {f"{k}_mm2": round(float(m.sum()) * px_mm2, 6) for k, m in masks.items()}
