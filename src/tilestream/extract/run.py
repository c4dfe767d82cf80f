"""Extraction of many slides: resume, parallel execution, manifest, summary and report.

The driver submits one task per slide (largest first) to a
:class:`concurrent.futures.Executor` (a process pool by default) and records
each small result as it arrives. A slide that fails is recorded with its
reason and the others go on. Re-running the same command skips the slides
whose outputs are complete and whose config hash and source file match.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream import __version__
from tilestream._util.atomic import remove_temp_files, write_json_atomic
from tilestream._util.lifetime import die_with_parent
from tilestream._util.lock import run_lock, task_lock
from tilestream._util.names import name_problem, outside
from tilestream.errors import ConfigError, ExtractionError, TileStreamError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.engine import (
    SlideResult,
    SlideTask,
    TileProgress,
    extract_slide_task,
    failure_result,
    slide_outputs,
    write_failure_state,
)
from tilestream.extract.fingerprint import file_sha256, fingerprint_matches
from tilestream.extract.report import write_report
from tilestream.extract.resample import libvips_version, resolve_resizer
from tilestream.extract.sources import discover_slides
from tilestream.runfolder import TFRECORD_SUFFIX, read_state, slide_staleness

__all__ = [
    "ExtractionRun",
    "RunProgress",
    "extract_slides",
    "extract_tiles",
    "is_complete",
    "run_slide_task",
]

log = logging.getLogger(__name__)


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


def _outputs_match(state: dict[str, Any], outputs: dict[str, Path]) -> bool:
    """Every output exists and matches the sizes and digests its "done" state recorded."""
    if not all(p.exists() for p in outputs.values()):
        return False
    recorded = state.get("outputs")
    if not isinstance(recorded, dict) or "coords" not in recorded:
        return False
    for kind, meta in recorded.items():
        path = outputs.get(kind)
        if path is None or not isinstance(meta, dict):
            return False
        try:
            if path.stat().st_size != meta.get("size"):
                return False
            if "sha256" in meta and file_sha256(path) != meta["sha256"]:
                return False
        except OSError:
            return False
    return True


def is_complete(
    run_dir: Path, task: SlideTask, config: ExtractConfig, *, to_images: bool = False
) -> SlideResult | None:
    """The stored result if ``task`` is already extracted with ``config`` from the same file.

    Complete means: the slide's state says ``"done"`` under ``config``'s hash
    (so it is current in the sense of :func:`tilestream.runfolder.slide_staleness`),
    every output is there with the size (and, for the coordinates,
    the SHA-256) the state recorded, and the slide file still has the
    fingerprint the state recorded (:mod:`tilestream.extract.fingerprint`).
    """
    outputs = slide_outputs(run_dir, task.name, to_images=to_images)
    state = read_state(run_dir, task.name)
    if state is None:
        return None
    if slide_staleness(run_dir, task.name, config_hash=config.hash(), state=state) is not None:
        return None
    if not _outputs_match(state, outputs):
        return None
    if not fingerprint_matches(state.get("source"), task.path):
        return None
    result = SlideResult.from_dict(state)
    result.status = "skipped"
    return result


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or failing storage, not a bug: they become slide failures.

    Our own errors, I/O errors, running out of memory, and what the decoders
    raise on a damaged or hostile file when it reaches them directly (the
    slide layer turns most of these into :class:`~tilestream.errors.SlideError`).
    """
    errors: list[type[BaseException]] = [TileStreamError, OSError, MemoryError]
    with contextlib.suppress(ImportError):
        from PIL import Image

        errors.append(Image.DecompressionBombError)
    with contextlib.suppress(ImportError, AttributeError):
        import tifffile

        errors.append(tifffile.TiffFileError)
    with contextlib.suppress(ImportError, AttributeError):
        import openslide

        errors.append(openslide.OpenSlideError)
    return tuple(errors)


def _record_failure(run_dir: Path, result: SlideResult) -> None:
    """Write a failure's state file; never for a name that could write elsewhere."""
    state = slide_outputs(run_dir, result.slide)["state"]
    if name_problem(result.slide) is not None or outside(run_dir, [state]) is not None:
        return
    try:
        write_failure_state(run_dir, result)
    except OSError as state_exc:  # the folder itself is failing (e.g. disk full)
        log.error("cannot record failure of %s: %s", result.slide, state_exc)


