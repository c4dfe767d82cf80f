"""Test servers run as child processes: free loopback ports, a logged start, a stop that kills.

:class:`ServerProcess` is the part :class:`~tilestream.testing.orthanc.OrthancServer`
and :class:`~tilestream.testing.seaweedfs.SeaweedServer` share: the process's
output goes to a log file in the server's folder, :meth:`ServerProcess._wait_ready`
polls the subclass's readiness probe until it answers (or the process exits,
or the start timeout passes), and :meth:`ServerProcess.stop` terminates, waits,
then kills and waits again. A subclass writes its configuration and calls
:meth:`ServerProcess._launch` in its ``start``.
"""

from __future__ import annotations

import abc
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ServerProcess", "free_port"]


def free_port(*, avoid: Iterable[int] = (), error: type[Exception] = RuntimeError) -> int:
    """A TCP port free on ``127.0.0.1`` right now (and not in ``avoid``).

    Examples
    --------
    >>> 0 < free_port() < 65536
    True
    """
    avoid = set(avoid)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise error("no free loopback port found")


class ServerProcess(abc.ABC):
    """A server started as a child process, with its log in ``workdir``.

    Subclasses set the class attributes, implement :meth:`start` (configure,
    then :meth:`_launch` and :meth:`_wait_ready`) and :meth:`_ready`.
    """

    #: The executable's name in messages ("exited at start").
    process_name: ClassVar[str]
    #: The server's name in messages ("did not answer").
    server_name: ClassVar[str]
    #: The log file's name in ``workdir``.
    log_name: ClassVar[str]
    #: The exception raised when the server cannot be started.
    error: ClassVar[type[Exception]] = RuntimeError
    #: Seconds :meth:`stop` waits after terminating, by default.
    stop_timeout: ClassVar[float] = 20.0
    #: Seconds :meth:`stop` waits after killing.
    kill_timeout: ClassVar[float] = 20.0
    #: Seconds between readiness probes.
    poll_interval: ClassVar[float] = 0.1

    def __init__(self, workdir: Path, *, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs, else ``None``."""
        return self._process.pid if self.running and self._process is not None else None

    @abc.abstractmethod
    def start(self) -> Self:
        """Configure and start the server, and wait until it answers."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the server answers (one probe; never raises for a server still starting)."""

    def _launch(self, command: list[str]) -> None:
        """Start ``command`` with its output appended to the log file."""
        log = (self.workdir / self.log_name).open("ab")
        try:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def _wait_ready(self) -> None:
        """Poll :meth:`_ready` until it is true; stop and raise on exit or timeout."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                log = self.workdir / self.log_name
                raise self.error(f"{self.process_name} exited at start; see {log}")
            if self._ready():
                return
            time.sleep(self.poll_interval)
        self.stop()
        raise self.error(f"{self.server_name} did not answer within {self.start_timeout:.0f} s")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server: terminate, wait up to ``timeout``, then kill, and wait."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.kill_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
