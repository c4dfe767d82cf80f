"""Extraction of one slide: grid, filters, tiles, and its outputs written atomically.

Outputs of a slide named ``S`` in the run folder (``<out>/<tile_px>px_<tile_um>/``)::

    S.tfrecords  S.index.npz  S.coords.csv   S.geojson   previews/S.jpg
    state/S.json  state/S.rejected.csv

With ``to_images=True`` the tiles go to ``S/S_<loc_x>_<loc_y>.<ext>`` instead of a TFRecord.

The outputs of a slide are committed as one unit. Each is written atomically
(complete under its final name or not there), in this order:

1. ``state/S.json`` with status ``"running"``, the new config hash and the
   slide file's fingerprint (:mod:`tilestream.extract.fingerprint`), before
   any output is replaced;
2. the TFRecord, its index, the coordinates, the rejected tiles, the tissue,
   pen and artifact outlines (:mod:`tilestream.extract.outlines`), the preview;
3. ``state/S.json`` with status ``"done"``, the size of each output and the
   SHA-256 of the coordinates.

An interruption anywhere leaves either the previous state with all of the
previous outputs (before step 1), or a ``"running"`` state: never a
``"done"`` state beside another config's or another run's files. A slide is
complete (:func:`tilestream.extract.run.is_complete`) only with a ``"done"``
state of the same config hash and fingerprint whose outputs still match it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilestream._util.atomic import atomic_write, remove_temp_files, write_json_atomic
from tilestream._util.names import name_problem, outside
from tilestream.errors import ExtractionError, TileStreamError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.fingerprint import file_sha256, source_fingerprint
from tilestream.extract.grid import Grid, plan_grid
from tilestream.extract.lowres import mask_downsample, read_lowres
from tilestream.extract.outlines import TISSUE_CLASS, class_name, write_outlines
from tilestream.extract.preview import render_preview, save_preview
from tilestream.extract.quality import estimate_jpeg_quality
from tilestream.extract.roi import ROI, load_rois, roi_feature, split_outlines
from tilestream.extract.select import (
    QC_REASONS,
    REJECT_REASONS,
    outline_excluded_classes,
    qc_areas_mm2,
    select_tiles,
)
from tilestream.extract.tiles import CHUNK, StageTimes, iter_encoded_tiles
from tilestream.runfolder import output_sizes, slide_outputs
from tilestream.slide import Slide, open_slide
from tilestream.slide.backend import MAX_AUTO_CACHE_BYTES
from tilestream.tfrecord import TFRecordWriter, serialized_record

__all__ = [
    "SlideResult",
    "SlideTask",
    "TileProgress",
    "extract_slide_task",
    "failure_result",
    "memory_estimate",
    "output_records",
    "slide_outputs",
    "write_failure_state",
]

log = logging.getLogger(__name__)

#: Called with (slide name, tiles done so far, tiles to do) while a slide is extracted.
TileProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SlideTask:
    """What one extraction task needs: picklable, holds paths only.

    Attributes
    ----------
    path
        The slide file (for DICOM, any file of the series).
    name
        The slide name used for outputs and in the ``slide`` feature.
    mpp
        Microns per pixel overriding the file's, for this slide.
    roi
        An ROI file (QuPath CSV or GeoJSON) for this slide.
    """

    path: str
    name: str
    mpp: float | None = None
    roi: str | None = None


@dataclass
class SlideResult:
    """A small record of one slide's extraction (never pixels)."""

    slide: str
    path: str
    status: str  # "done" | "failed" | "skipped" | "running" (in a state file only)
    config_hash: str = ""
    tiles: int = 0
    grid: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    blurry: int = 0
    blurry_slide: bool = False
    passthrough: int = 0
    stored_quality: int | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None  # a failure that is a bug in tilestream: where it happened
    mpp: float | None = None
    level: int | None = None
    extract_px: int | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    qc: dict[str, float | None] = field(default_factory=dict)  # mm² per QC mask, tissue_mm2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideResult:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


#: The outputs whose SHA-256 a "done" state records besides their sizes: the
#: coordinates table, small and byte-for-byte the same for the same extraction
#: (the index embeds file metadata of its own, so it is checked by size).
DIGESTED_OUTPUTS = ("coords",)


