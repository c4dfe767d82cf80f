"""The viewer under hostile or careless clients: big files, slow sockets, bad parameters.

Every test talks to a real server on a free loopback port through real sockets.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _http import request
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.viewer import ViewerServer

SLIDE = "CMU-1-Small-Region"

pytestmark = pytest.mark.testdata


# -- item 19: /files/ streams, with Range ------------------------------------------------


GIB = 1 << 30
MARKS = {0: b"first", 123_456_789: b"middle", GIB - 4: b"last"}


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served run folder whose one slide's preview is a 1 GiB sparse file with a few marks."""
    root = tmp_path_factory.mktemp("big")
    (root / "config.json").write_text('{"hash": "h"}')
    (root / "state").mkdir()
    (root / "state" / "big.json").write_text('{"status": "done", "config_hash": "h"}')
    (root / "previews").mkdir()
    with (root / "previews" / "big.jpg").open("wb") as f:
        f.truncate(GIB)
        for offset, mark in MARKS.items():
            f.seek(offset)
            f.write(mark)
    return root


class _PeakRSS:
    """The process's resident memory, sampled every 5 ms on a thread."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _drain(server: ViewerServer, path: str, headers: dict[str, str] | None = None) -> int:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        total = 0
        while chunk := resp.read(1 << 20):
            total += len(chunk)
        return total
    finally:
        conn.close()


def test_big_files_are_streamed_not_loaded(big_folder: Path) -> None:
    with ViewerServer(big_folder, port=0) as srv:
        srv.start()
        with _PeakRSS() as rss:
            heads = [request(srv, "/files/previews/big.jpg", method="HEAD") for _ in range(3)]
            sizes = [_drain(srv, "/files/previews/big.jpg") for _ in range(2)]
        # three HEADs and two whole GETs of 1 GiB: memory stays flat (it grew by
        # the file's size per request when the file was read whole)
        assert rss.peak - rss.base < 64 << 20, (rss.peak - rss.base) >> 20
        assert sizes == [GIB, GIB]
        for status, headers, body in heads:
            assert status == 200 and body == b""
            assert headers["content-length"] == str(GIB)
            assert headers["accept-ranges"] == "bytes"


def test_ranges_of_a_file(big_folder: Path) -> None:
    with ViewerServer(big_folder, port=0) as srv:
        srv.start()
        for offset, mark in MARKS.items():
            end = offset + len(mark) - 1
            status, headers, body = request(
                srv, "/files/previews/big.jpg", {"Range": f"bytes={offset}-{end}"}
            )
            assert status == 206 and body == mark
            assert headers["content-range"] == f"bytes {offset}-{end}/{GIB}"
            assert headers["content-length"] == str(len(mark))
        status, headers, body = request(srv, "/files/previews/big.jpg", {"Range": "bytes=-4"})
        assert status == 206 and body == b"last"
        status, headers, body = request(
            srv, "/files/previews/big.jpg", {"Range": f"bytes={GIB - 4}-"}
        )
        assert status == 206 and body == b"last"
        # an end past the file is clipped to it
        status, headers, body = request(
            srv, "/files/previews/big.jpg", {"Range": f"bytes={GIB - 2}-{GIB * 9}"}
        )
        assert status == 206 and body == b"st"
        assert headers["content-range"] == f"bytes {GIB - 2}-{GIB - 1}/{GIB}"
        # HEAD with a range: the headers, no body
        status, headers, body = request(
            srv, "/files/previews/big.jpg", {"Range": "bytes=0-4"}, method="HEAD"
        )
        assert status == 206 and body == b"" and headers["content-length"] == "5"
        # nothing of the file in the range: 416 with the file's size
        for bad in (f"bytes={GIB}-", f"bytes={GIB + 5}-{GIB + 9}", "bytes=-0"):
            status, headers, body = request(srv, "/files/previews/big.jpg", {"Range": bad})
            assert status == 416, bad
            assert headers["content-range"] == f"bytes */{GIB}"
            assert "error" in json.loads(body)
        # a Range that is not one valid byte range is ignored (RFC 9110): the whole file
        # (asked for with HEAD: 1 GiB)
        for ignored in ("bytes=5-2", "bytes=0-1,5-6", "lines=1-2", "bytes=a-b", "bytes=--1"):
            status, headers, body = request(
                srv, "/files/previews/big.jpg", {"Range": ignored}, method="HEAD"
            )
            assert status == 200 and headers["content-length"] == str(GIB), ignored
        # If-Range: the range only while the file is unchanged
        etag = request(srv, "/files/previews/big.jpg", method="HEAD")[1]["etag"]
        status, _, body = request(
            srv, "/files/previews/big.jpg", {"Range": "bytes=0-4", "If-Range": etag}
        )
        assert status == 206 and body == b"first"
        status, headers, _ = request(
            srv,
            "/files/previews/big.jpg",
            {"Range": "bytes=0-4", "If-Range": '"other"'},
            method="HEAD",
        )
        assert status == 200 and headers["content-length"] == str(GIB)
        # revalidation still works
        status, _, body = request(srv, "/files/previews/big.jpg", {"If-None-Match": etag})
        assert status == 304 and body == b""


# -- item 20: slow clients time out, connections are bounded -------------------------


@pytest.fixture
def slow_server(big_folder: Path) -> Iterator[ViewerServer]:
    with ViewerServer(big_folder, port=0, request_timeout=1.0, max_connections=8) as srv:
        srv.start()
        yield srv


def _threads_settle(limit: int, within: float) -> int:
    deadline = time.monotonic() + within
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _read_to_eof(s: socket.socket) -> None:
    # the server closed the connection: recv ends (raises TimeoutError if it did not)
    s.settimeout(3)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass


def test_half_sent_requests_are_bounded_and_time_out(
    slow_server: ViewerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tilestream")
    base = threading.active_count()
    sockets = []
    try:
        for _ in range(100):
            s = socket.create_connection(slow_server.address, timeout=10)
            s.sendall(b"GET /files/previews/big.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
            sockets.append(s)
        time.sleep(0.5)
        # at most max_connections threads answer at once; the others were turned away
        assert threading.active_count() <= base + 8
        refused = 0
        for s in sockets:
            s.settimeout(0.05)
            try:
                data = s.recv(200)
            except TimeoutError:
                continue
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
        assert refused >= 90
        # one warning for them all, not a line per connection
        warned = [r for r in caplog.records if "turned" in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in warned]
        # a normal request is answered once the slow ones time out (1 s)
        t0 = time.monotonic()
        status = 0
        while time.monotonic() - t0 < 5:
            status, _, body = request(slow_server, "/api/slides")
            if status == 200:
                break
            assert status == 503 and "error" in json.loads(body)
            time.sleep(0.1)
        assert status == 200 and time.monotonic() - t0 < 3
        # the threads of the timed-out connections are gone; their sockets closed
        assert _threads_settle(base, within=3) <= base
        for s in sockets:
            _read_to_eof(s)
    finally:
        for s in sockets:
            s.close()


def test_a_request_dribbled_byte_by_byte_is_cut_off(slow_server: ViewerServer) -> None:
    # each byte within the socket timeout, the whole head never: closed after ~1 s
    with socket.create_connection(slow_server.address, timeout=10) as s:
        t0 = time.monotonic()
        closed = False
        for byte in b"GET /api/slides HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - t0 > 6:
                break
        if not closed:
            s.settimeout(3)
            try:
                closed = s.recv(10) == b""
            except ConnectionResetError:
                closed = True
        assert closed and time.monotonic() - t0 < 4


def test_an_idle_keep_alive_connection_is_closed(slow_server: ViewerServer) -> None:
    base = threading.active_count()
    host, port = slow_server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/api/slides")
        assert conn.getresponse().read()
        assert _threads_settle(base, within=4) <= base
    finally:
        conn.close()


# -- item 21: bad parameters are 400 with a one-line JSON error ----------------------


def _assert_400(server: ViewerServer, path: str) -> str:
    status, headers, body = request(server, path)
    assert status == 400, (path, status, body)
    assert headers["content-type"] == "application/json"
    assert b"\n" not in body
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("tile_at?id={s}&x=inf&y=3", "x"),
        ("tile_at?id={s}&x=3&y=-inf", "y"),
        ("tile_at?id={s}&x=nan&y=3", "x"),
        ("tile_at?id={s}&x=1e400&y=3", "x"),
        ("tile_at?id={s}&x=1e300&y=3", "x"),
        ("tile_at?id={s}&x=3", "y"),
        ("record?id={s}&x=inf&y=0", "x"),
        ("record?id={s}&x=99999999999999999999999&y=0", "x"),
        ("record?id={s}&x=0&y=1.5", "y"),
        ("mosaic?id={s}&n=inf", "n"),
        ("mosaic?id={s}&n=nan", "n"),
        ("mosaic?id={s}&n=0", "n"),
        ("mosaic?id={s}&n=1001", "n"),
        ("mosaic?id={s}&n=2.5", "n"),
        ("mosaic?id={s}&seed=-1", "seed"),
        ("mosaic?id={s}&seed=inf", "seed"),
        ("mosaic?id={s}&seed=99999999999999999999999", "seed"),
        ("mosaic?id={s}&seed=x", "seed"),
    ],
)
def test_bad_parameters_are_400(server: ViewerServer, query: str, name: str) -> None:
    error = _assert_400(server, "/api/" + query.format(s=SLIDE))
    assert repr(name) in error


def test_good_parameters_still_work(server: ViewerServer) -> None:
    assert request(server, f"/api/tile_at?id={SLIDE}&x=12.7&y=3")[0] == 200
    assert request(server, f"/api/mosaic?id={SLIDE}&n=1000&seed=4294967295")[0] == 200
    assert request(server, f"/api/mosaic?id={SLIDE}&n=1&seed=0")[0] == 200


_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_NUMBERISH = st.one_of(
    _TEXT,
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-1", "0", "1.5", "", " 7 ", "0x10", "1_0"]),
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.floats().map(str),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    api=st.sampled_from(["tile_at", "record", "mosaic", "associated", "grid", "slide", "rois"]),
    values=st.dictionaries(
        st.sampled_from(["x", "y", "n", "seed", "name", "id"]), _NUMBERISH, max_size=5
    ),
)
def test_no_parameter_string_makes_a_500(
    server: ViewerServer, api: str, values: dict[str, str]
) -> None:
    values.setdefault("id", SLIDE)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items())
    status, headers, body = request(server, f"/api/{api}?{query}")
    assert status in (200, 400, 404), (api, values, status, body)
    if status != 200:
        assert headers["content-type"] == "application/json" and b"\n" not in body
        assert json.loads(body)["error"]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(level=_NUMBERISH, col=_NUMBERISH, row=_NUMBERISH)
def test_no_deep_zoom_path_makes_a_500(
    server: ViewerServer, level: str, col: str, row: str
) -> None:
    parts = [quote(v, safe="") or "0" for v in (level, col, row)]
    status, _, body = request(server, f"/dz/{SLIDE}_files/{parts[0]}/{parts[1]}_{parts[2]}.jpeg")
    assert status in (200, 404), (level, col, row, status, body)


# -- a slide without a pyramid: coarse tiles read in blocks ----------------------------


def test_coarse_tiles_of_a_slide_without_a_pyramid_use_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "flat.svs"
    make_synthetic_slide(path, width=9000, height=9000, levels=1)  # 81 Mpx, one level
    with ViewerServer(path, port=0) as srv:
        srv.app.tiles.max_bytes = 0
        srv.start()
        renderer = srv.app.renderer(srv.app.entry("flat"))
        # the coarsest level of one 254-px tile: rendered from the whole 9000 x 9000 level
        level = max(lv for lv, tiles in enumerate(renderer.level_tiles) if tiles == (1, 1))
        with _PeakRSS() as rss:
            status, _, body = request(srv, f"/dz/flat_files/{level}/0_0.jpeg")
        assert status == 200, body
        with srv.app.pool(srv.app.entry("flat")).handle() as slide:
            cached = slide.cache_info()["bytes"]  # the slide layer's decoded tiles (~100 MB)
            thumb = slide.get_thumbnail((1000, 1000))
        # beyond the slide's cache, the viewer's own memory stays small (it grew by
        # 540 MB when the 243 MB region was read in one piece)
        grown = (rss.peak - rss.base - cached) >> 20
        assert grown < 80, grown
    tile = Image.open(io.BytesIO(body)).convert("RGB")
    reference = np.asarray(thumb.convert("RGB").resize(tile.size, Image.Resampling.BOX), float)
    assert np.abs(np.asarray(tile, float) - reference).mean() < 6
