"""Ranged GETs of S3 objects as presigned URLs over a plain HTTP connection pool.

A GET through s3fs and aiobotocore costs the client about a millisecond and a
half of CPU before a byte moves (request signing, event hooks, response
parsing on an event loop in another thread), and more per megabyte than a
plain socket read. Reading a slide's tiles or a TFRecord's records is nothing
but GETs of a few objects, so :class:`DirectGet` signs each object's GET once
(a presigned URL from s3fs's own client, so credentials, endpoint, region and
addressing come from the same place) and sends the ranged GETs over a
``urllib3`` pool. A URL is re-signed before it expires, and once more when the
store refuses it (rotated or expired session credentials).

Only plain reads take this path (:func:`direct_get_for`): requester-pays
buckets, extra request parameters (SSE-C keys), explicit proxies and
environment proxies that apply to the endpoint stay on s3fs, as does every
request when ``TILESTREAM_S3_DIRECT=0``. Failures are raised as exceptions
:func:`~tilestream.storage.classify.classify` understands, and never carry
the signed URL; ``urllib3``'s debug lines show it without its query string.
(botocore's own debug logging shows the signatures of every request it
signs, this one included, as it always does.)
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["DirectGet", "HTTPStatusError", "RangeIgnoredError", "direct_get_for"]

#: Seconds a presigned URL is valid.
EXPIRES = 3600
#: The part of :data:`EXPIRES` a URL is used for before it is signed again.
REFRESH = 0.75
#: Keys whose presigned URLs are kept (least recently signed are dropped first).
MAX_URLS = 4096
#: The most bytes of an error response that are read (for its code and message).
MAX_ERROR_BODY = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,200})</Message>")


class _HideSignedQueries(logging.Filter):
    """Drops the query string of presigned URLs from ``urllib3``'s debug lines (a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "Signature=" in a for a in args):
            record.args = tuple(
                a.split("?", 1)[0] + "?<signed>" if isinstance(a, str) and "Signature=" in a else a
                for a in args
            )
        return True


def _hide_signed_queries() -> None:
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _HideSignedQueries) for f in pool_log.filters):
        pool_log.addFilter(_HideSignedQueries())


class HTTPStatusError(Exception):
    """An error status from the store, shaped like botocore's ``ClientError.response``."""

    def __init__(self, status: int, code: str | None, message: str | None) -> None:
        super().__init__(f"HTTP {status}" + (f" {code}" if code else ""))
        self.status = status
        self.response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }


class RangeIgnoredError(Exception):
    """The server answered a ranged GET with more than the range."""


class DirectConnectionError(ConnectionError):
    """A connection failed or broke mid-response (the message is the library's error type)."""


class DirectTimeoutError(TimeoutError):
    """A connection or read timed out."""


def _enabled() -> bool:
    return os.environ.get("TILESTREAM_S3_DIRECT", "1").strip().lower() not in ("0", "false", "no")


def direct_get_for(fs: Any) -> DirectGet | None:
    """A :class:`DirectGet` for an ``s3fs`` filesystem whose reads may bypass it, else ``None``."""
    if type(fs).__name__ != "S3FileSystem" or not _enabled():
        return None
    try:
        import urllib3  # noqa: F401
    except ImportError:  # pragma: no cover - botocore depends on it
        return None
    if getattr(fs, "requester_pays", False) or getattr(fs, "s3_additional_kwargs", None):
        return None
    config = getattr(fs, "config_kwargs", None) or {}
    if config.get("proxies"):
        return None
    return DirectGet(fs)


def _timeouts(fs: Any) -> tuple[float, float]:
    config = getattr(fs, "config_kwargs", None) or {}
    connect = config.get("connect_timeout") or getattr(fs, "connect_timeout", None) or 60.0
    read = config.get("read_timeout") or getattr(fs, "read_timeout", None) or 60.0
    return float(connect), float(read)


def _verify(fs: Any) -> bool | str:
    verify = (getattr(fs, "client_kwargs", None) or {}).get("verify", None)
    if verify is None:
        verify = os.environ.get("AWS_CA_BUNDLE") or True
    return verify


