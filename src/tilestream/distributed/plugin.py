"""The Dask worker plugin giving each worker a scratch folder of its own (needs ``distributed``).

Slide tasks publishing to object storage extract into local scratch first
(:mod:`tilestream.extract.publish`). On a cluster with no shared filesystem
each worker must use a folder of its own machine: this plugin sets
``TILESTREAM_SCRATCH`` in each worker process to a folder inside the worker's
``local_directory`` (which Dask removes with the worker), unless the
variable is set already. Registered with the client, it also runs on workers
that join later (a worker restarted after it was lost).
"""

from __future__ import annotations

import os
from typing import Any

from distributed import WorkerPlugin
from tilestream.extract.publish import SCRATCH_ENV

__all__ = ["ScratchPlugin"]


class ScratchPlugin(WorkerPlugin):
    """Point ``TILESTREAM_SCRATCH`` at the worker's own ``local_directory``."""

    name = "tilestream-scratch"

    def setup(self, worker: Any) -> None:
        """Called by Dask on each worker as it starts (or when the plugin is registered)."""
        folder = os.path.join(worker.local_directory, "tilestream-scratch")
        os.makedirs(folder, exist_ok=True)
        os.environ.setdefault(SCRATCH_ENV, folder)
