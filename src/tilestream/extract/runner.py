"""Running slide tasks and recording their results: what local and object-store runs share.

:func:`run_jobs` runs a *job* (a picklable callable taking a
:class:`SlideTask` and returning its :class:`SlideResult`: the local
:func:`~tilestream.extract.worker.run_slide_task` or the publishing
:func:`~tilestream.extract.publish.run_remote_slide_task`, bound to a run
folder) over the slides to do, in this process or on an executor, and hands
each result to a :class:`Recorder` (the run's results, ``manifest.json``, the
progress callback).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream import __version__
from tilestream._util.atomic import write_json_atomic
from tilestream._util.lifetime import die_with_parent
from tilestream.errors import ConfigError, ExtractionError
from tilestream.extract.config import SNAP_TOLERANCE, ExtractConfig
from tilestream.extract.engine import failure_result
from tilestream.extract.manifest import RunManifest
from tilestream.extract.resample import libvips_version
from tilestream.extract.sources import discover_slides
from tilestream.extract.task import SlideResult, SlideTask
from tilestream.runfolder import CONFIG_FILE

__all__ = [
    "STAGE_MODES",
    "ExtractionRun",
    "ProgressCallback",
    "Recorder",
    "RunProgress",
    "SlideJob",
    "resolve_config",
    "run_jobs",
    "slide_size",
    "slide_tasks",
    "write_config",
]

log = logging.getLogger(__name__)

#: A slide task bound to its run folder: ``job(task, threads=, progress=, raise_transient=)``.
SlideJob = Callable[..., SlideResult]


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
    """The outcome of :func:`~tilestream.extract.extract_slides`.

    ``run_dir`` is the run folder; for a run whose output is a URL, ``url``
    is the run folder's URL (without credentials) and ``run_dir`` the local
    folder the driver kept the run's small files in (removed when it ends).
    """

    run_dir: Path
    config: ExtractConfig
    results: list[SlideResult] = field(default_factory=list)
    seconds: float = 0.0
    #: ``{slide: reason}``: slides whose outputs are in the folder but not current
    #: (see :mod:`tilestream.runfolder`); kept, and left out of the manifest.
    stale: dict[str, str] = field(default_factory=dict)
    url: str | None = None

    def _count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def location(self) -> str:
        """Where the run folder is: its URL, or its path."""
        return self.url or str(self.run_dir)

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


def write_config(
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


def resolve_config(config: ExtractConfig | None, options: Mapping[str, Any]) -> ExtractConfig:
    """``config`` with ``options`` applied, or a config of ``options`` alone."""
    if config is None:
        return ExtractConfig.from_dict(dict(options))
    return config.replace(**options) if options else config


#: The ways a slide URL can be opened (see :class:`~tilestream.extract.task.SlideTask`).
STAGE_MODES = ("auto", "never", "always")


def slide_tasks(
    slides: Iterable[str | os.PathLike[str] | SlideTask],
    roi_dir: str | os.PathLike[str] | None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    stage: str = "auto",
) -> list[SlideTask]:
    """The slide tasks of the inputs, carrying ``storage_options`` and ``stage`` (``ConfigError`` if none)."""
    if stage not in STAGE_MODES:
        raise ConfigError(f"stage must be one of {', '.join(STAGE_MODES)}, not {stage!r}")
    tasks = discover_slides(slides, roi_dir=roi_dir, storage_options=storage_options)
    if not tasks:
        raise ConfigError("no slides found in the given inputs")
    if storage_options is None and stage == "auto":
        return tasks
    return [
        dataclasses.replace(t, storage_options=t.storage_options or storage_options, stage=stage)
        for t in tasks
    ]


def slide_size(task: SlideTask) -> int:
    """The slide file's size (to extract the largest first); -1 for a URL or a missing file."""
    try:
        return os.stat(task.path).st_size
    except OSError:
        return -1


