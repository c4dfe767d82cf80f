"""The viewer's HTTP server class: a thread per connection, bounded, with deadlines.

``ThreadingHTTPServer`` alone gives every connection a thread for as long as
the client likes: a few hundred half-sent requests hold as many threads and
file descriptors, and the viewer stops answering. Here:

- at most ``max_connections`` connections are answered at once; one more gets
  an immediate ``503`` (one-line JSON, ``Retry-After: 1``) and is closed;
- a request's line and headers must arrive within ``request_timeout`` seconds
  in all (however slowly they trickle in); an idle keep-alive connection is
  closed after as long; each write of a response times out after as long too.

Examples
--------
>>> server = BoundedHTTPServer(("127.0.0.1", 0), DeadlineHandler, max_connections=4)
>>> server.max_connections, server.request_timeout
(4, 30.0)
>>> server.server_close()
"""

from __future__ import annotations

import io
import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "BoundedHTTPServer", "DeadlineHandler"]

log = logging.getLogger(__name__)

#: Seconds a request's head may take to arrive (and an idle connection may stay open).
REQUEST_TIMEOUT = 30.0

#: Connections answered at once; more get 503.
MAX_CONNECTIONS = 64

#: Seconds between two warnings about connections turned away.
REFUSAL_LOG_INTERVAL = 10.0


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket, each read waiting only until the handler's deadline."""

    def __init__(self, sock: socket.socket, handler: DeadlineHandler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class DeadlineHandler(BaseHTTPRequestHandler):
    """A request handler whose request heads must arrive before a deadline."""

    server: BoundedHTTPServer
    #: ``time.monotonic()`` by which the current request's head must have arrived.
    deadline = float("inf")

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader: replaced by one that keeps the deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self.server.request_timeout
        super().handle_one_request()

    def start_response(self) -> None:
        """Give writes of the response the server's timeout (reads had the deadline's)."""
        self.connection.settimeout(self.server.request_timeout)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` answering at most ``max_connections`` connections at once."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[DeadlineHandler],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not request_timeout > 0 or max_connections < 1:
            raise ValueError("request_timeout must be > 0 and max_connections >= 1")
        self.request_timeout = float(request_timeout)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refused = 0
        self._refusal_logged = -math.inf
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        # On the accepting thread: never block. The request is drained first, as a
        # close with unread data resets the connection and loses the answer.
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:  # not a line per connection
            log.warning("%s connections open: turned %s away (503) since the last warning",
                        self.max_connections, self._refused)  # fmt: skip
            self._refused, self._refusal_logged = 0, now
        body = json.dumps({"error": "too many connections: try again"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        try:
            request.setblocking(False)
            try:
                for _ in range(16):
                    if not request.recv(65536):
                        break
            except (BlockingIOError, InterruptedError):
                pass
            request.send(head.encode() + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)
