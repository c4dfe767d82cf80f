"""Slide outputs published to object storage: extracted in local scratch, uploaded in commit order.

A run whose output is a URL (``s3://bucket/prefix``) keeps the layout of a
local run folder under ``<prefix>/<label>/`` (:mod:`tilestream.runfolder`
names the keys). Each slide task (:func:`run_remote_slide_task`, picklable
for any executor) extracts the slide with the unchanged local engine into a
private scratch folder on the machine it runs on, then publishes:

1. ``state/S.json`` with status ``"running"`` (the slide reads as not complete
   from here on, as in a local run);
2. each output with :meth:`Store.write_atomic <tilestream.storage.Store.write_atomic>`:
   the TFRecord, its index, the coordinates, the rejected tiles, the outlines,
   the preview (loose tiles in images mode). An upload completes or is aborted:
   no partial object is ever visible under a final key;
3. ``state/S.json`` with status ``"done"``, recording each output's size, and
   the ETag the store gave it (and the coordinates' SHA-256).

The scratch folder is removed whatever happens. A rerun judges a slide
complete (:func:`remote_staleness`, and the slide's fingerprint, checked by
:mod:`tilestream.extract.remote_run`) only from a ``"done"`` state under its
config hash whose outputs still have the recorded sizes and ETags and whose
slide still has the recorded fingerprint. A failure is recorded in the bucket
too (``state/S.json``, status ``"failed"``), with the reason and the URL, never
credentials.

Scratch: ``scratch`` when given, else ``$TILESTREAM_SCRATCH`` (a Dask worker
started by :func:`tilestream.distributed.dask_executor` sets it to its own
``local_directory``), else the system's temporary folder. It holds one slide's
outputs at a time per task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream.errors import StorageError, StorageNotFoundError, StorageUnavailableError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.engine import failure_result
from tilestream.extract.task import SlideResult, SlideTask, TileProgress
from tilestream.extract.worker import run_slide_task
from tilestream.runfolder import (
    STATE_DIR,
    slide_output_keys,
    slide_outputs,
    store_slide_staleness,
)
from tilestream.storage import Store, store_for

__all__ = [
    "PUBLISH_ORDER",
    "SCRATCH_ENV",
    "RemoteRun",
    "publish_failure",
    "publish_slide",
    "read_remote_states",
    "remote_staleness",
    "run_remote_slide_task",
    "scratch_root",
    "upload_file",
]

log = logging.getLogger(__name__)

#: The environment variable naming the local scratch folder of slide tasks.
SCRATCH_ENV = "TILESTREAM_SCRATCH"
#: The order a slide's outputs are uploaded in; the state file comes after all of them.
PUBLISH_ORDER = ("tfrecord", "index", "coords", "rejected", "outlines", "preview")
_CHUNK = 8 << 20
_UPLOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class RemoteRun:
    """Where a run's outputs go: a run folder URL, its storage options, the scratch folder.

    Picklable (sent to every worker); the storage options (credentials) are
    never in its ``repr``.
    """

    url: str
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    scratch: str | None = None

    def open(self) -> tuple[Store, str]:
        """The store and the run folder's key in it."""
        store, key = store_for(self.url, self.storage_options)
        return store, key.strip("/")


