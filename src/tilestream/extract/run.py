"""Extraction of many slides: resume, parallel execution, manifest, summary and report.

The driver holds the run folder (one run at a time), writes its
``config.json``, submits one task per slide not yet complete (largest first)
to a :class:`concurrent.futures.Executor` (a process pool by default), and
records each small result as it arrives: in the run, in ``manifest.json``
(:mod:`tilestream.extract.manifest`) and to the progress callback. A slide that
fails is recorded with its reason and the others go on. Re-running the same
command skips the slides whose outputs are complete and whose config hash and
source file match (:mod:`tilestream.extract.resume`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilestream._util.atomic import remove_temp_files
from tilestream._util.lock import run_lock
from tilestream.errors import ExtractionError
from tilestream.extract.config import ConfigKwargs, ConfigOptions, ExtractConfig
from tilestream.extract.manifest import RunManifest
from tilestream.extract.remote_run import extract_to_store
from tilestream.extract.report import write_report
from tilestream.extract.resume import is_complete
from tilestream.extract.runner import (
    ExtractionRun,
    ProgressCallback,
    Recorder,
    RunProgress,
    resolve_config,
    run_jobs,
    slide_size,
    slide_tasks,
    write_config,
)
from tilestream.extract.task import SlideResult, SlideTask
from tilestream.extract.worker import record_failure, run_slide_task
from tilestream.runfolder import RUN_FILES
from tilestream.storage import is_url

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ExtractionRun",
    "ProgressCallback",
    "RunProgress",
    "extract_slides",
    "extract_tiles",
    "is_complete",
    "run_slide_task",
]

log = logging.getLogger(__name__)


def _folder_error(run_dir: Path, exc: OSError) -> ExtractionError:
    """An error naming the run folder for an OSError writing into it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"no space left for the run's files ({exc.strerror})"
    elif exc.errno == errno.EROFS:
        what = "the output folder is on a read-only file system"
    else:
        what = f"cannot write into the output folder: {exc.strerror or exc}"
    return ExtractionError(what, path=run_dir)


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExtractionError(
            f"cannot create output folder: {exc.strerror or exc}", path=run_dir
        ) from exc
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ExtractionError("output folder is not writable", path=run_dir)


def _remove_stale_run_temp_files(run_dir: Path) -> None:
    """Remove temporary files an interrupted run left for the run-level files (ours only).

    One driver at a time owns a run folder; per-slide temporary files are
    cleaned when the slide is extracted again.
    """
    remove_temp_files(run_dir, RUN_FILES)


def _open_run_folder(stack: contextlib.ExitStack, run_dir: Path, config: ExtractConfig) -> None:
    """Hold ``run_dir`` for this run (until ``stack`` closes) and write its ``config.json``.

    The manifest is brought to the new config first: it keeps only the
    slides current under the hash ``config.json`` is about to name.
    """
    try:
        stack.enter_context(run_lock(run_dir))
        _remove_stale_run_temp_files(run_dir)
        RunManifest(run_dir, config.hash()).rebuild()
        write_config(run_dir, config)
    except OSError as exc:
        raise _folder_error(run_dir, exc) from exc


def extract_slides(
    slides: Iterable[str | os.PathLike[str] | SlideTask],
    out_dir: str | os.PathLike[str],
    *,
    config: ExtractConfig | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    to_images: bool = False,
    roi_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
    stage: str = "auto",
    scratch: str | os.PathLike[str] | None = None,
    force_lease: bool = False,
    **options: Unpack[ConfigKwargs],
) -> ExtractionRun:
    """Extract tiles from many slides into ``out_dir/<tile_px>px_<tile_um>/``.

    Parameters
    ----------
    slides
        Slide files, folders, CSV lists or :class:`SlideTask` objects (see
        :func:`~tilestream.extract.sources.discover_slides`).
    out_dir
        The output root: a folder, or a URL (``s3://bucket/prefix``): the same
        layout in ``<prefix>/<label>/`` (:mod:`tilestream.extract.remote_run`).
    config
        The extraction options; or keyword ``options`` (``tile_px=..., tile_um=...``).
    executor
        Where slide tasks run (any :class:`concurrent.futures.Executor`, e.g.
        :func:`tilestream.distributed.dask_executor`; transient I/O errors are
        raised in its tasks for its retries); default: a pool of ``workers``.
    workers, threads
        Processes of the default pool (default: all cores; 1 runs in this
        process); threads per slide task (default: the cores left per worker).
    overwrite, to_images, roi_dir
        Re-extract slides even when complete; write loose image files instead
        of TFRecords; a folder of ROI files named after the slides.
    progress
        Called with a :class:`RunProgress` as slides (and, in-process, tiles) complete.
    storage_options, stage, scratch, force_lease
        For URLs: the stores' options (credentials, ``endpoint_url``; never
        recorded, not part of the config hash); how slide URLs are opened
        (``"auto"``, ``"never"``, ``"always"``: staged to local scratch); the
        local folder slide tasks extract into before they upload (default
        ``$TILESTREAM_SCRATCH``, a Dask worker's folder, the temporary folder);
        and whether to write the run folder's lease on a store without
        conditional writes (:mod:`tilestream.extract.lease`).

    Returns
    -------
    ExtractionRun
        Per-slide results; failures are recorded there and in ``state/``, never
        raised (a bug in tilestream carries its ``traceback``: ``run.bugs``).

    Raises
    ------
    ExtractionError
        When the run folder cannot be created or written (full, read-only),
        or another run holds it: one run per run folder at a time (a lock,
        :mod:`tilestream._util.lock`; in a store a lease). A run killed
        without releasing the folder is taken over by the next.
    ConfigError
        On invalid options, or slide names that cannot name files.
    """
    t_start = time.perf_counter()
    config = resolve_config(config, options)
    tasks = slide_tasks(slides, roi_dir, storage_options=storage_options, stage=stage)
    if is_url(out_dir):
        return extract_to_store(
            tasks, str(out_dir), config, storage_options=storage_options, executor=executor,
            workers=workers, threads=threads, overwrite=overwrite, to_images=to_images,
            progress=progress, scratch=scratch, force_lease=force_lease, t_start=t_start,
        )  # fmt: skip
    return _extract_local(
        tasks, out_dir, config, executor=executor, workers=workers, threads=threads,
        overwrite=overwrite, to_images=to_images, progress=progress, t_start=t_start,
    )  # fmt: skip


