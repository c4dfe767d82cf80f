"""A run whose output is a URL: the run folder in an object store, resumed from the store.

``extract_slides(slides, "s3://bucket/prefix", ...)`` writes the run folder
``<prefix>/<label>/`` with the layout of a local one
(:mod:`tilestream.runfolder`). The driver:

0. checks that the bucket exists and answers these credentials, with one
   request (:meth:`Store.check_root <tilestream.storage.Store.check_root>`): a
   missing bucket or refused credentials stop the run before anything is
   claimed, written or extracted;
1. claims the run folder with a lease (:mod:`tilestream.extract.lease`): one
   run per run folder, as a file lock does locally;
2. reads every state object (``state/*.json``) and checks each ``"done"``
   slide's outputs in the store (size and ETag, one ``HEAD`` each);
3. writes ``manifest.json`` (the current slides only) and ``config.json``;
4. runs one task per slide not complete (:func:`~tilestream.extract.publish.run_remote_slide_task`):
   each extracts into its own local scratch and publishes the outputs, the
   state last; a slide is complete when its state is ``"done"`` under this
   config hash, its outputs have the recorded sizes and ETags, and its slide
   the recorded fingerprint;
5. after each slide, the manifest; at the end ``summary.json``,
   ``report.html`` and ``config.json`` with the tile grid: each after the data
   it describes.

The manifest and report are made by the same code as a local run's, over a
local *mirror* of the run's small files: its state records, and for each
current slide sparse placeholder files of its outputs' recorded sizes (no
bytes are downloaded). The mirror lives in the scratch folder and is removed
at the end.

Nothing of ``storage_options`` is written anywhere: not in ``config.json``
(the config holds extraction options only), the state objects, the summary,
the report or a log line; errors name URLs without credentials.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tilestream.errors import ExtractionError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.fingerprint import fingerprint_matches
from tilestream.extract.lease import Lease
from tilestream.extract.manifest import RunManifest
from tilestream.extract.publish import (
    RemoteRun,
    publish_failure,
    read_remote_states,
    remote_staleness,
    run_remote_slide_task,
    scratch_root,
)
from tilestream.extract.report import write_report
from tilestream.extract.runner import (
    ExtractionRun,
    ProgressCallback,
    Recorder,
    run_jobs,
    slide_size,
    write_config,
)
from tilestream.extract.task import SlideResult, SlideTask
from tilestream.runfolder import (
    CONFIG_FILE,
    MANIFEST_FILE,
    OUTPUT_KINDS,
    REPORT_FILE,
    SUMMARY_FILE,
    run_key,
    slide_outputs,
)
from tilestream.storage import Store, store_for

__all__ = ["RemoteMirror", "extract_to_store"]

log = logging.getLogger(__name__)


class RemoteMirror:
    """The local mirror of a run folder in a store: its small files, placeholders for the rest."""

    def __init__(self, store: Store, run: str, folder: Path, *, lease: Lease) -> None:
        self.store, self.run, self.folder, self.lease = store, run, folder, lease
        (folder / "state").mkdir(parents=True, exist_ok=True)
        self._uploaded: dict[str, bytes] = {}

    def put_state(self, name: str, state: dict[str, Any], *, current: bool) -> None:
        """Mirror a slide's state; placeholders of its recorded outputs when it is current."""
        outputs = slide_outputs(self.folder, name)
        outputs["state"].write_text(json.dumps(state), encoding="utf-8")
        recorded = state.get("outputs") if current else None
        for kind in OUTPUT_KINDS:
            meta = recorded.get(kind) if isinstance(recorded, dict) else None
            path = outputs[kind]
            if isinstance(meta, dict) and isinstance(meta.get("size"), int):
                with open(path, "wb") as f:
                    f.truncate(meta["size"])  # sparse: no bytes on disk
            else:
                path.unlink(missing_ok=True)

    def upload(self, name: str) -> None:
        """Upload the run-level file ``name`` from the mirror when it changed since the last upload."""
        self.lease.check()
        data = (self.folder / name).read_bytes()
        if self._uploaded.get(name) != data:
            self.store.write_atomic(f"{self.run}/{name}", data)
            self._uploaded[name] = data


def _staleness(
    store: Store, run: str, states: dict[str, dict[str, Any]], config_hash: str
) -> dict[str, str | None]:
    """``{slide: reason or None}`` for every state in the store (a few ``HEAD`` each, in parallel)."""

    def judge(name: str) -> tuple[str, str | None]:
        return name, remote_staleness(store, run, name, states[name], config_hash)

    with ThreadPoolExecutor(8, thread_name_prefix="tilestream-resume") as pool:
        return dict(pool.map(judge, sorted(states)))


