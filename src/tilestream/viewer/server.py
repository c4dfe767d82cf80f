"""The viewer's HTTP server: the standard library's ``ThreadingHTTPServer``, no framework.

Routes (``GET`` and ``HEAD``; slides are named by catalogue id, never by path):

=====================================  ==================================================
``/``, ``/slide.html``, ``/mosaic.html``  the pages (``static/``); ``/static/...`` assets
``/files/<path>``                      a current slide's preview image (nothing else)
``/dz/<id>.dzi``                       the Deep Zoom descriptor
``/dz/<id>_files/<level>/<c>_<r>.jpeg``  a Deep Zoom tile (cached, ``ETag``)
``/api/<name>?id=...``                 the dataset, a slide's metadata, images and data
                                       (:mod:`tilestream.viewer.api`)
=====================================  ==================================================

Who may ask is :mod:`tilestream.viewer.access`'s: on loopback (the default)
only requests whose ``Host`` is a loopback name; off loopback only requests
carrying the access token. Nothing the browser gets names an absolute path of
the server's disk. Files are served only from inside the served folder and the
static folder: ``..`` (plain or percent-encoded), absolute paths and symlinks
leading outside get 403; they are streamed, with ``Range``. Unknown slides,
tiles and locations get 404, bad parameters 400, both with a one-line JSON
error. Connections are bounded and slow requests time out
(:mod:`tilestream.viewer.httpd`). The library never prints (request logs go to
:mod:`logging`, without tokens).

Examples
--------
>>> import json, urllib.request
>>> from tilestream.extract import demo_slide_path
>>> with ViewerServer(demo_slide_path(), port=0) as server:
...     server.start()
...     with urllib.request.urlopen(server.url + "api/slides") as r:
...         [s["id"] for s in json.load(r)["slides"]]
['CMU-1-Small-Region']
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import threading
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from tilestream.errors import (
    RecordNotFoundError,
    SlideNotFoundError,
    StorageNotFoundError,
    TileStreamError,
)
from tilestream.viewer.access import TOKEN_PARAM, Access, public_text, redact_token
from tilestream.viewer.api import MOSAIC_MAX, api_reply, file_stamp, json_reply, version_etag
from tilestream.viewer.app import ViewerApp
from tilestream.viewer.catalog import Catalog
from tilestream.viewer.httpd import (
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    BoundedHTTPServer,
    DeadlineHandler,
)
from tilestream.viewer.httpio import (
    CHUNK,
    UNSATISFIABLE,
    HTTPError,
    parse_range,
    safe_join,
)
from tilestream.viewer.render import TileNotFound

__all__ = ["MOSAIC_MAX", "STATIC_DIR", "HTTPError", "ViewerApp", "ViewerServer", "safe_join"]

log = logging.getLogger(__name__)

#: The pages, scripts and OpenSeadragon shipped with the package.
STATIC_DIR = Path(__file__).resolve().parent / "static"

_PAGES = {"/": "index.html", "/index.html": "index.html", "/slide.html": "slide.html",
          "/mosaic.html": "mosaic.html"}  # fmt: skip


class _Handler(DeadlineHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tilestream-viewer"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm and the client's delayed ACK hold every keep-alive response ~40 ms
    disable_nagle_algorithm = True

    # -- plumbing -----------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), redact_token(format % args))

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _send(
        self,
        body: bytes,
        content_type: str,
        *,
        status: int = 200,
        cache: str = "no-cache",
        etag: str | None = None,
        head: bool = False,
    ) -> None:
        if etag is not None and status == 200 and self._not_modified(etag, cache):
            return
        self._head(status, content_type, len(body), cache=cache, etag=etag)
        if not head:
            self.wfile.write(body)

    def _not_modified(self, etag: str, cache: str) -> bool:
        # Answer 304 when the client holds this version.
        match = self.headers.get("If-None-Match")
        if match is None or etag not in (m.strip() for m in match.split(",")):
            return False
        self.send_response(HTTPStatus.NOT_MODIFIED)
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _head(
        self,
        status: int,
        content_type: str,
        length: int,
        *,
        cache: str,
        etag: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if etag is not None:
            self.send_header("ETag", etag)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self._answered = True

    def _json(self, value: Any, *, status: int = 200, head: bool = False) -> None:
        self._send(json_reply(value).body, "application/json", status=status, head=head)

    def _error(self, status: int, message: str, *, head: bool) -> None:
        # One line of JSON, without the server's paths. Once a response has begun
        # (a file being streamed) there is nothing left to say: the connection closes.
        if self._answered:
            self.close_connection = True
            return
        root = self.server.app.catalog.root
        self._json({"error": public_text(message, root=root)}, status=status, head=head)

    def _dispatch(self, *, head: bool) -> None:
        self._answered = False
        self.start_response()
        path = redact_token(self.path)
        try:
            if not self.server.access.host_allowed(self.headers.get("Host")):
                host = self.headers.get("Host")
                raise HTTPError(403, f"unexpected Host header {host!r}: use the printed URL")
            if self._admit():
                self._route(head)
        except HTTPError as exc:
            self._error(exc.status, exc.message, head=head)
        except (TileNotFound, RecordNotFoundError, SlideNotFoundError, StorageNotFoundError) as exc:
            self._error(404, str(exc), head=head)
        except TileStreamError as exc:
            log.warning("%s: %s", path, exc)
            self._error(500, str(exc), head=head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("internal error answering %s", path)
            self._error(500, "internal error (see the server log)", head=head)

    def _admit(self) -> bool:
        # Whether the request may be answered; a valid ?token= is answered with the
        # cookie and a redirect to the same URL without it (then False).
        access = self.server.access
        if access.token is None:
            return True
        url = urlsplit(self.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        given = [v for k, v in pairs if k == TOKEN_PARAM]
        if not given:
            if access.authorised(self.headers):
                return True
            raise HTTPError(403, "this viewer needs its access token: open the URL it printed")
        if not access.matches(given[0]):
            raise HTTPError(403, "wrong access token: open the URL the viewer printed")
        rest = urlencode([(k, v) for k, v in pairs if k != TOKEN_PARAM])
        location = "/" + url.path.lstrip("/") + (f"?{rest}" if rest else "")
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Set-Cookie", access.cookie())
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    # -- routes -------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        raw = url.path
        query = parse_qs(url.query)
        if raw in _PAGES:
            self._file(STATIC_DIR / _PAGES[raw], cache="no-cache", head=head)
            return
        if raw == "/favicon.ico":
            self._send(b"", "image/x-icon", status=204, cache="public, max-age=86400", head=True)
            return
        if raw.startswith("/static/"):
            path = safe_join(STATIC_DIR, unquote(raw[len("/static/") :]))
            self._file(path, cache="public, max-age=3600", head=head)
            return
        if raw.startswith("/files/"):
            root = app.catalog.root
            if root is None and app.catalog.label is not None:  # a run folder in a store
                body = app.store_file(unquote(raw[len("/files/") :]))
                self._send(body, "image/jpeg", head=head)
                return
            if root is None:
                raise HTTPError(404, "no folder is served")
            path = safe_join(root, unquote(raw[len("/files/") :]))
            if not app.serves_file(path):
                # only what the pages link: the previews of current slides (state files,
                # summaries and reports name absolute paths; stale outputs are not data)
                raise HTTPError(404, "not a file the viewer serves")
            self._file(path, cache="no-cache", head=head)
            return
        if raw.startswith("/dz/"):
            self._deepzoom(raw[len("/dz/") :], head)
            return
        if raw.startswith("/api/"):
            self._api(raw[len("/api/") :], query, head)
            return
        raise HTTPError(404, "not found")

    def _file(self, path: Path, *, cache: str, head: bool) -> None:
        # Streamed in chunks (never read whole), one Range honoured.
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/javascript":
            ctype += "; charset=utf-8"
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = version_etag(str(path), size, st.st_mtime_ns, st.st_ino)
            if self._not_modified(etag, cache):
                return
            span = parse_range(self.headers.get("Range"), size)
            if_range = self.headers.get("If-Range")
            if span is not None and if_range is not None and if_range.strip() != etag:
                span = None  # the client's copy is of another version: the whole file
            if span is UNSATISFIABLE:
                message = {"error": f"no byte of the {size}-byte file in the range asked"}
                body = json.dumps(message).encode()
                extra = {"Content-Range": f"bytes */{size}"}
                self._head(416, "application/json", len(body), cache="no-cache", extra=extra)
                if not head:
                    self.wfile.write(body)
                return
            start, stop = span if isinstance(span, tuple) else (0, size)
            extra = {"Accept-Ranges": "bytes"}
            if isinstance(span, tuple):
                extra["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            status = 206 if isinstance(span, tuple) else 200
            self._head(status, ctype, stop - start, cache=cache, etag=etag, extra=extra)
            if head:
                return
            f.seek(start)
            left = stop - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:  # the file shrank: the client sees a short body
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                left -= len(chunk)

    def _deepzoom(self, rest: str, head: bool) -> None:
        app = self.server.app
        if rest.endswith(".dzi") and "/" not in rest:
            entry = app.entry(unquote(rest[: -len(".dzi")]))
            body = app.renderer(entry).dzi().encode()
            self._send(body, "application/xml", head=head)
            return
        parts = rest.split("/")
        if len(parts) != 3 or not parts[0].endswith("_files"):
            raise HTTPError(404, "not a Deep Zoom tile")
        entry = app.entry(unquote(parts[0][: -len("_files")]))
        name, _, ext = parts[2].partition(".")
        col, _, row = name.partition("_")
        if ext not in ("jpeg", "jpg") or not all(_digits(t) for t in (parts[1], col, row)):
            raise HTTPError(404, f"no tile {parts[1]}/{parts[2]}")
        level, c, r = int(parts[1]), int(col), int(row)
        renderer = app.renderer(entry)
        stamp = entry.slide_version or file_stamp(entry.slide_path)
        etag = version_etag(str(entry.slide_path), stamp, level, c, r)
        if self.headers.get("If-None-Match") == etag:
            renderer.check(level, c, r)
            self._send(b"", "image/jpeg", cache="public, max-age=86400", etag=etag)
            return
        body = renderer.tile(level, c, r)
        self._send(body, "image/jpeg", cache="public, max-age=86400", etag=etag, head=head)

    def _api(self, name: str, query: dict[str, list[str]], head: bool) -> None:
        reply = api_reply(self.server.app, name, query)
        self._send(reply.body, reply.content_type, etag=reply.etag, head=head)


def _digits(text: str) -> bool:
    # ASCII digits only (str.isdigit() accepts "²", which int() refuses), not absurdly long
    return text.isascii() and text.isdigit() and len(text) <= 9


class _Server(BoundedHTTPServer):
    app: ViewerApp
    access: Access


class ViewerServer:
    """The viewer on ``host:port`` over a slide, a folder of slides or extraction outputs.

    Parameters
    ----------
    path
        A slide file, a folder of slides, an extraction run folder or a folder of them.
    host, port
        Where to listen (loopback by default; port 0 picks a free port).
    roi_dir
        A folder of ``<slide>.geojson``/``.json``/``.csv`` ROI files.
    token
        The access token requests must carry (see :mod:`tilestream.viewer.access`):
        ``None`` (default) a fresh random one off loopback and none on loopback,
        ``True`` a fresh one anyway, ``False`` none (off loopback: anyone who can
        reach the server sees everything it serves; logged as a warning), or a
        string of 16 to 256 URL-safe characters.
    request_timeout
        Seconds a request's head may take to arrive, an idle connection may stay
        open and a write may block.
    max_connections
        Connections answered at once; more get 503.
    storage_options
        Options of the store when ``path`` is a URL (``s3://bucket/slides/a.svs``,
        ``s3://bucket/out/256px_128um``): credentials, endpoint. They open the
        slides and TFRecords and never appear in a page, a reply, a log line or
        an error.

    Use :meth:`serve_forever` (blocks) or :meth:`start` (a background thread),
    then :meth:`close` (or a ``with`` block).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        roi_dir: str | os.PathLike[str] | None = None,
        token: str | bool | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        catalog = Catalog.from_path(path, roi_dir=roi_dir, storage_options=storage_options)
        self.app = ViewerApp(catalog)
        try:
            self._httpd = _Server(
                (host, port),
                _Handler,
                request_timeout=request_timeout,
                max_connections=max_connections,
            )
        except OSError as exc:
            raise TileStreamError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._httpd.app = self.app
        try:
            self._httpd.access = Access.for_server(self.address[0], self.address[1], token=token)
        except BaseException:
            self._httpd.server_close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str | None:
        """The access token requests must carry, or ``None``."""
        return self._httpd.access.token

    @property
    def open_url(self) -> str:
        """The URL to open in a browser: :attr:`url`, with ``?token=`` when one is needed."""
        token = self.token
        return self.url if token is None else f"{self.url}?{TOKEN_PARAM}={token}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually listened on."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The viewer's URL (ends with ``/``)."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Answer requests until :meth:`close` is called (from another thread) or interrupted."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Answer requests on a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name="tilestream-viewer", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop serving and release the slides."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self.app.close()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