def run_slide_task(
    task: SlideTask,
    run_dir: str,
    config: ExtractConfig,
    *,
    to_images: bool = False,
    threads: int = 1,
    progress: TileProgress | None = None,
    raise_transient: bool = False,
) -> SlideResult:
    """Extract one slide and return its record; a permanent failure becomes a failure record.

    This is the unit of work sent to executors: it takes and returns small
    picklable objects, never pixels. While it works it holds the run folder's
    shared worker lock (see :func:`tilestream._util.lock.task_lock`).

    Bad input and I/O errors (every :class:`~tilestream.errors.TileStreamError`,
    ``OSError``, ``MemoryError``, a decoder's error on a damaged file) are
    logged at WARNING and recorded as the slide's failure. Any other
    exception is a bug in tilestream: it is recorded the same way, with its
    ``traceback`` in the record and the state file, and logged at ERROR.

    Parameters
    ----------
    raise_transient
        Let transient errors (``OSError`` other than tilestream's own, e.g. an
        I/O error on shared storage) propagate, so that an executor with
        retries (Dask) repeats only what can succeed. Permanent errors (an
        unreadable slide, no tissue, missing MPP: every
        :class:`~tilestream.errors.TileStreamError`) always become records.
    """
    t0 = time.perf_counter()
    try:
        with task_lock(run_dir):
            # The config was made elsewhere (a cluster's client): fail before opening the
            # slide when this worker lacks the resizer it names.
            resolve_resizer(config.resizer)
            return extract_slide_task(
                task, run_dir, config, to_images=to_images, threads=threads, progress=progress
            )
    except Exception as exc:
        expected = isinstance(exc, _input_errors())
        if raise_transient and isinstance(exc, OSError) and not isinstance(exc, TileStreamError):
            log.warning("slide %s: transient error, leaving it to the executor: %s", task.name, exc)
            raise
        result = failure_result(task, config, exc, time.perf_counter() - t0)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            result.error = f"{task.name}: no space left in {run_dir} ({exc})"
        if expected:
            log.warning("slide %s failed: %s", task.name, result.error)
        else:
            result.traceback = traceback.format_exc()
            log.error(
                "slide %s: internal error, a bug in tilestream (please report it):\n%s",
                task.name, result.traceback,
            )  # fmt: skip
        _record_failure(Path(run_dir), result)
        return result


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


RUN_FILES = ("manifest.json", "config.json", "summary.json", "report.html")


def _remove_stale_run_temp_files(run_dir: Path) -> None:
    """Remove temporary files an interrupted run left for the run-level files (ours only).

    One driver at a time owns a run folder; per-slide temporary files are
    cleaned when the slide is extracted again.
    """
    remove_temp_files(run_dir, RUN_FILES)


def _size(task: SlideTask) -> int:
    try:
        return os.stat(task.path).st_size
    except OSError:
        return -1


def _manifest_entry(run_dir: Path, name: str, config_hash: str) -> dict[str, int] | None:
    """Slide ``name``'s manifest entry, ``None`` unless it is current (see :mod:`tilestream.runfolder`)."""
    state = read_state(run_dir, name)
    if state is None or slide_staleness(run_dir, name, config_hash=config_hash, state=state):
        return None
    tiles = state.get("tiles")
    return {"total": tiles} if isinstance(tiles, int) else None


def _current_manifest(
    run_dir: Path, config_hash: str, *, exclude: set[str] | frozenset[str] = frozenset()
) -> dict[str, dict[str, int]]:
    """The manifest of the slides in ``run_dir`` current under ``config_hash``, less ``exclude``.

    Slides whose outputs are stale (failed, interrupted, of another config,
    changed since) get no entry: the manifest never counts their records.
    """
    manifest: dict[str, dict[str, int]] = {}
    for path in sorted(run_dir.glob(f"*{TFRECORD_SUFFIX}")):
        name = path.name[: -len(TFRECORD_SUFFIX)]
        if path.name.startswith(".") or name in exclude:
            continue
        entry = _manifest_entry(run_dir, name, config_hash)
        if entry is not None:
            manifest[path.name] = entry
    return manifest


