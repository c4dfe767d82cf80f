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
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilestream import __version__
from tilestream._util.atomic import remove_temp_files, write_json_atomic
from tilestream._util.lifetime import die_with_parent
from tilestream._util.lock import run_lock
from tilestream.errors import ConfigError, ExtractionError
from tilestream.extract.config import SNAP_TOLERANCE, ConfigKwargs, ConfigOptions, ExtractConfig
from tilestream.extract.engine import failure_result
from tilestream.extract.manifest import RunManifest
from tilestream.extract.report import write_report
from tilestream.extract.resample import libvips_version
from tilestream.extract.resume import is_complete
from tilestream.extract.sources import discover_slides
from tilestream.extract.task import SlideResult, SlideTask
from tilestream.extract.worker import record_failure, run_slide_task
from tilestream.runfolder import CONFIG_FILE, RUN_FILES

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ExtractionRun",
    "RunProgress",
    "extract_slides",
    "extract_tiles",
    "is_complete",
    "run_slide_task",
]

log = logging.getLogger(__name__)

#: The run-level files of a run folder (beside each slide's outputs).


@dataclass
class RunProgress:
    """What a progress callback receives.

    ``slide_tiles_done``/``slide_tiles_total`` are set while one slide is
    extracted in this process; ``result`` when a slide finishes.
    """

    slides_total: int
    slides_done: int
    tiles_done: int
    slide: str | None = None
    slide_tiles_done: int = 0
    slide_tiles_total: int = 0
    result: SlideResult | None = None


ProgressCallback = Callable[[RunProgress], None]


