"""Planning one slide before any tile is read: its grid, ROIs, low-resolution image.

:func:`plan_slide` opens the slide once and decides everything the later
stages of :func:`tilestream.extract.engine.extract_slide_task` need: the tile
grid (:mod:`tilestream.extract.grid`), the slide's ROIs (checked to lie on
it), the low-resolution image the filters work on, and whether the slide's
stored JPEG tiles can be passed through unchanged (:func:`can_pass_through`)
or the tiles assembled losslessly from their MCUs (:func:`can_assemble`). The filters themselves
(:func:`tilestream.extract.select.select_tiles`) run on the plan;
:func:`check_selection` refuses a plan that leaves nothing to extract.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from tilestream.errors import ExtractionError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import Grid, plan_grid
from tilestream.extract.lowres import LowRes, mask_downsample, read_lowres
from tilestream.extract.roi import ROI, load_rois
from tilestream.extract.select import Selection
from tilestream.extract.task import SlideTask
from tilestream.slide import Slide, jpeg_mosaic, open_slide
from tilestream.slide.opening import StageMode

__all__ = [
    "SlidePlan",
    "can_assemble",
    "can_pass_through",
    "check_rois_on_slide",
    "check_selection",
    "plan_slide",
    "slide_opener",
]


@dataclass(frozen=True)
class SlidePlan:
    """What planning a slide decided.

    Attributes
    ----------
    grid
        Every candidate tile, before the filters.
    lowres
        The low-resolution image the filters, outlines and preview use.
    rois
        The slide's ROIs (empty without an ROI file).
    mpp
        The slide's level-0 microns per pixel (``None`` when unknown).
    dimensions
        The slide's level-0 width and height.
    passthrough
        Whether the slide's stored JPEG tiles are the tiles (see :func:`can_pass_through`).
    assemble
        Whether the tiles can be assembled losslessly from the stored tiles' MCUs
        (see :func:`can_assemble`; tile by tile, where that fails, they are re-encoded).
    """

    grid: Grid
    lowres: LowRes
    rois: list[ROI]
    mpp: float | None
    dimensions: tuple[int, int]
    passthrough: bool
    assemble: bool = False


def slide_opener(task: SlideTask, config: ExtractConfig) -> Callable[[], Slide]:
    """A function opening ``task``'s slide with its microns per pixel (the task's, else the config's).

    A slide in a store (``s3://``...) is opened with the task's
    ``storage_options`` and staged as its ``stage`` allows, into the scratch
    folder ``TILESTREAM_SCRATCH`` names (see :func:`tilestream.slide.open_slide`).
    """
    mpp = task.mpp if task.mpp is not None else config.mpp_override
    if task.storage_options is None and task.stage == "auto":
        return functools.partial(open_slide, task.path, mpp=mpp)
    return functools.partial(
        open_slide,
        task.path,
        mpp=mpp,
        storage_options=task.storage_options,
        stage=cast(StageMode, task.stage),
    )


def check_rois_on_slide(rois: list[ROI], dimensions: tuple[int, int], task: SlideTask) -> None:
    """Refuse an ROI that lies wholly outside the slide (a wrong file, or a wrong slide)."""
    w, h = dimensions
    for roi in rois:
        x0, y0, x1, y1 = roi.bounds
        if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
            raise ExtractionError(
                f"{task.name}: ROI {roi.name!r} lies outside the slide ({w}x{h}): "
                f"bounds {x0:.0f},{y0:.0f}-{x1:.0f},{y1:.0f}",
                path=task.roi,
            )


def _stored_jpeg_tiles(slide: Slide, grid: Grid, config: ExtractConfig) -> tuple[int, int] | None:
    """The stored JPEG tile size of the grid's level, when its tiles may be the output's.

    Only for JPEG output without resizing, blur scores or normalisation.
    """
    if not config.jpeg_passthrough or config.img_format != "jpeg" or grid.needs_resize:
        return None
    if config.blur_threshold is not None or config.normalizer is not None:
        return None
    stored = getattr(slide, "stored_tile_grid", None)
    size = stored(grid.level) if stored is not None else None
    return None if size is None else (int(size[0]), int(size[1]))


def can_pass_through(slide: Slide, grid: Grid, config: ExtractConfig) -> bool:
    """Whether every tile of ``grid`` is one of the slide's stored JPEG tiles, as it is.

    Only for JPEG output without resizing, blur scores or normalisation, and
    a grid aligned with the stored tiles of its level and inside the slide.
    """
    size = _stored_jpeg_tiles(slide, grid, config)
    if size is None or size != (grid.read_px, grid.read_px):
        return False
    step = grid.read_px * grid.level_downsample
    if grid.stride % step or not float(step).is_integer():
        return False
    aligned = (grid.xs % step == 0) & (grid.ys % step == 0)
    if not aligned.all():
        return False
    w, h = slide.dimensions
    return bool(
        ((grid.xs + grid.extract_px) <= w).all() and ((grid.ys + grid.extract_px) <= h).all()
    )


#: The MCU grid every tile must lie on to be assembled (8 px: 4:4:4; 16 px MCUs are
#: checked tile by tile against the stored tiles' own sampling).
MCU_PX = 8


def can_assemble(slide: Slide, grid: Grid, config: ExtractConfig) -> bool:
    """Whether the tiles of ``grid`` can be assembled losslessly from stored JPEG MCUs.

    The grid reads native pixels of a level whose stored tiles are JPEG, every
    tile starts on the level's 8 px MCU grid and lies inside the level, and the
    compiled mosaic is built (:mod:`tilestream.slide.jpeg_mosaic`). Each tile
    is then assembled from the stored tiles' DCT coefficients, bit for bit the
    scanner's, or re-encoded where its stored tiles do not allow it (16 px MCUs
    off their grid, unlike tables, a sparse or unsupported tile).
    """
    size = _stored_jpeg_tiles(slide, grid, config)
    if size is None or not jpeg_mosaic.available() or grid.read_px % MCU_PX:
        return False
    if size[0] % MCU_PX or size[1] % MCU_PX or len(grid) == 0:
        return False
    ds = grid.level_downsample
    lx, ly = grid.xs / ds, grid.ys / ds
    if not ((lx == lx.round()).all() and (ly == ly.round()).all()):
        return False
    if (lx % MCU_PX).any() or (ly % MCU_PX).any():
        return False
    lw, lh = slide.level_dimensions[grid.level]
    return bool(((lx + grid.read_px) <= lw).all() and ((ly + grid.read_px) <= lh).all())


def plan_slide(
    task: SlideTask,
    config: ExtractConfig,
    *,
    timings: dict[str, float] | None = None,
    opener: Callable[[], Slide] | None = None,
) -> SlidePlan:
    """Open ``task``'s slide and plan its extraction (no tile is read).

    ``timings`` receives the seconds spent opening and planning (``"open"``)
    and reading the low-resolution image (``"mask"``). ``opener`` opens the
    slide (default :func:`slide_opener`; a slide in a store needs one made
    with its ``storage_options``).
    """
    laps = timings if timings is not None else {}
    t0 = time.perf_counter()
    rois: list[ROI] = load_rois(task.roi, storage_options=task.storage_options) if task.roi else []
    with (opener or slide_opener(task, config))() as slide:
        mpp = slide.mpp[0] if slide.mpp is not None else None
        grid = plan_grid(
            config,
            dimensions=slide.dimensions,
            downsamples=slide.level_downsamples,
            mpp=mpp,
            objective_power=slide.objective_power,
            name=task.name,
        )
        check_rois_on_slide(rois, slide.dimensions, task)
        laps["open"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lowres = read_lowres(slide, mask_downsample(slide.dimensions, grid.extract_px))
        laps["mask"] = time.perf_counter() - t0
        passthrough = can_pass_through(slide, grid, config)
        assemble = not passthrough and can_assemble(slide, grid, config)
        dimensions = slide.dimensions
    return SlidePlan(
        grid=grid,
        lowres=lowres,
        rois=rois,
        mpp=mpp,
        dimensions=(int(dimensions[0]), int(dimensions[1])),
        passthrough=passthrough,
        assemble=assemble,
    )


def check_selection(
    plan: SlidePlan, selection: Selection, config: ExtractConfig, name: str
) -> None:
    """Refuse a slide with nothing to extract: no grid at all, or no tile through the filters."""
    grid = plan.grid
    if len(grid) == 0:
        w, h = plan.dimensions
        raise ExtractionError(
            f"{name}: the slide ({w}x{h} px) is smaller than one tile "
            f"({grid.extract_px} level-0 px for tile_um={config.size.label})"
        )
    if len(selection.kept_indices) == 0:
        counts = ", ".join(f"{k} {v}" for k, v in selection.counts.items() if v)
        raise ExtractionError(
            f"{name}: no tile passed the filters (grid {len(grid)} tiles; rejected: "
            f"{counts or 'none'}); no tissue detected?"
        )