def _tasks_to_do(
    run: ExtractionRun,
    tasks: list[SlideTask],
    states: dict[str, dict[str, Any]],
    reasons: dict[str, str | None],
    *,
    overwrite: bool,
) -> list[SlideTask]:
    """The tasks not complete in the store; the complete ones are recorded as ``"skipped"``."""
    todo: list[SlideTask] = []
    for task in tasks:
        state = states.get(task.name)
        complete = (
            not overwrite
            and state is not None
            and task.name in reasons
            and reasons[task.name] is None
            and fingerprint_matches(
                state.get("source"), task.path, storage_options=task.storage_options
            )
        )
        if complete and state is not None:
            result = SlideResult.from_dict(state)
            result.status = "skipped"
            run.results.append(result)
        else:
            if state is not None and not overwrite:
                log.info("slide %s is extracted again: %s", task.name,
                         reasons.get(task.name) or "its slide changed")  # fmt: skip
            todo.append(task)
    todo.sort(key=slide_size, reverse=True)  # local slide files largest first (URLs: -1)
    return todo


def _sync(mirror: RemoteMirror, result: SlideResult) -> None:
    mirror.put_state(result.slide, result.to_dict(), current=result.status == "done")


def extract_to_store(
    tasks: list[SlideTask],
    out_url: str,
    config: ExtractConfig,
    *,
    storage_options: Mapping[str, Any] | None,
    executor: Executor | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    progress: ProgressCallback | None,
    scratch: str | os.PathLike[str] | None,
    force_lease: bool,
    t_start: float,
) -> ExtractionRun:
    """:func:`~tilestream.extract.extract_slides` into ``out_url`` (see the module doc)."""
    store, prefix = store_for(out_url, storage_options)
    run = run_key(prefix, config.label)
    url = store.url_of(run)
    if store.read_only:
        raise ExtractionError("cannot write extraction outputs to a read-only store", path=url)
    store.check_root()  # a missing bucket or refused credentials: before any work
    folder = Path(tempfile.mkdtemp(prefix="tilestream-run-", dir=scratch_root(scratch)))
    try:
        with Lease.acquire(store, run, force=force_lease) as lease:
            mirror = RemoteMirror(store, run, folder / config.label, lease=lease)
            return _extract_held(
                mirror, tasks, config, url=url, storage_options=storage_options,
                executor=executor, workers=workers, threads=threads, overwrite=overwrite,
                to_images=to_images, progress=progress, scratch=scratch, t_start=t_start,
            )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _extract_held(
    mirror: RemoteMirror,
    tasks: list[SlideTask],
    config: ExtractConfig,
    *,
    url: str,
    storage_options: Mapping[str, Any] | None,
    executor: Executor | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    progress: ProgressCallback | None,
    scratch: str | os.PathLike[str] | None,
    t_start: float,
) -> ExtractionRun:
    """The run of :func:`extract_to_store`, once it holds the run folder's lease."""
    store, run_k, folder = mirror.store, mirror.run, mirror.folder
    states = read_remote_states(store, run_k)
    reasons = _staleness(store, run_k, states, config.hash())
    for name, state in states.items():
        mirror.put_state(name, state, current=reasons.get(name) is None)
    # the manifest is brought to the new config first, then config.json names it
    RunManifest(folder, config.hash()).rebuild()
    mirror.upload(MANIFEST_FILE)
    write_config(folder, config)
    mirror.upload(CONFIG_FILE)
    result = ExtractionRun(run_dir=folder, config=config, url=url)
    todo = _tasks_to_do(result, tasks, states, reasons, overwrite=overwrite)
    recorder = Recorder(
        result, len(tasks), todo, to_images=to_images, progress=progress,
        sync=functools.partial(_sync, mirror),
        published=functools.partial(mirror.upload, MANIFEST_FILE),
        lost=functools.partial(publish_failure, store, run_k),
    )  # fmt: skip
    target = RemoteRun(url=url, storage_options=storage_options,
                       scratch=None if scratch is None else os.fspath(scratch))  # fmt: skip
    job = functools.partial(run_remote_slide_task, target=target, config=config,
                            to_images=to_images)  # fmt: skip
    run_jobs(job, todo, recorder, executor, workers=workers, threads=threads)
    result.seconds = time.perf_counter() - t_start
    summary = write_report(folder, config)
    result.stale = dict(summary["stale"])
    mirror.upload(SUMMARY_FILE)
    mirror.upload(REPORT_FILE)
    write_config(folder, config, summary["tile_grid"]["tile_um"])
    mirror.upload(CONFIG_FILE)
    for name, reason in result.stale.items():
        log.warning("slide %s left out of the manifest: %s (outputs kept)", name, reason)
    return result