@dataclass
class ExtractionRun:
    """The outcome of :func:`extract_slides`."""

    run_dir: Path
    config: ExtractConfig
    results: list[SlideResult] = field(default_factory=list)
    seconds: float = 0.0
    #: ``{slide: reason}``: slides whose outputs are in the folder but not current
    #: (see :mod:`tilestream.runfolder`); kept, and left out of the manifest.
    stale: dict[str, str] = field(default_factory=dict)

    def _count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def done(self) -> int:
        """Slides extracted in this run."""
        return self._count("done")

    @property
    def skipped(self) -> int:
        """Slides already complete from an earlier run."""
        return self._count("skipped")

    @property
    def failed(self) -> list[SlideResult]:
        """Slides that failed, with their reasons."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def bugs(self) -> list[SlideResult]:
        """Failures that are bugs in tilestream (they carry a ``traceback``), not bad input."""
        return [r for r in self.failed if r.traceback]

    @property
    def tiles(self) -> int:
        """Tiles stored for the slides of this run (extracted or already complete)."""
        return sum(r.tiles for r in self.results if r.status in ("done", "skipped"))


def _versions(config: ExtractConfig) -> dict[str, str]:
    out = {"tilestream": __version__}
    for mod in ("openslide", "tifffile", "imagecodecs", "simplejpeg", "numpy", "PIL"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except ImportError:  # pragma: no cover - all are dependencies
            continue
    try:
        import openslide

        out["openslide-library"] = str(openslide.__library_version__)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    if config.resizer == "vips":
        import pyvips

        out["pyvips"] = str(pyvips.__version__)
        out["libvips"] = str(libvips_version())
    return out


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


def _write_config(
    run_dir: Path, config: ExtractConfig, tile_um: dict[str, float | None] | None = None
) -> None:
    """Write ``config.json``: the config, its hash, the versions and the tile grid.

    ``tile_grid`` holds the grid mode and snap tolerance, and, once the run
    has written its summary, ``tile_um``: the distinct microns a tile covers
    on the run's current slides (one value when they share a pixel size;
    see :func:`tilestream.extract.report.grid_summary` for each slide's).
    """
    grid: dict[str, Any] = {
        "mode": config.grid,
        "tolerance": SNAP_TOLERANCE if config.grid == "snap" else None,
    }
    if tile_um is not None:
        grid["tile_um"] = sorted({v for v in tile_um.values() if v is not None})
    write_json_atomic(
        run_dir / CONFIG_FILE,
        {
            "config": config.to_dict(),
            "hash": config.hash(),
            "versions": _versions(config),
            "tile_grid": grid,
        },
    )


def _open_run_folder(stack: contextlib.ExitStack, run_dir: Path, config: ExtractConfig) -> None:
    """Hold ``run_dir`` for this run (until ``stack`` closes) and write its ``config.json``.

    The manifest is brought to the new config first: it keeps only the
    slides current under the hash ``config.json`` is about to name.
    """
    try:
        stack.enter_context(run_lock(run_dir))
        _remove_stale_run_temp_files(run_dir)
        RunManifest(run_dir, config.hash()).rebuild()
        _write_config(run_dir, config)
    except OSError as exc:
        raise _folder_error(run_dir, exc) from exc


def _resolve_config(config: ExtractConfig | None, options: ConfigKwargs) -> ExtractConfig:
    """``config`` with ``options`` applied, or a config of ``options`` alone."""
    if config is None:
        return ExtractConfig.from_dict(options)
    return config.replace(**options) if options else config


def _size(task: SlideTask) -> int:
    try:
        return os.stat(task.path).st_size
    except OSError:
        return -1


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
    **options: Unpack[ConfigKwargs],
) -> ExtractionRun:
    """Extract tiles from many slides into ``out_dir/<tile_px>px_<tile_um>/``.

    Parameters
    ----------
    slides
        Slide files, folders, CSV lists or :class:`SlideTask` objects (see
        :func:`~tilestream.extract.sources.discover_slides`).
    out_dir
        The output root.
    config
        The extraction options; or give them as keyword ``options``
        (``tile_px=..., tile_um=..., ...``).
    executor
        Where slide tasks run (any :class:`concurrent.futures.Executor`, e.g.
        :func:`tilestream.distributed.dask_executor`); default: a process pool
        of ``workers`` processes. With an executor of your own, transient
        errors (I/O) are raised inside the task so that the executor's retries
        repeat them; permanent ones come back as failure records.
    workers
        Processes of the default pool (default: all cores); 1 runs in this process.
    threads
        Threads per slide task (default: the cores left per worker).
    overwrite
        Re-extract slides even when their outputs are complete.
    to_images
        Write loose image files instead of TFRecords.
    roi_dir
        A folder of ROI files named after the slides.
    progress
        Called with a :class:`RunProgress` as slides (and, in-process, tiles) complete.

    Returns
    -------
    ExtractionRun
        Per-slide results; failures are recorded there and in ``state/``, never
        raised. A failure that is a bug in tilestream (not bad input or I/O)
        carries its ``traceback`` (see :attr:`ExtractionRun.bugs`).

    Raises
    ------
    ExtractionError
        When the run folder cannot be created or written (full, read-only),
        or another run holds it: one run per run folder at a time (see
        :mod:`tilestream._util.lock`). A run killed without releasing the
        folder is taken over by the next. With an executor of the caller
        (Dask), this process holds the folder and every slide task holds its
        shared worker lock while it works, so a rerun waits for tasks a
        killed run left behind; their lifetime is the cluster's business.
    ConfigError
        On invalid options, or slide names that cannot name files (see
        :func:`~tilestream.extract.sources.discover_slides`).
    """
    t_start = time.perf_counter()
    config = _resolve_config(config, options)
    run_dir = Path(out_dir) / config.label
    _check_writable(run_dir)
    with contextlib.ExitStack() as stack:
        _open_run_folder(stack, run_dir, config)
        return _extract_locked(
            slides, run_dir, config, executor=executor, workers=workers, threads=threads,
            overwrite=overwrite, to_images=to_images, roi_dir=roi_dir, progress=progress,
            t_start=t_start,
        )  # fmt: skip
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
    todo.sort(key=_size, reverse=True)
    return todo


class _Recorder:
    """Records each slide's result as it arrives: in the run, the manifest, the progress callback.

    The manifest lists the current slides only, and none while it is being
    extracted again.
    """

    def __init__(
        self,
        run: ExtractionRun,
        total: int,
        todo: list[SlideTask],
        *,
        to_images: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.run = run
        self.total = total
        self.to_images = to_images
        self.progress = progress
        self.tiles_done = run.tiles
        self.pending = {t.name for t in todo}
        self.manifest = RunManifest(run.run_dir, run.config.hash())
        self.manifest.rebuild(exclude=self.pending)
        if run.results and progress is not None:
            progress(RunProgress(total, len(run.results), self.tiles_done))

    def record(self, result: SlideResult) -> None:
        """Record a finished slide (done, failed)."""
        run = self.run
        run.results.append(result)
        self.pending.discard(result.slide)
        self.manifest.update(result.slide, listed=not self.to_images)
        if result.status == "done":
            self.tiles_done += result.tiles
        if self.progress is not None:
            self.progress(
                RunProgress(
                    self.total, len(run.results), self.tiles_done, result.slide, result=result
                )
            )

    def tile_progress(self, name: str, done: int, of: int) -> None:
        """Report the tiles of the slide being extracted in this process."""
        if self.progress is not None:
            self.progress(
                RunProgress(self.total, len(self.run.results), self.tiles_done, name, done, of)
            )


def _run_in_process(
    todo: list[SlideTask], recorder: _Recorder, *, threads: int, to_images: bool
) -> None:
    """Extract the slides one after the other in this process, ``threads`` threads each."""
    run = recorder.run
    for task in todo:
        recorder.record(
            run_slide_task(
                task,
                str(run.run_dir),
                run.config,
                to_images=to_images,
                threads=threads,
                progress=recorder.tile_progress,
            )
        )


def _run_on_executor(
    todo: list[SlideTask],
    recorder: _Recorder,
    executor: Executor | None,
    *,
    workers: int,
    threads: int,
    to_images: bool,
) -> None:
    """Extract the slides on ``executor``, or on a process pool of ``workers`` of our own.

    Workers of our own end when this process dies (even by SIGKILL); this
    thread holds the pool until shutdown, as the parent-death signal needs
    (see :mod:`tilestream._util.lifetime`).
    """
    run = recorder.run
    own = executor is None
    pool: Executor = executor or ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures: dict[Future[SlideResult], SlideTask] = {
            pool.submit(
                run_slide_task,
                t,
                str(run.run_dir),
                run.config,
                to_images=to_images,
                threads=threads,
                raise_transient=not own,
            ): t
            for t in todo
        }
        for fut in as_completed(futures):
            recorder.record(_task_result(fut, futures[fut], run))
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def _task_result(fut: Future[SlideResult], task: SlideTask, run: ExtractionRun) -> SlideResult:
    """A finished future's result; a worker that died, or retries run out, become a failure."""
    try:
        return fut.result()
    except CancelledError:
        raise
    except Exception as exc:  # a worker died, or retries ran out on a transient error
        if isinstance(exc, BrokenProcessPool):
            exc = ExtractionError(f"{task.name}: worker process died ({exc})")
        result = failure_result(task, run.config, exc, 0.0)
        log.warning("slide %s failed: %s", task.name, result.error)
        record_failure(run.run_dir, result)
        return result


