"""A Dask distributed executor for extraction: a local cluster or a running scheduler.

Two deployments:

- **a shared filesystem** (HPC): every worker sees the slides and the output
  folder at the same paths. One run per run folder holds with Dask too: the
  client process (the one that calls ``extract_slides``) holds the folder's
  ``.lock``, and every slide task holds ``.lock.workers`` shared while it
  works on a worker, so a rerun waits for the tasks of a stopped client before
  it starts (see :mod:`tilestream._util.lock`).
- **object storage only** (Kubernetes, the cloud): slides are URLs and the
  output is a URL (``s3://bucket/prefix``). Each task extracts into the scratch
  folder of the worker it runs on (``TILESTREAM_SCRATCH``, set by
  :class:`~tilestream.distributed.plugin.ScratchPlugin` to the worker's own
  ``local_directory``) and uploads its outputs; nothing needs the same local
  paths anywhere, and the client never sees a worker's files. The client
  holds the run folder's lease (:mod:`tilestream.extract.lease`). A store that
  stays unavailable raises in the task, and Dask retries it (``retries``); a
  task whose worker dies is run again on another worker.

The workers' lifetime is the cluster's: Dask cancels a closed client's
pending tasks, not the ones running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from tilestream._util.optional import require
from tilestream.errors import ConfigError

__all__ = ["DaskRun", "dask_executor", "parse_cluster_spec"]

log = logging.getLogger(__name__)

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


@dataclass
class DaskRun:
    """A live connection: the executor to pass to ``extract_slides`` and where to watch it."""

    executor: Executor
    client: Any
    dashboard_link: str | None
    workers: int


def parse_cluster_spec(spec: str) -> int:
    """Number of workers in a ``local:N`` cluster spec.

    >>> parse_cluster_spec("local:4")
    4
    """
    kind, _, count = spec.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"cluster spec must look like 'local:N' with N >= 1, not {spec!r}")
    return int(count)


@contextlib.contextmanager
def dask_executor(
    *,
    cluster: str | None = None,
    scheduler: str | None = None,
    retries: int = 2,
    dashboard: bool = True,
    memory_limit: str | None = "auto",
) -> Iterator[DaskRun]:
    """Connect to (or start) a Dask cluster and yield an executor for slide tasks.

    Parameters
    ----------
    cluster
        ``"local:N"`` starts a ``LocalCluster`` of N single-threaded worker processes.
    scheduler
        Address of a running scheduler (``tcp://host:8786``); defaults to the
        ``DASK_SCHEDULER_ADDRESS`` environment variable. Deploy the scheduler
        and workers with dask-jobqueue (SLURM, PBS), dask-kubernetes, or by hand
        (``dask scheduler`` and ``dask worker tcp://host:8786`` on each node).
        With a shared filesystem, every worker must see the slides and the
        output folder at the same paths; with URLs for both, nothing is shared.
    retries
        How often a task that raised (a transient error, or a lost worker) is
        retried before it counts as failed.
    dashboard
        Serve the dashboard of a local cluster (when ``bokeh`` is installed).
    memory_limit
        Per-worker memory limit of a local cluster.

    Yields
    ------
    DaskRun
        The executor, the client and the dashboard link (``None`` when not served).
    """
    distributed = require("distributed", extra="dask", purpose="running extraction on Dask")
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if cluster and scheduler:
        raise ConfigError("give either a local cluster or a scheduler address, not both")
    if not cluster and not scheduler:
        raise ConfigError(
            f"no Dask cluster: pass cluster='local:N' or a scheduler address (or set {SCHEDULER_ENV})"
        )
    with contextlib.ExitStack() as stack:
        if cluster:
            n = parse_cluster_spec(cluster)
            serve = dashboard and importlib.util.find_spec("bokeh") is not None
            local = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0" if serve else None,
                    memory_limit=memory_limit,
                )
            )
            client = stack.enter_context(distributed.Client(local))
            link = local.dashboard_link if serve else None
        else:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="30s"))
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
            link = getattr(client, "dashboard_link", None)
        from tilestream.distributed.plugin import ScratchPlugin

        client.register_plugin(ScratchPlugin())
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("Dask cluster with %d workers; dashboard: %s", workers, link or "not served")
        executor = client.get_executor(retries=retries, pure=False)
        yield DaskRun(executor=executor, client=client, dashboard_link=link, workers=workers)
