"""One extraction run per run folder at a time.

Two files in the run folder, both locked with ``flock`` (released by the
kernel when their holder dies, however it dies):

``.lock``
    Held exclusively by the driver (the process that runs ``extract_slides``)
    for the whole run. It holds JSON naming the holder (host, pid, start time,
    command), so a second run is refused with a message naming the first.
    A lock file whose holder died (SIGKILL, power cut) is no longer locked:
    the next run takes it over and logs that it did.
``.lock.workers``
    Held *shared* by every slide task while it works (in pool workers, on a
    Dask cluster, or in the driver itself). A new driver, once it holds
    ``.lock``, waits for this one to be free: slide tasks of an earlier run
    whose driver was killed can never write beside the new run's.

On a file system without ``flock`` the run goes on unlocked, with a warning.
On a shared file system the lock works across hosts where ``flock`` does
(NFSv4, Lustre with ``flock`` mounts); elsewhere it only guards one host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tilestream.errors import ExtractionError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "WORKERS_LOCK_FILE", "describe_holder", "run_lock", "task_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
WORKERS_LOCK_FILE = ".lock.workers"
#: Seconds a new run waits for the slide tasks of a killed run to end.
SURVIVOR_WAIT = 30.0

_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _command() -> str:
    """This process's command line, without passwords in URLs (``tcp://user:pw@host``)."""
    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
    return re.sub(r"://[^/@\s]+@", "://***@", cmd)[:500]


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": _command(),
    }


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 12 on host h since 2026-01-01T10:00:00Z (tilestream extract ...)``."""
    if not holder:
        return "a run that did not say who it is"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    text += f" since {holder.get('started', '?')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    data = json.dumps(holder).encode("utf-8") + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _lock_pids(fd: int) -> list[int]:
    """The processes holding locks on the file open at ``fd`` (Linux; else empty)."""
    inode = os.fstat(fd).st_ino
    pids: set[int] = set()
    # "1: FLOCK  ADVISORY  READ 16948 fe:00:2146614 0 EOF" (waiters have "->" after "1:")
    held = re.compile(r"\d+:\s+\S+\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s")
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                m = held.match(line)
                if m is not None and int(m.group(2)) == inode:
                    pids.add(int(m.group(1)))
    except OSError:
        pass
    pids.discard(os.getpid())
    return sorted(pids)


def _wait_for_survivors(run_dir: Path, timeout: float) -> None:
    """Wait until no slide task (of a killed earlier run) holds ``.lock.workers``."""
    assert fcntl is not None
    fd = os.open(run_dir / WORKERS_LOCK_FILE, _FLAGS, 0o666)
    try:
        deadline = time.monotonic() + timeout
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                pids = _lock_pids(fd)
                who = f" (processes {', '.join(map(str, pids))})" if pids else ""
                if time.monotonic() >= deadline:
                    raise ExtractionError(
                        f"slide tasks of an earlier run are still writing into this folder{who}; "
                        "wait for them to end, or stop them, then run again",
                        path=run_dir,
                    ) from None
                if not warned:
                    log.warning(
                        "%s: waiting for slide tasks of an earlier run to end%s", run_dir, who
                    )
                    warned = True
                time.sleep(0.1)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(
    run_dir: str | os.PathLike[str], *, wait: float | None = None
) -> Iterator[dict[str, Any]]:
    """Hold ``run_dir`` for one run; yield the holder record written into ``.lock``.

    Parameters
    ----------
    run_dir
        An existing run folder.
    wait
        Seconds to wait for slide tasks of an earlier, killed run to end
        (default :data:`SURVIVOR_WAIT`).

    Raises
    ------
    ExtractionError
        When another run holds the folder (the message names it), or slide
        tasks of an earlier run still work in it after ``wait`` seconds.
    OSError
        When the lock file cannot be created or written (e.g. the disk is full).
    """
    run = Path(run_dir)
    fd = os.open(run / LOCK_FILE, _FLAGS, 0o666)
    try:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                raise ExtractionError(
                    "the folder is in use by another tilestream run: "
                    f"{describe_holder(_read_holder(fd))}; wait for it to finish (or stop it)",
                    path=run,
                ) from None
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                log.warning("%s: the file system cannot lock files; runs are not kept apart", run)
        previous = _read_holder(fd)
        if previous:
            log.warning(
                "%s: taking over the lock of a run that ended without releasing it: %s",
                run, describe_holder(previous),
            )  # fmt: skip
        if locked:
            _wait_for_survivors(run, SURVIVOR_WAIT if wait is None else wait)
        holder = _holder()
        _write_holder(fd, holder)
        try:
            yield holder
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # empty = released cleanly
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def task_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``run_dir``'s ``.lock.workers`` shared while one slide task works in it.

    Best effort: where the lock file cannot be opened or locked the task runs
    unlocked (it then fails, or not, on its own terms).
    """
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(Path(run_dir) / WORKERS_LOCK_FILE, _FLAGS, 0o666)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
