"""One HTTP request to a test server, answered as (status, lower-cased headers, body)."""

from __future__ import annotations

import http.client
from typing import Any


def request(
    server: Any,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send ``method path`` to ``server.address`` (connecting to ``host`` if given)."""
    address, port = server.address
    conn = http.client.HTTPConnection(host or address, port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