def _extract_locked(
    slides: Iterable[str | os.PathLike[str] | SlideTask],
    run_dir: Path,
    config: ExtractConfig,
    *,
    executor: Executor | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    roi_dir: str | os.PathLike[str] | None,
    progress: ProgressCallback | None,
    t_start: float,
) -> ExtractionRun:
    """The run of :func:`extract_slides`, once it holds ``run_dir``."""
    tasks = discover_slides(slides, roi_dir=roi_dir)
    if not tasks:
        raise ConfigError("no slides found in the given inputs")
    run = ExtractionRun(run_dir=run_dir, config=config)
    todo = _tasks_to_do(run, tasks, overwrite=overwrite, to_images=to_images)
    recorder = _Recorder(run, len(tasks), todo, to_images=to_images, progress=progress)
    cores = os.cpu_count() or 1
    n_workers = max(1, workers or cores)
    if todo and executor is None and (n_workers == 1 or len(todo) == 1):
        _run_in_process(todo, recorder, threads=threads or cores, to_images=to_images)
    elif todo:
        # an executor of the caller's runs one task per worker thread: one thread each
        per_slide = threads or (
            max(1, cores // min(n_workers, len(todo))) if executor is None else 1
        )
        _run_on_executor(
            todo, recorder, executor, workers=min(n_workers, len(todo)), threads=per_slide,
            to_images=to_images,
        )  # fmt: skip
    run.seconds = time.perf_counter() - t_start
    summary = write_report(run_dir, config)
    run.stale = dict(summary["stale"])
    _write_config(run_dir, config, summary["tile_grid"]["tile_um"])
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
    **options: Unpack[ConfigOptions],
) -> SlideResult:
    """Extract one slide; see :func:`extract_slides` for the outputs.

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
        tile_px=tile_px,
        tile_um=tile_um,
        **options,
    )
    return run.results[0]
