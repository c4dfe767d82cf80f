"""Worker processes that end when the process that started them dies.

A process pool's workers outlive a driver killed with SIGKILL (or the OOM
killer): they would go on extracting into the run folder while a rerun
starts. :func:`die_with_parent` is the pool initializer that prevents it:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker
  the moment its parent goes. The signal fires when the parent *thread* that
  started the worker exits; :class:`concurrent.futures.ProcessPoolExecutor`
  with the ``spawn`` context starts its workers from the thread that calls
  ``submit`` (and the manager thread replaces workers only while the pool
  runs), so the thread that creates the pool must hold it until ``shutdown``
  (``extract_slides`` does);
* everywhere, a watchdog thread that ends the worker within
  :data:`WATCH_INTERVAL` seconds once its parent process is gone (macOS, or
  a Linux kernel that refused the ``prctl``), and :func:`orphaned` for a
  check between tasks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["WATCH_INTERVAL", "die_with_parent", "orphaned"]

#: Seconds between two checks of the watchdog thread.
WATCH_INTERVAL = 0.5
#: The exit status of a worker that ended because its parent died.
ORPHAN_EXIT = 70

_PR_SET_PDEATHSIG = 1
_parent: int | None = None


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return False


def orphaned() -> bool:
    """Whether this is a worker whose parent process has died."""
    return _parent is not None and os.getppid() != _parent


def _watch(interval: float) -> None:
    while True:
        time.sleep(interval)
        if orphaned():
            os._exit(ORPHAN_EXIT)


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker process when process ``parent_pid`` dies.

    Call it as ``ProcessPoolExecutor(initializer=die_with_parent,
    initargs=(os.getpid(),))``.
    """
    global _parent
    _parent = parent_pid
    _set_parent_death_signal()
    if orphaned():  # the parent died before the prctl took effect
        os._exit(ORPHAN_EXIT)
    threading.Thread(
        target=_watch, args=(WATCH_INTERVAL,), name="tilestream-parent-watch", daemon=True
    ).start()
