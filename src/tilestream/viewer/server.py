"""The viewer's HTTP server: the standard library's ``ThreadingHTTPServer``, no framework.

Routes (``GET`` and ``HEAD``; slides are named by catalogue id, never by path):

=====================================  ==================================================
``/``, ``/slide.html``, ``/mosaic.html``  the pages (``static/``); ``/static/...`` assets
``/files/<path>``                      a file under the served folder (previews, reports)
``/dz/<id>.dzi``                       the Deep Zoom descriptor
``/dz/<id>_files/<level>/<c>_<r>.jpeg``  a Deep Zoom tile (cached, ``ETag``)
``/api/slides``                        the dataset: slides, counts, status, failures
``/api/slide?id=``                     metadata: properties, levels, mpp, associated images
``/api/thumbnail?id=``                 a thumbnail (JPEG)
``/api/associated?id=&name=``          an associated image (label, macro...) as JPEG
``/api/grid?id=``                      kept and rejected tiles
``/api/tile_at?id=&x=&y=``             the tile under a level-0 point, with its values
``/api/record?id=&x=&y=``              the stored tile at a location, from the TFRecord
``/api/mosaic?id=&n=&seed=``           a sample of stored tile locations
``/api/rois?id=``                      ROI polygons
``/api/tissue.png?id=``                the tissue mask's outline (transparent PNG)
=====================================  ==================================================

Bound to loopback (the default), the server answers only requests whose
``Host`` is a loopback name (no DNS rebinding from other web pages). Files are
served only from inside the served folder and the static folder:
``..`` (plain or percent-encoded), absolute paths and symlinks leading outside
get 403. Unknown slides, tiles and locations get 404 with a one-line JSON
error; the library never prints (request logs go to :mod:`logging`).

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

import hashlib
import io
import ipaddress
import json
import logging
import mimetypes
import os
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from PIL import Image

from tilestream.errors import RecordNotFoundError, SlideNotFoundError, TileStreamError
from tilestream.slide import Slide
from tilestream.viewer.catalog import Catalog, SlideEntry
from tilestream.viewer.data import SlideData, rois_json, tissue_outline_png
from tilestream.viewer.pool import SlidePool
from tilestream.viewer.render import BytesLRU, TileNotFound, TileRenderer

__all__ = ["STATIC_DIR", "ViewerApp", "ViewerServer", "safe_join"]

log = logging.getLogger(__name__)

#: The pages, scripts and OpenSeadragon shipped with the package.
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Slides keeping open handles, level images and TFRecord maps at once.
OPEN_SLIDES = 8

#: Budget of the encoded Deep Zoom tile cache shared by all slides.
TILE_CACHE_BYTES = 128 * 1024 * 1024

_PAGES = {"/": "index.html", "/index.html": "index.html", "/slide.html": "slide.html",
          "/mosaic.html": "mosaic.html"}  # fmt: skip


class HTTPError(Exception):
    """An error answered with ``status`` and a one-line JSON message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def safe_join(base: Path, relative: str) -> Path:
    """``base / relative`` if it stays inside ``base`` once symlinks are resolved.

    Raises
    ------
    HTTPError
        403 for ``..``, absolute paths, backslashes, NUL bytes or a resolved path outside
        ``base``; 404 when there is no such file.

    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> _ = (base / "a.txt").write_text("x")
    >>> safe_join(base, "a.txt").name
    'a.txt'
    >>> safe_join(base, "../etc/passwd")
    Traceback (most recent call last):
    ...
    tilestream.viewer.server.HTTPError: path outside the served folder
    """
    parts = relative.split("/")
    if (
        "\x00" in relative
        or "\\" in relative
        or relative.startswith("/")
        or any(p == ".." for p in parts)
        or (len(relative) > 1 and relative[1] == ":")
    ):
        raise HTTPError(403, "path outside the served folder")
    root = base.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise HTTPError(403, "path outside the served folder")
    if not candidate.is_file():
        raise HTTPError(404, "no such file")
    return candidate


