"""What the viewer exposes, and to whom: the access token, absolute paths, stale outputs."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from _http import request
from tilestream.errors import ConfigError
from tilestream.viewer import ViewerServer

SLIDE = "CMU-1-Small-Region"

pytestmark = pytest.mark.testdata


# -- item 18: the access token ---------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(run_root: Path) -> Iterator[ViewerServer]:
    """A viewer requiring a token (as off loopback), on a free loopback port."""
    with ViewerServer(run_root, port=0, token=True) as srv:
        srv.start()
        yield srv


PROTECTED = [
    "/",
    "/slide.html",
    "/static/common.js",
    "/api/slides",
    f"/api/slide?id={SLIDE}",
    f"/api/associated?id={SLIDE}&name=label",
    f"/api/thumbnail?id={SLIDE}",
    f"/dz/{SLIDE}_files/12/0_0.jpeg",
    f"/files/256px_128um/{SLIDE}.tfrecords",
    "/api/nothing",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_without_the_token_nothing_is_served(token_server: ViewerServer, path: str) -> None:
    token = token_server.token
    assert token is not None and len(token) >= 40
    for headers in (
        {},
        {"Cookie": f"tilestream-token-{token_server.address[1]}=wrong"},
        {"Cookie": f"tilestream-token-1={token}"},  # another port's cookie
        {"Authorization": "token wrong"},
        {"Authorization": f"Bearer {token}x"},
    ):
        status, resp_headers, body = request(token_server, path, headers)
        assert status == 403, (path, headers)
        assert resp_headers["content-type"] == "application/json"
        assert "token" in json.loads(body)["error"]
        assert b"\xff\xd8" not in body and b"tfrecords" not in body
    status, _, body = request(token_server, path + ("&" if "?" in path else "?") + "token=nope")
    assert status == 403 and "wrong access token" in json.loads(body)["error"]


def test_the_token_in_the_url_sets_a_cookie_and_is_stripped(token_server: ViewerServer) -> None:
    token = token_server.token
    assert token_server.open_url == f"{token_server.url}?token={token}"
    status, headers, body = request(token_server, f"/?token={token}")
    assert status == 303 and body == b""
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    name = f"tilestream-token-{token_server.address[1]}"
    assert cookie.startswith(f"{name}={token};")
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    # other parameters are kept, in order
    status, headers, _ = request(token_server, f"/api/slide?id={SLIDE}&token={token}&x=1")
    assert status == 303 and headers["location"] == f"/api/slide?id={SLIDE}&x=1"
    # no open redirect through a path starting with //
    status, headers, _ = request(token_server, f"//evil.example/?token={token}")
    assert status == 303 and headers["location"].startswith("/evil.example")
    # the cookie, or the Authorization header, opens everything
    for auth in ({"Cookie": f"other=1; {name}={token}"}, {"Authorization": f"token {token}"}):
        for path in PROTECTED[:-2]:
            status, _, _ = request(token_server, path, auth)
            assert status == 200, (path, auth)
    status, _, body = request(token_server, "/api/slides", {"Authorization": f"token {token}"})
    assert {s["name"] for s in json.loads(body)["slides"]} == {SLIDE, "histolab-broken"}


def test_the_token_never_reaches_the_logs(
    token_server: ViewerServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = token_server.token
    assert token is not None
    with caplog.at_level(logging.DEBUG, logger="tilestream"):
        request(token_server, f"/?token={token}")
        request(token_server, f"/api/slides?token={token}x")
        request(token_server, "/api/tile_at?id=nope&x=inf", {"Authorization": f"token {token}"})
    assert "token=[redacted]" in caplog.text
    assert token not in caplog.text


def test_off_loopback_a_token_is_required_unless_refused_explicitly(
    run_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ViewerServer(run_root, host="0.0.0.0", port=0) as srv:
        srv.start()
        assert srv.token is not None and f"?token={srv.token}" in srv.open_url
        status, _, _ = request(srv, "/api/slides", host="127.0.0.1")
        assert status == 403
        auth = {"Authorization": f"token {srv.token}"}
        # with the token, any Host (a token, not a name, is the protection)
        status, _, _ = request(
            srv, "/api/slides", {**auth, "Host": "viewer.example:1"}, host="127.0.0.1"
        )
        assert status == 200
    with (
        caplog.at_level(logging.WARNING, logger="tilestream"),
        ViewerServer(run_root, host="0.0.0.0", port=0, token=False) as srv,
    ):
        srv.start()
        assert srv.token is None and srv.open_url == srv.url
        assert request(srv, "/api/slides", host="127.0.0.1")[0] == 200
        # no token: only IP addresses and this machine's names (no DNS rebinding)
        status, _, body = request(srv, "/api/slides", {"Host": "rebound.example"}, host="127.0.0.1")
        assert status == 403 and b"Host" in body
    assert "WITHOUT an access token" in caplog.text


def test_a_given_token_must_be_strong_enough(run_root: Path) -> None:
    for weak in ("", "short", "has spaces in it ok?", "x" * 300):
        with pytest.raises(ConfigError):
            ViewerServer(run_root, port=0, token=weak)
    with ViewerServer(run_root, port=0, token="A-fixed_token.0123456789") as srv:
        srv.start()
        headers = {"Authorization": "token A-fixed_token.0123456789"}
        assert request(srv, "/api/slides", headers)[0] == 200
        assert request(srv, "/api/slides")[0] == 403


def test_loopback_needs_no_token_by_default(server: ViewerServer) -> None:
    assert server.token is None and server.open_url == server.url
    assert request(server, "/api/slides")[0] == 200


def _read_line(proc: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no match for {pattern!r} in {seen!r}")


def test_cli_off_loopback_prints_the_tokenised_url(run_root: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tilestream", "view", str(run_root), "--port", "0", "--host"]
    proc = subprocess.Popen(
        [*cmd, "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        match = _read_line(proc, r"http://0\.0\.0\.0:(\d+)/\?token=([A-Za-z0-9_-]{40,})")
        port, token = match.group(1), match.group(2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/slides", timeout=60)
        assert refused.value.code == 403
        refused.value.close()
        # the printed URL logs in: a redirect with the cookie, then the page
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"http://127.0.0.1:{port}/?token={token}", timeout=60) as resp:
            assert resp.status == 200 and b"tilestream" in resp.read()
            assert resp.url == f"http://127.0.0.1:{port}/"
        with opener.open(f"http://127.0.0.1:{port}/api/slides", timeout=60) as resp:
            assert len(json.load(resp)["slides"]) == 2
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    proc = subprocess.Popen(
        [*cmd, "0.0.0.0", "--no-token"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        match = _read_line(proc, r"open (http://\S+)")
        assert "token" not in match.group(1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "WITHOUT an access token" in err


# -- item 18: no absolute path reaches the browser -------------------------------------


def _every_answer(srv: ViewerServer) -> Iterator[tuple[str, bytes]]:
    slides = json.loads(request(srv, "/api/slides")[2])["slides"]
    paths = ["/", "/slide.html", "/mosaic.html", "/api/slides", "/api/nothing", "/files/nope"]
    for s in slides:
        q = s["id"]
        paths += [f"/api/slide?id={q}", f"/api/grid?id={q}", f"/api/rois?id={q}",
                  f"/api/tile_at?id={q}&x=1200&y=400", f"/api/record?id={q}&x=1&y=1",
                  f"/api/mosaic?id={q}&n=2", f"/dz/{q}.dzi", f"/dz/{q}_files/0/0_0.jpeg",
                  f"/api/tissue.png?id={q}", f"/api/associated?id={q}&name=nope"]  # fmt: skip
    for path in paths:
        yield path, request(srv, path)[2]


def test_no_absolute_path_is_shown(run_root: Path, slides_dir: Path, tmp_path: Path) -> None:
    secrets = {str(run_root), str(slides_dir), str(slides_dir.resolve()), str(run_root.resolve())}
    rois = tmp_path / "rois"
    rois.mkdir()
    (rois / "histolab-broken.csv").write_text("ROI_name,X_base,Y_base\na,1,1\n")  # bad ROI file
    with ViewerServer(run_root, port=0, roi_dir=rois) as srv:
        srv.start()
        answers = dict(_every_answer(srv))
        slides = json.loads(answers["/api/slides"])
        assert slides["root"] == run_root.name
        broken = {s["name"]: s for s in slides["slides"]}["histolab-broken"]
        assert broken["slide_file"] == "histolab-broken.svs" and broken["error"]
        assert "slide_path" not in broken
        meta = json.loads(answers["/api/slide?id=histolab-broken"])
        assert "histolab-broken.svs" in meta["slide_error"]
    with ViewerServer(slides_dir / f"{SLIDE}.svs", port=0) as srv:
        srv.start()
        answers.update({"single:" + k: v for k, v in _every_answer(srv)})
    for path, body in answers.items():
        text = body.decode("latin-1")
        for secret in secrets:
            assert secret not in text, (path, secret, text[:300])


# -- item 2: stale outputs in a run folder ----------------------------------------------


@pytest.fixture
def stale_run(run_root: Path, tmp_path: Path) -> Path:
    """A copy of the run where CMU's outputs are of another config, plus an orphan TFRecord."""
    root = tmp_path / "run"
    shutil.copytree(run_root, root, symlinks=True)
    (run,) = [p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists()]
    state_file = run / "state" / f"{SLIDE}.json"
    state = json.loads(state_file.read_text())
    state["config_hash"] = "an-older-config"
    state_file.write_text(json.dumps(state))
    shutil.copy(run / f"{SLIDE}.tfrecords", run / "orphan.tfrecords")
    return root