def output_records(outputs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """What a "done" state records of a slide's outputs: sizes, and digests of the small ones.

    ``{kind: {"size": bytes}}`` as :func:`tilestream.runfolder.output_sizes`,
    with ``"sha256"`` added for the coordinates.
    """
    records: dict[str, dict[str, Any]] = dict(output_sizes(outputs))
    for kind in DIGESTED_OUTPUTS:
        if kind in records:
            records[kind]["sha256"] = file_sha256(outputs[kind])
    return records


def _remove_stale_temp_files(run_dir: Path, name: str) -> None:
    """Remove the temporary files interrupted writes of exactly this slide's outputs left.

    Names are matched exactly (in either output mode), never as a glob: the
    leftovers of slide ``p1`` are removed, the in-progress files of slide
    ``p1.slideA`` (or of ``a[1]`` when this is ``a*``) are not.
    """
    outputs = {**slide_outputs(run_dir, name), **slide_outputs(run_dir, name, to_images=True)}
    tile = re.compile(rf"{re.escape(name)}_-?[0-9]+_-?[0-9]+\.(?:jpg|png)")
    for kind, path in outputs.items():
        if kind == "images":
            remove_temp_files(path, lambda n: tile.fullmatch(n) is not None)
        else:
            remove_temp_files(path.parent, path.name)


def _check_outputs_inside(run_dir: Path, name: str, outputs: dict[str, Path]) -> None:
    """Refuse a slide whose name is not a plain file name or whose outputs resolve elsewhere.

    :func:`~tilestream.extract.sources.discover_slides` refuses such names
    first; this guards every other way a task is made (by hand, on a cluster).
    """
    problem = name_problem(name)
    if problem is None:
        problem_path = outside(run_dir, outputs.values())
        if problem_path is None:
            return
        problem = f"would write {problem_path} outside the run folder {run_dir}"
    raise ExtractionError(f"slide name {name!r} {problem}; refusing to write its outputs")


def _can_pass_through(slide: Slide, grid: Grid, config: ExtractConfig) -> bool:
    if not config.jpeg_passthrough or config.img_format != "jpeg" or grid.needs_resize:
        return False
    if config.blur_threshold is not None or config.normalizer is not None:
        return False
    stored = getattr(slide, "stored_tile_grid", None)
    if stored is None:
        return False
    size = stored(grid.level)
    if size is None or tuple(size) != (grid.read_px, grid.read_px):
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


def memory_estimate(lowres_bytes: int, grid: Grid, *, threads: int) -> int:
    """An upper bound of the bytes a slide task holds (logged per task, for sizing workers).

    The low-resolution image and its masks (about 4x its size), and per reading
    thread a slide handle with its decoded-tile cache at its largest plus the
    chunks of tiles in flight (read region, resized tile and encoded bytes).

    >>> from tilestream.extract.config import ExtractConfig
    >>> from tilestream.extract.grid import plan_grid
    >>> g = plan_grid(ExtractConfig(tile_px=256, tile_um=128), dimensions=(4096, 4096),
    ...               downsamples=(1.0,), mpp=0.5)
    >>> memory_estimate(3 * 256 * 256, g, threads=2) // 2**20
    584
    """
    per_tile = 3 * (grid.read_px**2 + 2 * grid.tile_px**2)
    per_thread = MAX_AUTO_CACHE_BYTES + 2 * CHUNK * per_tile
    return 5 * lowres_bytes + threads * per_thread


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def extract_slide_task(
    task: SlideTask,
    run_dir: str | os.PathLike[str],
    config: ExtractConfig,
    *,
    to_images: bool = False,
    threads: int = 1,
    progress: TileProgress | None = None,
) -> SlideResult:
    """Extract one slide into ``run_dir``; raise on failure (callers record it).

    Returns
    -------
    SlideResult
        With status ``"done"``; the same record is written to ``state/<name>.json``.
    """
    t_start = time.perf_counter()
    run = Path(run_dir)
    name = task.name
    normalizer = None
    if config.normalizer is not None:  # built once per slide task (fails early on a bad target)
        from tilestream.norm import build_normalizer

        normalizer = build_normalizer(config.normalizer, config.normalizer_source)
    outputs = slide_outputs(run, name, to_images=to_images)
    _check_outputs_inside(run, name, outputs)
    for folder in (run / "state", run / "previews"):
        folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(run, name)
    timings: dict[str, float] = {}

    mpp = task.mpp if task.mpp is not None else config.mpp_override

    def opener() -> Slide:
        return open_slide(task.path, mpp=mpp)

    t0 = time.perf_counter()
    rois: list[ROI] = load_rois(task.roi) if task.roi else []
    with opener() as slide:
        slide_mpp = slide.mpp[0] if slide.mpp is not None else None
        grid = plan_grid(
            config,
            dimensions=slide.dimensions,
            downsamples=slide.level_downsamples,
            mpp=slide_mpp,
            objective_power=slide.objective_power,
            name=name,
        )
        w, h = slide.dimensions
        for roi in rois:
            x0, y0, x1, y1 = roi.bounds
            if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
                raise ExtractionError(
                    f"{name}: ROI {roi.name!r} lies outside the slide ({w}x{h}): "
                    f"bounds {x0:.0f},{y0:.0f}-{x1:.0f},{y1:.0f}",
                    path=task.roi,
                )
        timings["open"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lowres = read_lowres(slide, mask_downsample(slide.dimensions, grid.extract_px))
        selection = select_tiles(grid, lowres, config, rois=rois, name=name)
        timings["mask"] = time.perf_counter() - t0
        kept = selection.kept_indices
        if len(grid) == 0:
            raise ExtractionError(
                f"{name}: the slide ({w}x{h} px) is smaller than one tile "
                f"({grid.extract_px} level-0 px for tile_um={config.size.label})"
            )
        if len(kept) == 0:
            counts = ", ".join(f"{k} {v}" for k, v in selection.counts.items() if v)
            raise ExtractionError(
                f"{name}: no tile passed the filters (grid {len(grid)} tiles; rejected: "
                f"{counts or 'none'}); no tissue detected?"
            )
        passthrough = _can_pass_through(slide, grid, config)
    source = source_fingerprint(task.path)
    # commit step 1: from here on, until the "done" state, the slide reads as not complete
    write_json_atomic(
        outputs["state"],
        SlideResult(
            slide=name, path=str(task.path), status="running", config_hash=config.hash(),
            source=source,
        ).to_dict(),
    )  # fmt: skip
    estimate = memory_estimate(lowres.image.nbytes, grid, threads=max(1, threads))
    log.info(
        "%s: %d of %d tiles to extract at level %d; memory estimate %.0f MB",
        name, len(kept), len(grid), grid.level, estimate / 2**20,
    )  # fmt: skip

    stage = StageTimes()
    centers = grid.centers
    coords_rows: list[list[Any]] = []
    blur_reject: list[int] = []
    n_pass = 0
    stored_quality: int | None = None
    t0 = time.perf_counter()
    tiles = iter_encoded_tiles(
        opener,
        grid,
        kept,
        config,
        threads=max(1, threads),
        passthrough=passthrough,
        normalizer=normalizer,
    )
    with contextlib.ExitStack() as stack:
        # closed here, in this thread, however the loop ends: a generator left to the
        # garbage collector shuts its thread pool down wherever the collector runs,
        # which may be one of that pool's own threads ("cannot join current thread")
        stack.enter_context(contextlib.closing(tiles))
        writer = None
        if to_images:
            img_dir = outputs["images"]
            img_dir.mkdir(parents=True, exist_ok=True)
        else:
            writer = stack.enter_context(TFRecordWriter(outputs["tfrecord"], index=True))
        ext = "jpg" if config.img_format == "jpeg" else "png"
        done = 0
        for tile in tiles:
            stage.add(tile.times)
            if tile.passthrough:
                if not n_pass:  # the tables of a slide level are shared: the first tile's
                    stored_quality = estimate_jpeg_quality(tile.data)
                n_pass += 1
            i = tile.index
            blurry = (
                tile.blur is not None
                and config.blur_threshold is not None
                and tile.blur < config.blur_threshold
            )
            if blurry and config.blur_filter:
                blur_reject.append(i)
                continue
            lx, ly = int(centers[i, 0]), int(centers[i, 1])
            tw = time.perf_counter()
            if writer is not None:
                writer.write(serialized_record(name, tile.data, lx, ly), location=(lx, ly))
            else:
                with atomic_write(img_dir / f"{name}_{lx}_{ly}.{ext}", "wb") as f:
                    f.write(tile.data)
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - tw
            coords_rows.append(
                [
                    len(coords_rows), lx, ly, int(grid.xs[i]), int(grid.ys[i]),
                    grid.extract_px, grid.extract_px, grid.level,
                    round(float(selection.tissue[i]), 4),
                    round(float(selection.grayspace[i]), 4),
                    round(float(selection.whitespace[i]), 4),
                    "" if tile.blur is None else round(tile.blur, 2),
                    int(blurry),
                    *(round(float(f[i]), 4) for f in selection.qc_fractions.values()),
                ]
            )  # fmt: skip
            done += 1
            if progress is not None and (done % 64 == 0 or done == len(kept)):
                progress(name, done, len(kept))
    timings["tiles"] = time.perf_counter() - t0
    if normalizer is not None and normalizer.skipped:
        log.info("%s: %d tile(s) left unnormalised (background)", name, normalizer.skipped)
    timings.update(stage.to_dict())

    if blur_reject:
        selection.keep[blur_reject] = False
        selection.reason[blur_reject] = "blur"
        selection.counts["blur"] = len(blur_reject)
    if not coords_rows:
        raise ExtractionError(f"{name}: every tile was rejected as blurry")

    t0 = time.perf_counter()
    _write_csv(
        outputs["coords"],
        ["record", "loc_x", "loc_y", "x", "y", "width", "height", "level",
         "tissue", "grayspace", "whitespace", "blur", "blurry",
         *(QC_REASONS[k] for k in selection.qc_fractions)],
        coords_rows,
    )  # fmt: skip
    rej = np.flatnonzero(~selection.keep)
    _write_csv(
        outputs["rejected"],
        ["x", "y", "reason"],
        [[int(grid.xs[i]), int(grid.ys[i]), str(selection.reason[i])] for i in rej],
    )
    qc_masks = selection.qc_masks
    plain_rois = split_outlines(rois, outline_excluded_classes())[0]
    write_outlines(
        outputs["outlines"],
        {TISSUE_CLASS: selection.tissue_mask, **{class_name(k): m for k, m in qc_masks.items()}},
        lowres.downsample,
        extra_features=[roi_feature(r) for r in plain_rois],
    )
    keep_idx = selection.kept_indices
    preview = render_preview(
        lowres.image,
        lowres.downsample,
        tissue=selection.tissue_mask if config.tissue_method == "otsu" else None,
        kept=np.stack([grid.xs[keep_idx], grid.ys[keep_idx]], axis=1),
        rejected=np.stack([grid.xs[rej], grid.ys[rej]], axis=1),
        extract_px=grid.extract_px,
        rois=plain_rois,
        qc_masks=qc_masks,
    )
    save_preview(preview, outputs["preview"])
    timings["outputs"] = time.perf_counter() - t0

    n_blurry = sum(int(r[12]) for r in coords_rows)
    result = SlideResult(
        slide=name,
        path=str(task.path),
        status="done",
        config_hash=config.hash(),
        tiles=len(coords_rows),
        grid=len(grid),
        rejected={k: int(selection.counts.get(k, 0)) for k in REJECT_REASONS},
        blurry=n_blurry,
        blurry_slide=bool(config.blur_threshold is not None and n_blurry > 0.5 * len(coords_rows)),
        passthrough=n_pass,
        stored_quality=stored_quality,
        mpp=slide_mpp,
        level=grid.level,
        extract_px=grid.extract_px,
        seconds=round(time.perf_counter() - t_start, 4),
        timings={k: round(v, 4) for k, v in timings.items()},
        source=source,
        outputs=output_records(outputs),
        qc=qc_areas_mm2(selection, lowres.downsample, slide_mpp),
    )
    # last commit step: the slide is complete
    write_json_atomic(outputs["state"], result.to_dict())
    return result


def failure_result(
    task: SlideTask, config: ExtractConfig, exc: BaseException, seconds: float
) -> SlideResult:
    """A failure record for ``task``, naming the error."""
    message = str(exc) if isinstance(exc, TileStreamError) else f"{type(exc).__name__}: {exc}"
    if task.name not in message:
        message = f"{task.name}: {message}"
    return SlideResult(
        slide=task.name,
        path=str(task.path),
        status="failed",
        config_hash=config.hash(),
        error=message,
        error_type=type(exc).__name__,
        seconds=round(seconds, 4),
    )


def write_failure_state(run_dir: Path, result: SlideResult) -> None:
    """Record a failed slide's state (and remove nothing)."""
    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "state" / f"{result.slide}.json", result.to_dict())