def _extract_local(
    tasks: list[SlideTask],
    out_dir: str | os.PathLike[str],
    config: ExtractConfig,
    **kwargs: Any,
) -> ExtractionRun:
    """:func:`extract_slides` into a local folder (a path or a ``file://`` URL)."""
    if isinstance(out_dir, str) and out_dir.startswith("file://"):
        out_dir = urllib.parse.unquote(urllib.parse.urlsplit(out_dir).path)
    run_dir = Path(out_dir) / config.label
    _check_writable(run_dir)
    with contextlib.ExitStack() as stack:
        _open_run_folder(stack, run_dir, config)
        return _extract_locked(tasks, run_dir, config, **kwargs)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow


def _tasks_to_do(
    run: ExtractionRun, tasks: list[SlideTask], *, overwrite: bool, to_images: bool
) -> list[SlideTask]:
    """The tasks not complete from an earlier run, largest slide file first.

    The complete ones are recorded in ``run`` as ``"skipped"``.
    """
    todo: list[SlideTask] = []
    for task in tasks:
        previous = (
            None if overwrite else is_complete(run.run_dir, task, run.config, to_images=to_images)
        )
        if previous is not None:
            run.results.append(previous)
        else:
            todo.append(task)
    todo.sort(key=slide_size, reverse=True)
    return todo


def _extract_locked(
    tasks: list[SlideTask],
    run_dir: Path,
    config: ExtractConfig,
    *,
    executor: Executor | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    progress: ProgressCallback | None,
    t_start: float,
) -> ExtractionRun:
    """The run of :func:`extract_slides`, once it holds ``run_dir``."""
    run = ExtractionRun(run_dir=run_dir, config=config)
    todo = _tasks_to_do(run, tasks, overwrite=overwrite, to_images=to_images)
    recorder = Recorder(
        run, len(tasks), todo, to_images=to_images, progress=progress,
        lost=functools.partial(record_failure, run_dir),
    )  # fmt: skip
    job = functools.partial(
        run_slide_task, run_dir=str(run_dir), config=config, to_images=to_images
    )
    run_jobs(job, todo, recorder, executor, workers=workers, threads=threads)
    run.seconds = time.perf_counter() - t_start
    summary = write_report(run_dir, config)
    run.stale = dict(summary["stale"])
    write_config(run_dir, config, summary["tile_grid"]["tile_um"])
    for name, reason in run.stale.items():
        log.warning(
            "slide %s left out of the manifest: %s (outputs kept, not deleted)", name, reason
        )
    return run


def extract_tiles(
    slide: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tile_px: int,
    tile_um: str | float,
    mpp: float | None = None,
    roi: str | os.PathLike[str] | None = None,
    name: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    to_images: bool = False,
    progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **options: Unpack[ConfigOptions],
) -> SlideResult:
    """Extract one slide; see :func:`extract_slides` for the outputs (a folder or a URL).

    Returns
    -------
    SlideResult
        Status ``done``, ``skipped`` (already complete) or ``failed`` (with ``error``).

    Examples
    --------
    >>> from tilestream.extract import demo_slide_path
    >>> import tempfile
    >>> r = extract_tiles(demo_slide_path(), tempfile.mkdtemp(), tile_px=128, tile_um=256)
    >>> r.status, r.tiles > 0
    ('done', True)
    """
    from tilestream.extract.sources import slide_name

    task = SlideTask(
        path=os.fspath(slide),
        name=name or slide_name(slide),
        mpp=mpp,
        roi=os.fspath(roi) if roi is not None else None,
    )
    run = extract_slides(
        [task],
        out_dir,
        workers=1,
        threads=threads,
        overwrite=overwrite,
        to_images=to_images,
        progress=progress,
        storage_options=storage_options,
        tile_px=tile_px,
        tile_um=tile_um,
        **options,
    )
    return run.results[0]
