"""A small threaded TCP proxy that injects network faults in front of an HTTP server.

:class:`FaultProxy` listens on a free loopback port and forwards each
connection to the upstream server, byte for byte, with switches the tests
turn on and off while it runs:

- ``latency``: seconds added to every round trip (one wait before each request
  is forwarded);
- :meth:`FaultProxy.reset_next`: the next ``n`` responses are cut in the middle
  and their connections reset (TCP RST);
- :meth:`FaultProxy.fail_next`: the next ``n`` requests are answered by the
  proxy itself with a minimal HTTP error (503 by default, optionally with an
  S3 ``SlowDown`` body) and the connection is closed;
- counters: connections, requests, bytes each way, resets and failures.

A "request" is the first bytes the client sends after the previous response
began (HTTP/1.1 without pipelining, as botocore and aiohttp speak it).

Examples
--------
>>> with FaultProxy("127.0.0.1", 9) as proxy:  # doctest: +SKIP
...     proxy.latency = 0.02
...     proxy.fail_next(2)
...     proxy.url_for("http://127.0.0.1:9/bucket").startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from types import TracebackType

__all__ = ["SLOW_DOWN", "FaultProxy", "ProxyCounters"]

#: An S3 ``SlowDown`` error body, for :meth:`FaultProxy.fail_next` (with status 503).
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}
_CHUNK = 65536


@dataclass
class ProxyCounters:
    """What went through the proxy since it started (or :meth:`FaultProxy.reset_counters`)."""

    connections: int = 0
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    failures: int = 0


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` in front of ``host:port`` (see the module's documentation).

    Parameters
    ----------
    host, port
        The upstream server.
    latency
        Seconds added to each round trip (changeable while running).
    """

    def __init__(self, host: str, port: int, *, latency: float = 0.0) -> None:
        self.upstream = (host, port)
        self.latency = latency
        self.counters = ProxyCounters()
        self.port = 0
        self._lock = threading.Lock()
        self._resets = 0
        self._failures: list[bytes] = []
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    @classmethod
    def for_url(cls, url: str, *, latency: float = 0.0) -> FaultProxy:
        """A proxy in front of the server of ``url`` (``http://host:port/...``)."""
        parts = urllib.parse.urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, latency=latency)

    def __repr__(self) -> str:
        return f"FaultProxy(127.0.0.1:{self.port} -> {self.upstream[0]}:{self.upstream[1]})"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the proxy's address."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    # -- switches ----------------------------------------------------------------------
    def reset_next(self, n: int = 1) -> None:
        """Cut the next ``n`` responses midway and reset their connections."""
        with self._lock:
            self._resets += n

    def fail_next(self, n: int = 1, *, status: int = 503, body: bytes = b"") -> None:
        """Answer the next ``n`` requests with ``status`` (and ``body``), then close."""
        reason = _REASONS.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: application/xml\r\nConnection: close\r\n\r\n"
        ).encode()
        with self._lock:
            self._failures.extend([head + body] * n)

    def clear(self) -> None:
        """Cancel pending resets and failures, and the latency."""
        with self._lock:
            self._resets = 0
            self._failures.clear()
        self.latency = 0.0

    def reset_counters(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.counters = ProxyCounters()

    def _count(self, **fields: int) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self.counters, name, getattr(self.counters, name) + value)

    def _take_reset(self) -> bool:
        with self._lock:
            if self._resets <= 0:
                return False
            self._resets -= 1
            self.counters.resets += 1
            return True

    def _take_failure(self) -> bytes | None:
        with self._lock:
            if not self._failures:
                return None
            self.counters.failures += 1
            return self._failures.pop(0)

    # -- lifetime ----------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen on a free loopback port and start accepting connections."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the threads."""
        self._stopped.set()
        if self._listener is not None:
            _close(self._listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            self._count(connections=1)
            _Link(self, client, upstream).start()


class _Link:
    """One proxied connection: two pumps and the state of its request/response turns."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.new_request = True
        self.new_response = False

    def start(self) -> None:
        self.proxy._spawn(self._pump_up)
        self.proxy._spawn(self._pump_down)

    def _close(self, *, reset: bool = False) -> None:
        if reset:  # linger 0: closing sends RST; SHUT_RD wakes the other pump first
            with contextlib.suppress(OSError):
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _close(self.client)
        _close(self.upstream)
        with self.proxy._lock:
            self.proxy._sockets.difference_update((self.client, self.upstream))

    def _pump_up(self) -> None:
        try:
            while True:
                data = self.client.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        self.upstream.shutdown(socket.SHUT_WR)
                    return
                if self.new_request:
                    self.new_request = False
                    self.proxy._count(requests=1)
                    answer = self.proxy._take_failure()
                    if answer is not None:
                        if data.startswith(b"HEAD "):  # a HEAD response has no body
                            answer = answer[: answer.index(b"\r\n\r\n") + 4]
                        self.client.sendall(answer)
                        self._close()
                        return
                    if self.proxy.latency > 0:
                        time.sleep(self.proxy.latency)
                    self.new_response = True
                self.proxy._count(bytes_up=len(data))  # counted before the peer can see them
                self.upstream.sendall(data)
        except OSError:
            self._close()

    def _pump_down(self) -> None:
        try:
            while True:
                data = self.upstream.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        self.client.shutdown(socket.SHUT_WR)
                    return
                if self.new_response:
                    self.new_response = False
                    if self.proxy._take_reset():
                        half = data[: max(1, len(data) // 2)]
                        self.proxy._count(bytes_down=len(half))
                        self.client.sendall(half)
                        self._close(reset=True)
                        return
                self.new_request = True
                self.proxy._count(bytes_down=len(data))
                self.client.sendall(data)
        except OSError:
            self._close()


def _close(sock: socket.socket) -> None:
    """Close ``sock``, waking a thread blocked in ``recv`` on it (``close`` alone does not)."""
    with contextlib.suppress(OSError):
        linger = sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
        reset = struct.unpack("ii", linger)[0] == 1
        sock.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
