"""The object store of ``bench_remote.py``: SeaweedFS on loopback behind latency proxies.

:class:`RemoteStore` starts a real SeaweedFS S3 gateway
(:class:`tilestream.testing.seaweedfs.SeaweedServer`) in a scratch folder,
creates one bucket, and puts one :class:`tilestream.testing.faultproxy.FaultProxy`
per latency in front of its S3 port. ``FaultProxy`` waits ``latency`` seconds
before it forwards each request (once per HTTP request/response turn, not per
chunk of a body), so ``latency=0.02`` adds 20 ms to every round trip; new TCP
connections are not delayed (pooled connections make that rare).

At 0 ms a contender talks to the store directly: the proxy is Python on the
same two cores, and would tax every remote contender with its CPU. The
requests and bytes of a 0 ms contender are counted in one more, untimed run
through a 0 ms proxy, whoever the client is (tilestream, tiffslide over s3fs,
a download); the timed runs at 20 ms are counted as they run. Objects are
uploaded directly with tilestream's own store (multipart).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["BUCKET", "RemoteStore", "Traffic"]

#: The benchmark's bucket.
BUCKET = "bench-remote"

#: The counters of one run: requests, bytes from the store (down) and to it (up).
Traffic = dict[str, int]


def _chunks(path: Path, size: int = 8 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


class RemoteStore:
    """SeaweedFS with one bucket and a latency proxy per latency (a context manager).

    Parameters
    ----------
    latencies_ms
        The round-trip latencies to add, one proxy each (``0`` included for counting).
    workdir
        Where SeaweedFS keeps its data (a temporary folder by default).
    """

    def __init__(self, latencies_ms: tuple[int, ...] = (0, 20), workdir: Path | None = None):
        self.latencies_ms = latencies_ms
        self._workdir = workdir
        self._stack = contextlib.ExitStack()
        self.server: Any = None
        self.proxies: dict[int, Any] = {}

    def __enter__(self) -> RemoteStore:
        from tilestream.testing.faultproxy import FaultProxy
        from tilestream.testing.seaweedfs import SeaweedServer

        try:
            folder = self._workdir or Path(
                self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-remote-"))
            )
            self.server = self._stack.enter_context(SeaweedServer(folder))
            self._make_bucket()
            for ms in sorted({0, *self.latencies_ms}):
                proxy = FaultProxy.for_url(self.server.endpoint_url, latency=ms / 1000)
                self.proxies[ms] = self._stack.enter_context(proxy)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _make_bucket(self, attempts: int = 20) -> None:
        """Create the bucket; the gateway can answer before its filer accepts buckets."""
        from tilestream.testing.seaweedfs import SeaweedError

        for attempt in range(attempts):
            try:
                self.server.make_bucket(BUCKET)
                return
            except SeaweedError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def url(self, key: str) -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{BUCKET}/{key}"

    def options(self, ms: int, *, counted: bool = False) -> dict[str, Any]:
        """s3fs storage options: through the proxy of ``ms``, or straight to the store at 0 ms.

        ``counted`` goes through the 0 ms proxy at 0 ms too (to count the requests).
        """
        options = dict(self.server.storage_options)
        if ms or counted:
            options["endpoint_url"] = self.proxies[ms].url
        return options

    def upload(self, path: Path, key: str) -> int:
        """Upload one local file (multipart, directly); returns its size."""
        from tilestream.storage import store_for

        store, k = store_for(self.url(key), self.server.storage_options)
        store.write_atomic(k, _chunks(path))
        return int(path.stat().st_size)

    def reset(self, ms: int) -> None:
        """Start counting the traffic through the proxy of ``ms`` again."""
        self.proxies[ms].reset_counters()

    def traffic(self, ms: int) -> Traffic:
        """Requests and bytes through the proxy of ``ms`` since its last :meth:`reset`."""
        c = self.proxies[ms].counters
        return {
            "requests": int(c.requests),
            "connections": int(c.connections),
            "bytes_down": int(c.bytes_down),
            "bytes_up": int(c.bytes_up),
        }

    def server_pid(self) -> int:
        """SeaweedFS's process id."""
        pid = self.server.pid
        if pid is None:
            raise RuntimeError("SeaweedFS is not running")
        return int(pid)

    def server_cpu(self) -> float:
        """CPU seconds SeaweedFS has used so far (its process and threads)."""
        import psutil

        if self.server.pid is None:
            return 0.0
        times = psutil.Process(self.server.pid).cpu_times()
        return float(times.user + times.system)