class Recorder:
    """Records each slide's result as it arrives: in the run, the manifest, the progress callback.

    The manifest lists the current slides only, and none while it is being
    extracted again. ``sync`` is called with each result before the manifest
    is brought up to date (a remote run copies the slide's state into its
    local mirror), ``published`` after each manifest write (it uploads it),
    and ``lost`` records a slide whose task never returned (a dead worker).
    """

    def __init__(
        self,
        run: ExtractionRun,
        total: int,
        todo: list[SlideTask],
        *,
        to_images: bool,
        progress: ProgressCallback | None,
        sync: Callable[[SlideResult], None] | None = None,
        published: Callable[[], None] | None = None,
        lost: Callable[[SlideResult], None] | None = None,
    ) -> None:
        self.run = run
        self.total = total
        self.to_images = to_images
        self.progress = progress
        self.sync, self.published = sync, published
        self.lost = lost
        self.tiles_done = run.tiles
        self.pending = {t.name for t in todo}
        self.manifest = RunManifest(run.run_dir, run.config.hash())
        self.manifest.rebuild(exclude=self.pending)
        if self.published is not None:
            self.published()
        if run.results and progress is not None:
            progress(RunProgress(total, len(run.results), self.tiles_done))

    def record(self, result: SlideResult) -> None:
        """Record a finished slide (done, failed)."""
        run = self.run
        run.results.append(result)
        self.pending.discard(result.slide)
        if self.sync is not None:
            self.sync(result)
        self.manifest.update(result.slide, listed=not self.to_images)
        if self.published is not None:
            self.published()
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

    def task_result(self, fut: Future[SlideResult], task: SlideTask) -> SlideResult:
        """A finished future's result; a worker that died, or retries run out, become a failure."""
        try:
            return fut.result()
        except CancelledError:
            raise
        except Exception as exc:  # a worker died, or retries ran out on a transient error
            if isinstance(exc, BrokenProcessPool):
                exc = ExtractionError(f"{task.name}: worker process died ({exc})")
            result = failure_result(task, self.run.config, exc, 0.0)
            log.warning("slide %s failed: %s", task.name, result.error)
            if self.lost is not None:
                self.lost(result)
            return result


def _run_in_process(
    job: SlideJob, todo: list[SlideTask], recorder: Recorder, *, threads: int
) -> None:
    """Extract the slides one after the other in this process, ``threads`` threads each."""
    for task in todo:
        recorder.record(job(task, threads=threads, progress=recorder.tile_progress))


def _run_on_executor(
    job: SlideJob,
    todo: list[SlideTask],
    recorder: Recorder,
    executor: Executor | None,
    *,
    workers: int,
    threads: int,
) -> None:
    """Extract the slides on ``executor``, or on a process pool of ``workers`` of our own.

    Workers of our own end when this process dies (even by SIGKILL); this
    thread holds the pool until shutdown, as the parent-death signal needs
    (see :mod:`tilestream._util.lifetime`).
    """
    own = executor is None
    pool: Executor = executor or ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures: dict[Future[SlideResult], SlideTask] = {
            pool.submit(job, t, threads=threads, raise_transient=not own): t for t in todo
        }
        for fut in as_completed(futures):
            recorder.record(recorder.task_result(fut, futures[fut]))
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def run_jobs(
    job: SlideJob,
    todo: list[SlideTask],
    recorder: Recorder,
    executor: Executor | None,
    *,
    workers: int | None,
    threads: int | None,
) -> None:
    """Run ``job`` over ``todo``: in this process (one worker or one slide) or on an executor.

    ``threads`` defaults to the cores left per worker (one per task on an
    executor of the caller's, which runs one task per worker thread).
    """
    if not todo:
        return
    cores = os.cpu_count() or 1
    n_workers = max(1, workers or cores)
    if executor is None and (n_workers == 1 or len(todo) == 1):
        _run_in_process(job, todo, recorder, threads=threads or cores)
        return
    per_slide = threads or (max(1, cores // min(n_workers, len(todo))) if executor is None else 1)
    _run_on_executor(
        job, todo, recorder, executor, workers=min(n_workers, len(todo)), threads=per_slide
    )
