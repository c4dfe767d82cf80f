"""Extraction of one slide: grid, filters, tiles, and its outputs written atomically.

Outputs of a slide named ``S`` in the run folder (``<out>/<tile_px>px_<tile_um>/``;
their paths are :func:`tilestream.runfolder.slide_outputs`)::

    S.tfrecords  S.index.npz  S.coords.csv   S.geojson   previews/S.jpg
    state/S.json  state/S.rejected.csv

With ``to_images=True`` the tiles go to ``S/S_<loc_x>_<loc_y>.<ext>`` instead of a TFRecord
(:func:`tilestream.extract.write.tile_image_name`).

The extraction runs in named stages, each testable alone:
:func:`~tilestream.extract.plan.plan_slide` (grid, ROIs, low-resolution
image), :func:`~tilestream.extract.select.select_tiles` (the filters),
:func:`~tilestream.extract.write.write_tiles` (the tiles),
:func:`~tilestream.extract.write.write_outputs` (coordinates, rejected tiles,
outlines, preview; all but the coordinates made by
:func:`~tilestream.extract.write.prepare_outputs` while the tiles are extracted
when the tiles cannot change the selection) and :func:`build_result` (the
record the state holds).

The outputs of a slide are committed as one unit. Each is written atomically
(complete under its final name or not there), in this order:

1. ``state/S.json`` with status ``"running"``, the new config hash and the
   slide file's fingerprint (:mod:`tilestream.extract.fingerprint`), before
   any output is replaced;
2. the TFRecord, its index, the coordinates, the rejected tiles, the tissue,
   pen and artifact outlines (:mod:`tilestream.extract.outlines`), the preview;
3. ``state/S.json`` with status ``"done"``, the size of each output, the
   SHA-256 of the coordinates and the tile grid the slide got
   (:func:`tile_grid_record`: whether it snapped, the microns a tile covers).

An interruption anywhere leaves either the previous state with all of the
previous outputs (before step 1), or a ``"running"`` state: never a
``"done"`` state beside another config's or another run's files. A slide is
complete (:func:`tilestream.extract.resume.is_complete`) only with a ``"done"``
state of the same config hash and fingerprint whose outputs still match it.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tilestream._util.atomic import remove_temp_files, write_json_atomic
from tilestream._util.names import name_problem, outside
from tilestream.errors import ExtractionError, TileStreamError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.fingerprint import file_sha256, source_fingerprint
from tilestream.extract.grid import Grid
from tilestream.extract.plan import SlidePlan, check_selection, plan_slide, slide_opener
from tilestream.extract.select import REJECT_REASONS, Selection, qc_areas_mm2, select_tiles
from tilestream.extract.task import SlideResult, SlideTask, TileProgress
from tilestream.extract.tiles import CHUNK
from tilestream.extract.write import (
    WrittenTiles,
    prepare_outputs,
    reject_blurry,
    tile_image_pattern,
    write_outputs,
    write_tiles,
)
from tilestream.runfolder import output_sizes, slide_outputs
from tilestream.slide.tilecache import MAX_AUTO_CACHE_BYTES

__all__ = [
    "SlideResult",
    "SlideTask",
    "TileProgress",
    "build_result",
    "extract_slide_task",
    "failure_result",
    "memory_estimate",
    "output_records",
    "prepare_slide_outputs",
    "slide_outputs",
    "tile_grid_record",
    "write_failure_state",
]

log = logging.getLogger(__name__)

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
    tile = tile_image_pattern(name)
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


def prepare_slide_outputs(run_dir: Path, name: str, *, to_images: bool = False) -> dict[str, Path]:
    """The paths of slide ``name``'s outputs, checked to lie in ``run_dir``, their folders made.

    Temporary files that interrupted writes of these outputs left are removed.
    """
    outputs = slide_outputs(run_dir, name, to_images=to_images)
    _check_outputs_inside(run_dir, name, outputs)
    for folder in (outputs["state"].parent, outputs["preview"].parent):
        folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(run_dir, name)
    return outputs


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


def tile_grid_record(plan: SlidePlan, config: ExtractConfig) -> dict[str, Any]:
    """What a slide's tile grid became: the ``tile_grid`` entry of its "done" state.

    ``mode`` (the config's ``grid``), ``snapped`` (see
    :attr:`~tilestream.extract.grid.Grid.snapped`), ``requested`` (the
    config's ``tile_um``), ``exact_px`` (the extent it asks for, unrounded,
    in level-0 pixels) and ``exact_um`` (the microns it asks for: for a
    magnification, at the slide's pixel size), ``extract_px``, ``level`` and
    ``read_px`` (the grid read), ``resized`` (whether each tile is resized to
    ``tile_px``) and ``tile_um`` (the microns a tile covers; ``None`` without
    the slide's microns per pixel).

    >>> from tilestream.extract.grid import plan_grid
    >>> cfg = ExtractConfig(tile_px=256, tile_um=128)
    >>> g = plan_grid(cfg, dimensions=(512, 512), downsamples=(1.0,), mpp=0.499)
    >>> plan = SlidePlan(grid=g, lowres=None, rois=[], mpp=0.499, dimensions=(512, 512),
    ...                  passthrough=False)  # type: ignore[arg-type]
    >>> r = tile_grid_record(plan, cfg)
    >>> r["snapped"], r["exact_px"], r["extract_px"], r["resized"], r["tile_um"]
    (True, 256.513, 256, False, 127.744)
    """
    grid = plan.grid
    exact = grid.exact_px
    return {
        "mode": config.grid,
        "snapped": grid.snapped,
        "requested": config.size.label,
        "exact_px": None if exact is None else round(exact, 4),
        "exact_um": None if exact is None or plan.mpp is None else round(exact * plan.mpp, 6),
        "extract_px": grid.extract_px,
        "level": grid.level,
        "read_px": grid.read_px,
        "resized": grid.needs_resize,
        "tile_um": grid.tile_um(plan.mpp),
    }


def _log_grid(name: str, record: dict[str, Any]) -> None:
    if record["snapped"]:
        log.info(
            "%s: tile grid snapped: %s is %s level-0 px, read as %d native px of level %d "
            "(%s um per tile)",
            name, record["requested"], record["exact_px"], record["read_px"], record["level"],
            record["tile_um"],
        )  # fmt: skip


def build_result(
    task: SlideTask,
    config: ExtractConfig,
    plan: SlidePlan,
    selection: Selection,
    written: WrittenTiles,
    *,
    outputs: dict[str, Path],
    source: dict[str, Any],
    seconds: float,
    timings: dict[str, float],
) -> SlideResult:
    """The "done" record of a slide whose outputs are written (the state file's content)."""
    n_tiles = len(written.coords_rows)
    n_blurry = written.blurry
    return SlideResult(
        slide=task.name,
        path=str(task.path),
        status="done",
        config_hash=config.hash(),
        tiles=n_tiles,
        grid=len(plan.grid),
        rejected={k: int(selection.counts.get(k, 0)) for k in REJECT_REASONS},
        blurry=n_blurry,
        blurry_slide=bool(config.blur_threshold is not None and n_blurry > 0.5 * n_tiles),
        passthrough=written.passthrough,
        assembled=written.assembled,
        stored_quality=written.stored_quality,
        mpp=plan.mpp,
        level=plan.grid.level,
        extract_px=plan.grid.extract_px,
        seconds=round(seconds, 4),
        timings={k: round(v, 4) for k, v in timings.items()},
        source=source,
        outputs=output_records(outputs),
        qc=qc_areas_mm2(selection, plan.lowres.downsample, plan.mpp),
    )


def _build_normalizer(config: ExtractConfig) -> Any:
    """The stain normaliser of ``config`` (``None`` without), built once per slide task."""
    if config.normalizer is None:
        return None
    from tilestream.norm import build_normalizer  # fails early on a bad target

    return build_normalizer(config.normalizer, config.normalizer_source)


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
    name = task.name
    normalizer = _build_normalizer(config)
    outputs = prepare_slide_outputs(Path(run_dir), name, to_images=to_images)
    timings: dict[str, float] = {}
    plan = plan_slide(task, config, timings=timings)
    t0 = time.perf_counter()
    selection = select_tiles(plan.grid, plan.lowres, config, rois=plan.rois, name=name)
    timings["mask"] += time.perf_counter() - t0
    check_selection(plan, selection, config, name)
    source = source_fingerprint(task.path, storage_options=task.storage_options)
    # commit step 1: from here on, until the "done" state, the slide reads as not complete
    running = SlideResult(slide=name, path=str(task.path), status="running",
                          config_hash=config.hash(), source=source)  # fmt: skip
    write_json_atomic(outputs["state"], running.to_dict())
    grid_record = tile_grid_record(plan, config)
    _log_grid(name, grid_record)
    estimate = memory_estimate(plan.lowres.image.nbytes, plan.grid, threads=max(1, threads))
    log.info(
        "%s: %d of %d tiles to extract at level %d; memory estimate %.0f MB",
        name, len(selection.kept_indices), len(plan.grid), plan.grid.level, estimate / 2**20,
    )  # fmt: skip
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="tilestream-outputs") as side:
        # Without a blur filter the tiles cannot change the selection: the rejected
        # tiles, outlines and preview are made meanwhile (written after, in order).
        early = None
        if config.blur_threshold is None or not config.blur_filter:
            early = side.submit(prepare_outputs, plan, selection, config)
        written = write_tiles(
            slide_opener(task, config), plan, selection, config, outputs,
            name=name, threads=threads, normalizer=normalizer, progress=progress,
        )  # fmt: skip
        prepared = None if early is None else early.result()
    timings["write"] = written.write_seconds
    timings["tiles"] = time.perf_counter() - t0
    if normalizer is not None and normalizer.skipped:
        log.info("%s: %d tile(s) left unnormalised (background)", name, normalizer.skipped)
    timings.update(written.stage.to_dict())
    reject_blurry(selection, written.blur_rejected)
    if not written.coords_rows:
        raise ExtractionError(f"{name}: every tile was rejected as blurry")
    t0 = time.perf_counter()
    write_outputs(outputs, plan, selection, written.coords_rows, config, prepared=prepared)
    timings["outputs"] = time.perf_counter() - t0
    result = build_result(
        task, config, plan, selection, written, outputs=outputs, source=source,
        seconds=time.perf_counter() - t_start, timings=timings,
    )  # fmt: skip
    result.tile_grid = grid_record
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
    state = slide_outputs(run_dir, result.slide)["state"]
    state.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, result.to_dict())