class _Manifest:
    """``manifest.json`` of a run folder, rewritten (atomically) only when it changes."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "manifest.json"
        try:
            self.on_disk: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.on_disk = None

    def write(self, manifest: dict[str, dict[str, int]]) -> None:
        content = dict(sorted(manifest.items()))
        if content != self.on_disk:
            write_json_atomic(self.path, content)
            self.on_disk = content


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
    **options: Any,
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
    if config is None:
        config = ExtractConfig.from_dict(options)
    elif options:
        config = config.replace(**options)
    run_dir = Path(out_dir) / config.label
    _check_writable(run_dir)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
            _remove_stale_run_temp_files(run_dir)
            # before config.json names a new hash: the manifest keeps only that hash's slides
            _Manifest(run_dir).write(_current_manifest(run_dir, config.hash()))
            write_json_atomic(
                run_dir / "config.json",
                {"config": config.to_dict(), "hash": config.hash(), "versions": _versions(config)},
            )
        except OSError as exc:
            raise _folder_error(run_dir, exc) from exc
        return _extract_locked(
            slides, run_dir, config, executor=executor, workers=workers, threads=threads,
            overwrite=overwrite, to_images=to_images, roi_dir=roi_dir, progress=progress,
            t_start=t_start,
        )  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow


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

    todo: list[SlideTask] = []
    for task in tasks:
        previous = None if overwrite else is_complete(run_dir, task, config, to_images=to_images)
        if previous is not None:
            run.results.append(previous)
        else:
            todo.append(task)
    todo.sort(key=_size, reverse=True)
    total = len(tasks)
    tiles_done = run.tiles

    # the manifest lists current slides only, and none while it is being re-extracted
    pending = {t.name for t in todo}
    manifest_file = _Manifest(run_dir)
    manifest = _current_manifest(run_dir, config.hash(), exclude=pending)
    manifest_file.write(manifest)

    def record(result: SlideResult) -> None:
        nonlocal tiles_done
        run.results.append(result)
        pending.discard(result.slide)
        key = f"{result.slide}{TFRECORD_SUFFIX}"
        entry = None if to_images else _manifest_entry(run_dir, result.slide, config.hash())
        if entry is None:
            manifest.pop(key, None)
        else:
            manifest[key] = entry
        manifest_file.write(manifest)
        if result.status == "done":
            tiles_done += result.tiles
        if progress is not None:
            progress(RunProgress(total, len(run.results), tiles_done, result.slide, result=result))

    if run.results and progress is not None:
        progress(RunProgress(total, len(run.results), tiles_done))

    cores = os.cpu_count() or 1
    n_workers = max(1, workers or cores)
    if todo and executor is None and (n_workers == 1 or len(todo) == 1):
        per_slide = threads or cores

        def tile_progress(name: str, done: int, of: int) -> None:
            if progress is not None:
                progress(RunProgress(total, len(run.results), tiles_done, name, done, of))

        for task in todo:
            record(
                run_slide_task(
                    task,
                    str(run_dir),
                    config,
                    to_images=to_images,
                    threads=per_slide,
                    progress=tile_progress,
                )
            )
    elif todo:
        own = executor is None
        # an executor of the caller's runs one task per worker thread: one thread each
        per_slide = threads or (max(1, cores // min(n_workers, len(todo))) if own else 1)
        # Workers end when this process dies (even by SIGKILL); this thread holds the pool
        # until shutdown, as the parent-death signal needs (see tilestream._util.lifetime).
        pool: Executor = executor or ProcessPoolExecutor(
            max_workers=min(n_workers, len(todo)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            futures: dict[Future[SlideResult], SlideTask] = {
                pool.submit(
                    run_slide_task,
                    t,
                    str(run_dir),
                    config,
                    to_images=to_images,
                    threads=per_slide,
                    raise_transient=not own,
                ): t
                for t in todo
            }
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    result = fut.result()
                except CancelledError:
                    raise
                except Exception as exc:  # a worker died, or retries ran out on a transient error
                    if isinstance(exc, BrokenProcessPool):
                        exc = ExtractionError(f"{task.name}: worker process died ({exc})")
                    result = failure_result(task, config, exc, 0.0)
                    log.warning("slide %s failed: %s", task.name, result.error)
                    _record_failure(run_dir, result)
                record(result)
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)

    run.seconds = time.perf_counter() - t_start
    run.stale = dict(write_report(run_dir, config)["stale"])
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
    **options: Any,
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