def test_stale_outputs_are_listed_as_stale_and_not_served(
    stale_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        srv = ViewerServer(stale_run, port=0)
    with srv:
        srv.start()
        slides = {s["name"]: s for s in json.loads(request(srv, "/api/slides")[2])["slides"]}
        assert set(slides) == {SLIDE, "histolab-broken", "orphan"}
        cmu = slides[SLIDE]
        assert "an-older-config" in cmu["stale"]
        assert not cmu["has_tfrecord"] and not cmu["has_grid"] and cmu["preview"] is None
        assert "no record of a completed extraction" in slides["orphan"]["stale"]
        assert slides["histolab-broken"]["stale"] is None  # failed, with no outputs to hide
        # none of the stale outputs is served as the slide's data
        grid = json.loads(request(srv, f"/api/grid?id={SLIDE}")[2])
        assert grid["kept"] == [] and grid["rejected"] == []
        assert request(srv, f"/api/mosaic?id={SLIDE}")[0] == 404
        assert request(srv, "/api/mosaic?id=orphan")[0] == 404
        hit = json.loads(request(srv, f"/api/tile_at?id={SLIDE}&x=1200&y=400")[2])
        assert hit["status"] == "none"
        meta = json.loads(request(srv, f"/api/slide?id={SLIDE}")[2])
        assert "an-older-config" in meta["stale"] and meta["dimensions"]  # the slide still shows
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(SLIDE in m and "stale" in m and "an-older-config" in m for m in warned), warned
    assert any("orphan" in m and "stale" in m for m in warned), warned


def test_outputs_changed_since_extraction_are_stale(stale_run: Path) -> None:
    (run,) = [p for p in stale_run.iterdir() if p.is_dir() and (p / "config.json").exists()]
    state_file = run / "state" / f"{SLIDE}.json"
    state = json.loads(state_file.read_text())
    state["config_hash"] = json.loads((run / "config.json").read_text())["hash"]
    size = (run / f"{SLIDE}.tfrecords").stat().st_size
    state["outputs"] = {"tfrecord": {"size": size}}
    state_file.write_text(json.dumps(state))
    (run / "orphan.tfrecords").unlink()
    with ViewerServer(stale_run, port=0) as srv:
        srv.start()
        slides = {s["name"]: s for s in json.loads(request(srv, "/api/slides")[2])["slides"]}
        assert slides[SLIDE]["stale"] is None and slides[SLIDE]["has_tfrecord"]
    with (run / f"{SLIDE}.tfrecords").open("ab") as f:
        f.write(b"\0" * 16)
    with ViewerServer(stale_run, port=0) as srv:
        srv.start()
        slides = {s["name"]: s for s in json.loads(request(srv, "/api/slides")[2])["slides"]}
        assert "changed since extraction" in slides[SLIDE]["stale"]
        assert request(srv, f"/api/mosaic?id={SLIDE}")[0] == 404


def test_files_serves_only_the_previews_of_current_slides(run_root: Path, stale_run: Path) -> None:
    """``/files/`` gives the pages' preview images and nothing else: state files, summaries and
    reports name absolute paths, and a stale slide's outputs are not its data."""
    (run,) = [p for p in run_root.iterdir() if p.is_dir() and (p / "config.json").exists()]
    rel = run.name
    with ViewerServer(run_root, port=0) as srv:
        srv.start()
        slides = {s["name"]: s for s in json.loads(request(srv, "/api/slides")[2])["slides"]}
        preview = slides[SLIDE]["preview"]
        assert preview and request(srv, f"/files/{preview}")[0] == 200
        for other in (
            f"{rel}/state/{SLIDE}.json",
            f"{rel}/summary.json",
            f"{rel}/config.json",
            f"{rel}/report.html",
            f"{rel}/{SLIDE}.tfrecords",
            f"{rel}/{SLIDE}.coords.csv",
        ):
            assert (run / other.split("/", 1)[1]).is_file(), other
            status, _, body = request(srv, f"/files/{other}")
            assert status == 404, other
            assert str(run_root) not in body.decode(errors="replace")
    with ViewerServer(stale_run, port=0) as srv:  # the same preview, its slide now stale
        srv.start()
        assert request(srv, f"/files/{preview}")[0] == 404