def scratch_root(scratch: str | os.PathLike[str] | None = None) -> Path:
    """The local folder slide tasks extract into before they publish (made if missing)."""
    root = Path(scratch or os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def upload_file(store: Store, key: str, path: Path) -> dict[str, Any]:
    """Upload ``path`` to ``key`` atomically; return ``{"size", "etag"}`` of the stored object.

    A file up to 8 MiB is one PUT (retried by the store); a larger one a
    multipart upload from the file, run again from the start (up to 3
    times) when the store stays unavailable: the file can be read again, an
    iterator cannot.
    """
    size = path.stat().st_size
    for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
        try:
            if size <= _CHUNK:
                store.write_atomic(key, path.read_bytes())
            else:
                store.write_atomic(key, _chunks(path))
            break
        except StorageUnavailableError as exc:
            if attempt == _UPLOAD_ATTEMPTS:
                raise
            log.info("upload of %s failed (%s); again from the start", store.url_of(key), exc)
            time.sleep(0.2 * attempt)
    stat = store.stat(key)
    if stat.size != size:
        raise StorageError(f"stored {stat.size} bytes, the file has {size}", path=store.url_of(key))
    return {"size": size, "etag": stat.etag}


def _write_state(store: Store, key: str, result: SlideResult) -> None:
    store.write_atomic(key, json.dumps(result.to_dict(), indent=1).encode())


def publish_slide(
    store: Store, run: str, local_run: Path, result: SlideResult, *, to_images: bool = False
) -> SlideResult:
    """Upload a slide extracted into ``local_run`` to run folder ``run`` in commit order.

    Returns the "done" record with each output's ETag added (what the state
    object in the store holds).
    """
    name = result.slide
    local = slide_outputs(local_run, name, to_images=to_images)
    keys = slide_output_keys(run, name, to_images=to_images)
    running = SlideResult(slide=name, path=result.path, status="running",
                          config_hash=result.config_hash, source=result.source)  # fmt: skip
    _write_state(store, keys["state"], running)
    records = {k: dict(v) for k, v in result.outputs.items()}
    for kind in PUBLISH_ORDER:
        path = local.get(kind)
        if path is not None and path.is_file():
            stored = upload_file(store, keys[kind], path)
            if kind in records:
                records[kind]["etag"] = stored["etag"]
    if to_images and local["images"].is_dir():
        for tile in sorted(local["images"].iterdir()):
            upload_file(store, f"{keys['images']}/{tile.name}", tile)
    done = SlideResult.from_dict({**result.to_dict(), "outputs": records})
    _write_state(store, keys["state"], done)
    return done


def publish_failure(store: Store, run: str, result: SlideResult) -> None:
    """Record a failed slide's state in the store; a store that fails too is logged, not raised."""
    key = slide_output_keys(run, result.slide)["state"]
    try:
        _write_state(store, key, result)
    except StorageError as exc:
        log.error("cannot record failure of %s: %s", result.slide, exc)


def run_remote_slide_task(
    task: SlideTask,
    target: RemoteRun,
    config: ExtractConfig,
    *,
    to_images: bool = False,
    threads: int = 1,
    progress: TileProgress | None = None,
    raise_transient: bool = False,
) -> SlideResult:
    """Extract one slide in local scratch and publish it to ``target`` (see the module doc).

    Failures become records (in the store too) as with
    :func:`~tilestream.extract.worker.run_slide_task`; with ``raise_transient``
    a store that stays unavailable while publishing is raised for the
    executor's retries instead.
    """
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tilestream-slide-", dir=scratch_root(target.scratch)))
    try:
        result = run_slide_task(
            task, str(work / "run"), config, to_images=to_images, threads=threads,
            progress=progress, raise_transient=raise_transient,
        )  # fmt: skip
        store, run = target.open()
        if result.status != "done":
            publish_failure(store, run, result)
            return result
        try:
            return publish_slide(store, run, work / "run", result, to_images=to_images)
        except StorageError as exc:
            if raise_transient and isinstance(exc, StorageUnavailableError):
                log.warning("slide %s: store unavailable, leaving it to the executor", task.name)
                raise
            failed = failure_result(task, config, exc, time.perf_counter() - t0)
            log.warning("slide %s failed: %s", task.name, failed.error)
            publish_failure(store, run, failed)
            return failed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_remote_states(store: Store, run: str) -> dict[str, dict[str, Any]]:
    """``{slide: state}`` of every readable state object of run folder ``run`` (GETs in parallel)."""
    prefix = f"{run}/{STATE_DIR}/"
    keys = [k for k in store.list(f"{run}/{STATE_DIR}") if k.endswith(".json")]
    keys = [k for k in keys if "/" not in k[len(prefix) :]]

    def get(key: str) -> tuple[str, dict[str, Any] | None]:
        name = key[len(prefix) : -len(".json")]
        try:
            data = json.loads(store.read(key))
        except (StorageNotFoundError, ValueError):
            return name, None
        return name, data if isinstance(data, dict) else None

    with ThreadPoolExecutor(8, thread_name_prefix="tilestream-states") as pool:
        return {n: s for n, s in pool.map(get, keys) if s is not None}


def remote_staleness(
    store: Store, run: str, name: str, state: dict[str, Any] | None, config_hash: str
) -> str | None:
    """Why slide ``name``'s outputs in the store are not current (:func:`~tilestream.runfolder.store_slide_staleness`)."""
    return store_slide_staleness(store, run, name, state, config_hash)