def _proxied(url: str) -> bool:
    """Whether an environment proxy applies to ``url`` (botocore would use it)."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class DirectGet:
    """Presigned ranged GETs of one s3fs filesystem's objects (thread-safe, fork-safe).

    Parameters
    ----------
    fs
        The ``s3fs.S3FileSystem`` that signs the URLs (its credentials, endpoint and region).
    max_connections
        Connections kept open per host.
    """

    def __init__(self, fs: Any, *, max_connections: int = 16) -> None:
        self.max_connections = max_connections
        self._timeouts = _timeouts(fs)
        self._verify = _verify(fs)
        self._lock = threading.Lock()
        self._urls: dict[str, tuple[str, float]] = {}
        self._pool: Any = None
        self._pid = os.getpid()
        #: ``False`` once an environment proxy is found to apply: s3fs reads everything.
        self.usable = True

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pool=None, _urls={}, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import urllib3

        _hide_signed_queries()
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                # a forked child never shares its parent's sockets: a new pool, new connections;
                # the URLs the parent signed serve it too (no client, no session to make)
                self._pid = os.getpid()
                connect, read = self._timeouts
                kwargs: dict[str, Any] = {}
                if self._verify is False:
                    kwargs["cert_reqs"] = "CERT_NONE"
                else:
                    from botocore.httpsession import get_cert_path

                    kwargs["ca_certs"] = get_cert_path(self._verify)
                self._pool = urllib3.PoolManager(
                    maxsize=self.max_connections,
                    block=False,
                    retries=False,
                    timeout=urllib3.Timeout(connect=connect, read=read),
                    **kwargs,
                )
            return self._pool

    def _url(self, fs: Any, path: str, *, fresh: bool = False) -> str:
        now = time.monotonic()
        with self._lock:
            found = self._urls.get(path)
        if found is not None and not fresh and found[1] > now:
            return found[0]
        url = str(fs.url(path, expires=EXPIRES))
        if _proxied(url):
            self.usable = False
        with self._lock:
            if len(self._urls) >= MAX_URLS:
                self._urls.pop(next(iter(self._urls)))
            self._urls[path] = (url, now + EXPIRES * REFRESH)
        return url

    def get(
        self, fs: Any, path: str, offset: int | None = None, size: int | None = None
    ) -> bytes | None:
        """The object at ``path`` (``bucket/key``), or ``size`` bytes of it from ``offset``.

        ``None`` when the request must go through s3fs after all (an environment
        proxy applies to the endpoint; :attr:`usable` is then ``False``). A 416
        (a range past the end) is an :class:`HTTPStatusError` with status 416.
        """
        pool = self._http()
        url = self._url(fs, path)
        if not self.usable:
            return None
        try:
            return self._get(pool, url, offset, size)
        except HTTPStatusError as exc:
            if exc.status != 403:
                raise
        # signed with credentials that have since expired or rotated: sign once more
        return self._get(pool, self._url(fs, path, fresh=True), offset, size)

    def _get(self, pool: Any, url: str, offset: int | None, size: int | None) -> bytes:
        import urllib3

        headers = {}
        if offset is not None and size is not None:
            headers["Range"] = f"bytes={offset}-{offset + size - 1}"
        try:
            response = pool.request("GET", url, headers=headers, preload_content=False)
            try:
                return self._body(response, offset, size)
            finally:
                response.release_conn()
        except urllib3.exceptions.TimeoutError as exc:
            raise DirectTimeoutError(type(exc).__name__) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DirectConnectionError(type(exc).__name__) from None

    @staticmethod
    def _body(response: Any, offset: int | None, size: int | None) -> bytes:
        status = int(response.status)
        if status >= 300:
            body = response.read(MAX_ERROR_BODY)
            response.close()  # what is left of a long error body is not read: a new connection
            code, message = _CODE.search(body), _MESSAGE.search(body)
            raise HTTPStatusError(
                status,
                code.group(1).decode("utf-8", "replace") if code else None,
                message.group(1).decode("utf-8", "replace") if message else None,
            )
        if status == 200 and size is not None:
            length = response.headers.get("Content-Length")
            if offset or (length is not None and int(length) > size):
                response.close()
                raise RangeIgnoredError("the server ignored the byte range requested")
        return bytes(response.read())