def _int(query: dict[str, list[str]], name: str, default: int | None = None) -> int:
    values = query.get(name)
    if not values:
        if default is None:
            raise HTTPError(400, f"missing parameter {name!r}")
        return default
    try:
        return int(float(values[0]))
    except ValueError:
        raise HTTPError(400, f"parameter {name!r} is not a number: {values[0]!r}") from None


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha1(repr(parts).encode()).hexdigest()[:20] + '"'


def _stamp(path: Path | None) -> tuple[int, int]:
    if path is None:
        return (0, 0)
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


class ViewerApp:
    """The viewer's state: catalogue, slide handle pools, renderers and caches (thread-safe).

    Only the ``open_slides`` most recently used slides keep open handles, whole
    Deep Zoom level images and TFRecord maps; older ones are released (and
    reopened when asked for again), so browsing a folder of thousands of slides
    holds neither thousands of files open nor their memory.
    """

    def __init__(
        self, catalog: Catalog, *, handles_per_slide: int = 4, open_slides: int = OPEN_SLIDES
    ) -> None:
        self.catalog = catalog
        self.handles_per_slide = handles_per_slide
        self.open_slides = open_slides
        self.tiles = BytesLRU(TILE_CACHE_BYTES)
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pools: dict[str, SlidePool] = {}
        self._renderers: dict[str, TileRenderer] = {}
        self._data: dict[str, SlideData] = {}
        self._small: dict[tuple[str, str], bytes] = {}

    def entry(self, slide_id: str | None) -> SlideEntry:
        """The catalogue entry ``slide_id`` (404 when unknown)."""
        entry = self.catalog.get(slide_id or "")
        if entry is None:
            raise HTTPError(404, f"no slide {slide_id!r}")
        return entry

    def pool(self, entry: SlideEntry) -> SlidePool:
        """The handle pool of a slide (404 when its file is missing)."""
        if not entry.has_slide:
            raise HTTPError(404, f"slide file of {entry.name!r} not found: {entry.slide_path}")
        assert entry.slide_path is not None
        with self._lock:
            self._touch(entry.id)
            pool = self._pools.get(entry.id)
            if pool is None:
                pool = SlidePool(entry.slide_path, self.handles_per_slide)
                self._pools[entry.id] = pool
            return pool

    def _touch(self, slide_id: str) -> None:
        # Mark a slide used; release the least recently used beyond ``open_slides``.
        self._recent[slide_id] = None
        self._recent.move_to_end(slide_id)
        while len(self._recent) > self.open_slides:
            old, _ = self._recent.popitem(last=False)
            self._renderers.pop(old, None)
            pool = self._pools.pop(old, None)
            if pool is not None:
                pool.trim()  # requests still holding it reopen a handle
            data = self._data.get(old)
            if data is not None:
                data.close()

    @property
    def open_slide_ids(self) -> list[str]:
        """Ids of the slides holding resources, least recently used first."""
        with self._lock:
            return list(self._recent)

    def renderer(self, entry: SlideEntry) -> TileRenderer:
        """The Deep Zoom renderer of a slide (built once)."""
        with self._lock:
            self._touch(entry.id)
            renderer = self._renderers.get(entry.id)
        if renderer is None:
            renderer = TileRenderer(self.pool(entry), cache=self.tiles)
            with self._lock:
                renderer = self._renderers.setdefault(entry.id, renderer)
        return renderer

    def data(self, entry: SlideEntry) -> SlideData:
        """The extraction data of a slide."""
        with self._lock:
            self._touch(entry.id)
            return self._data.setdefault(entry.id, SlideData(entry))

    def cached(self, entry: SlideEntry, what: str, make: Any) -> bytes:
        """A small rendered image (thumbnail, tissue outline...), made once."""
        key = (entry.id, what)
        with self._lock:
            value = self._small.get(key)
        if value is None:
            value = make()
            with self._lock:
                self._small[key] = value
        return value

    def close(self) -> None:
        """Close every slide handle and TFRecord map."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            for data in self._data.values():
                data.close()


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tilestream-viewer"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm and the client's delayed ACK hold every keep-alive response ~40 ms
    disable_nagle_algorithm = True

    # -- plumbing -----------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

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
        if etag is not None and status == 200:
            match = self.headers.get("If-None-Match")
            if match is not None and etag in (m.strip() for m in match.split(",")):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", cache)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if etag is not None:
            self.send_header("ETag", etag)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, *, status: int = 200, head: bool = False) -> None:
        body = json.dumps(value, allow_nan=False, default=str).encode()
        self._send(body, "application/json", status=status, head=head)

    def _dispatch(self, *, head: bool) -> None:
        try:
            self._check_host()
            self._route(head)
        except HTTPError as exc:
            self._json({"error": exc.message}, status=exc.status, head=head)
        except (TileNotFound, RecordNotFoundError, SlideNotFoundError) as exc:
            self._json({"error": str(exc)}, status=404, head=head)
        except TileStreamError as exc:
            log.warning("%s: %s", self.path, exc)
            self._json({"error": str(exc)}, status=500, head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("internal error answering %s", self.path)
            self._json({"error": "internal error (see the server log)"}, status=500, head=head)

    def _check_host(self) -> None:
        # On loopback, answer only requests addressed to loopback names: a web page
        # elsewhere cannot reach the slides through DNS rebinding.
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in _LOOPBACK_NAMES:
            raise HTTPError(403, f"unexpected Host header {host!r}: use the printed URL")

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
            if root is None:
                raise HTTPError(404, "no folder is served")
            path = safe_join(root, unquote(raw[len("/files/") :]))
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
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/javascript":
            ctype += "; charset=utf-8"
        st = path.stat()
        etag = _etag(str(path), st.st_size, st.st_mtime_ns)
        self._send(path.read_bytes(), ctype, cache=cache, etag=etag, head=head)

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
        if ext not in ("jpeg", "jpg") or not (parts[1].isdigit() and col.isdigit()):
            raise HTTPError(404, f"no tile {parts[1]}/{parts[2]}")
        if not row.isdigit():
            raise HTTPError(404, f"no tile {parts[1]}/{parts[2]}")
        level, c, r = int(parts[1]), int(col), int(row)
        renderer = app.renderer(entry)
        etag = _etag(str(entry.slide_path), _stamp(entry.slide_path), level, c, r)
        if self.headers.get("If-None-Match") == etag:
            renderer.check(level, c, r)
            self._send(b"", "image/jpeg", cache="public, max-age=86400", etag=etag)
            return
        body = renderer.tile(level, c, r)
        self._send(body, "image/jpeg", cache="public, max-age=86400", etag=etag, head=head)

    def _api(self, name: str, query: dict[str, list[str]], head: bool) -> None:
        app = self.server.app
        if name == "slides":
            catalog = app.catalog
            self._json(
                {
                    "mode": catalog.mode,
                    "root": str(catalog.root) if catalog.root else None,
                    "slides": [e.summary() for e in catalog.entries],
                },
                head=head,
            )
            return
        entry = app.entry(query.get("id", [""])[0])
        if name == "slide":
            self._json(self._metadata(entry), head=head)
            return
        if name == "thumbnail":
            body = app.cached(entry, "thumbnail", lambda: self._thumbnail(entry))
            self._send(body, "image/jpeg", head=head)
            return
        if name == "associated":
            which = (query.get("name") or [""])[0]
            body = app.cached(entry, "assoc:" + which, lambda: self._associated(entry, which))
            self._send(body, "image/jpeg", head=head)
            return
        if name == "grid":
            self._json(app.data(entry).grid(), head=head)
            return
        if name == "tile_at":
            hit = app.data(entry).tile_at(_int(query, "x"), _int(query, "y"))
            if hit["status"] == "kept" and entry.tfrecord is not None:
                hit["image"] = _record_url(entry, hit["loc_x"], hit["loc_y"])
            self._json(hit, head=head)
            return
        if name == "record":
            x, y = _int(query, "x"), _int(query, "y")
            fmt, body = app.data(entry).stored_tile(x, y)
            etag = _etag(str(entry.tfrecord), _stamp(entry.tfrecord), x, y)
            self._send(body, f"image/{fmt}", etag=etag, head=head)
            return
        if name == "mosaic":
            n = min(max(_int(query, "n", 64), 1), 1000)
            locations = app.data(entry).mosaic(n, seed=_int(query, "seed", 0))
            tiles = [{"loc_x": x, "loc_y": y, "image": _record_url(entry, x, y)}
                     for x, y in locations]  # fmt: skip
            self._json({"id": entry.id, "total": entry.state.get("tiles"),
                               "tiles": tiles}, head=head)  # fmt: skip
            return
        if name == "rois":
            if entry.roi_path is None:
                self._json({"file": None, "rois": []}, head=head)
                return
            self._json({"file": entry.roi_path.name, "rois": rois_json(entry.roi_path)}, head=head)
            return
        if name == "tissue.png":
            pool = app.pool(entry)
            body = app.cached(entry, "tissue", lambda: tissue_outline_png(pool))
            self._send(body, "image/png", head=head)
            return
        raise HTTPError(404, f"no API {name!r}")

    # -- helpers ------------------------------------------------------------------
    def _metadata(self, entry: SlideEntry) -> dict[str, Any]:
        app = self.server.app
        info: dict[str, Any] = {"id": entry.id, "name": entry.name, **entry.summary()}
        info["roi_file"] = entry.roi_path.name if entry.roi_path else None
        if not entry.has_slide:
            info["slide_error"] = f"slide file not found: {entry.slide_path}"
            return info
        try:
            renderer = app.renderer(entry)
            with app.pool(entry).handle() as slide:
                info.update(_slide_facts(slide))
        except TileStreamError as exc:
            info["slide_error"] = str(exc)
            return info
        w, h = renderer.dimensions
        info["dz"] = {
            "url": f"/dz/{quote(entry.id, safe='')}.dzi",
            "width": w,
            "height": h,
            "tile_size": renderer.tile_size,
            "overlap": renderer.overlap,
        }
        return info

    def _thumbnail(self, entry: SlideEntry) -> bytes:
        if entry.has_slide:
            with self.server.app.pool(entry).handle() as slide:
                return _jpeg(slide.get_thumbnail((256, 256)))
        if entry.preview is not None:
            with Image.open(entry.preview) as im:
                im.thumbnail((256, 256))
                return _jpeg(im)
        raise HTTPError(404, f"no thumbnail for {entry.name!r}: slide file and preview missing")

    def _associated(self, entry: SlideEntry, which: str) -> bytes:
        with self.server.app.pool(entry).handle() as slide:
            images = slide.associated_images
            if which not in images:
                raise HTTPError(404, f"no associated image {which!r}")
            return _jpeg(images[which])


def _slide_facts(slide: Slide) -> dict[str, Any]:
    mpp = slide.mpp
    return {
        "backend": slide.backend,
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": [
            {"dimensions": list(d), "downsample": round(ds, 4)}
            for d, ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ],
        "mpp": list(mpp) if mpp else None,
        "objective_power": slide.objective_power,
        "properties": dict(sorted(slide.properties.items())),
        "associated": sorted(slide.associated_images),
    }


def _record_url(entry: SlideEntry, x: int, y: int) -> str:
    return f"/api/record?id={quote(entry.id, safe='')}&x={x}&y={y}"


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: ViewerApp
    loopback: bool

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


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
    ) -> None:
        self.app = ViewerApp(Catalog.from_path(path, roi_dir=roi_dir))
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise TileStreamError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._httpd.app = self.app
        self._httpd.loopback = _is_loopback(self.address[0])
        self._thread: threading.Thread | None = None

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
