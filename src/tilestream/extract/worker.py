"""The unit of work sent to executors: one slide extracted, its failure recorded.

:func:`run_slide_task` takes and returns small picklable objects, never
pixels, so that any :class:`concurrent.futures.Executor` (a process pool,
Dask) can run it. It turns a failure into the slide's failure record.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
import traceback
from pathlib import Path

from tilestream._util.lock import task_lock
from tilestream._util.names import name_problem, outside
from tilestream.errors import StorageUnavailableError, TileStreamError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.engine import extract_slide_task, failure_result, write_failure_state
from tilestream.extract.resample import resolve_resizer
from tilestream.extract.task import SlideResult, SlideTask, TileProgress
from tilestream.runfolder import slide_outputs

__all__ = ["input_errors", "record_failure", "run_slide_task"]

log = logging.getLogger(__name__)


def input_errors() -> tuple[type[BaseException], ...]:
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


def _transient(exc: BaseException) -> bool:
    """An I/O error that may pass: an ``OSError`` not of ours, or a store still unavailable."""
    if isinstance(exc, StorageUnavailableError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, TileStreamError)


def record_failure(run_dir: Path, result: SlideResult) -> None:
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

    While it works it holds the run folder's shared worker lock (see
    :func:`tilestream._util.lock.task_lock`).

    Bad input and I/O errors (every :class:`~tilestream.errors.TileStreamError`,
    ``OSError``, ``MemoryError``, a decoder's error on a damaged file) are
    logged at WARNING and recorded as the slide's failure. Any other
    exception is a bug in tilestream: it is recorded the same way, with its
    ``traceback`` in the record and the state file, and logged at ERROR.

    Parameters
    ----------
    raise_transient
        Let transient errors (``OSError`` other than tilestream's own, e.g. an
        I/O error on shared storage, and a store that stays unavailable after
        its retries) propagate, so that an executor with
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
        expected = isinstance(exc, input_errors())
        if raise_transient and _transient(exc):
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
        record_failure(Path(run_dir), result)
        return result
