"""``tilestream view`` over object storage: a slide object and a run folder in SeaweedFS.

The same real slide and the same extraction are served from local files and
from the bucket; the answers must be the same bytes, the credentials must never
appear in an answer or a log line, and a missing object is a clear error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._http import request

from tilestream.errors import ConfigError, SlideNotFoundError, StorageError
from tilestream.extract import extract_slides
from tilestream.runfolder import slide_output_names
from tilestream.storage import Store
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.viewer import Catalog, ViewerServer
from viewer.test_viewer_cli import _read_url

BUCKET = "rview"  # the module's bucket (tests/conftest.py: bucket, store)

pytestmark = pytest.mark.testdata

SLIDE = "CMU-1-Small-Region"
LABEL = "256px_128um"
OPTS = {"tile_px": 256, "tile_um": 128}


@pytest.fixture(scope="module")
def slide_url(slides_dir: Path, store: Store, bucket: str) -> str:
    """The real slide uploaded to the bucket."""
    store.write_atomic(f"slides/{SLIDE}.svs", (slides_dir / f"{SLIDE}.svs").read_bytes())
    return f"s3://{bucket}/slides/{SLIDE}.svs"


@pytest.fixture(scope="module")
def local_run(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rview-local")
    assert extract_slides([slides_dir / f"{SLIDE}.svs"], out, workers=1, **OPTS).done == 1
    return out / LABEL


@pytest.fixture(scope="module")
def remote_run(slides_dir: Path, seaweed: SeaweedServer, bucket: str) -> str:
    run = extract_slides(
        [slides_dir / f"{SLIDE}.svs"], f"s3://{bucket}/out", workers=1,
        storage_options=seaweed.storage_options, **OPTS,
    )  # fmt: skip
    assert run.done == 1
    return f"s3://{bucket}/out/{LABEL}"


def _serve(path: str | Path, options: dict[str, Any] | None = None) -> Iterator[ViewerServer]:
    with ViewerServer(path, port=0, storage_options=options) as srv:
        srv.start()
        yield srv


@pytest.fixture(scope="module")
def local_slide_server(slides_dir: Path) -> Iterator[ViewerServer]:
    yield from _serve(slides_dir / f"{SLIDE}.svs")


@pytest.fixture(scope="module")
def local_run_server(local_run: Path) -> Iterator[ViewerServer]:
    yield from _serve(local_run)


def _get(server: ViewerServer, path: str) -> bytes:
    status, _, body = request(server, path)
    assert status == 200, (path, body[:300])
    return body


def _json(server: ViewerServer, path: str) -> Any:
    return json.loads(_get(server, path))


def _no_secret(seaweed: SeaweedServer, *texts: str | bytes) -> None:
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode()
        assert seaweed.secret_key.encode() not in raw
        assert seaweed.access_key.encode() not in raw


def _no_secret_logged(seaweed: SeaweedServer, caplog: pytest.LogCaptureFixture) -> None:
    """Neither key in tilestream's log lines; the secret in no log line at all (botocore's
    own debug lines name the access key id in a request's signature, never the secret)."""
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tilestream"))
    _no_secret(seaweed, ours)
    assert seaweed.secret_key not in caplog.text


DZ_TILES = ["12/0_0", "10/0_0", "11/1_1", "8/0_0", "12/3_4"]


def test_a_slide_object_gives_the_local_deep_zoom_tiles(
    slide_url: str,
    seaweed: SeaweedServer,
    local_slide_server: ViewerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []
    for srv in _serve(slide_url, seaweed.storage_options):
        meta = _json(srv, f"/api/slide?id={SLIDE}")
        here = _json(local_slide_server, f"/api/slide?id={SLIDE}")
        assert "slide_error" not in meta
        for key in ("dimensions", "levels", "mpp", "properties", "associated", "dz"):
            assert meta[key] == here[key], key
        dzi = _get(srv, f"/dz/{SLIDE}.dzi")
        assert dzi == _get(local_slide_server, f"/dz/{SLIDE}.dzi")
        for tile in DZ_TILES:
            body = _get(srv, f"/dz/{SLIDE}_files/{tile}.jpeg")
            assert body == _get(local_slide_server, f"/dz/{SLIDE}_files/{tile}.jpeg"), tile
        thumb = _get(srv, f"/api/thumbnail?id={SLIDE}")
        assert thumb == _get(local_slide_server, f"/api/thumbnail?id={SLIDE}")
        bodies += [json.dumps(meta).encode(), dzi, _get(srv, "/api/slides")]
        bodies.append(_get(srv, f"/api/slide?id={SLIDE}"))
    _no_secret(seaweed, *bodies)
    _no_secret_logged(seaweed, caplog)


def test_a_run_folder_in_a_bucket_is_served_as_the_local_one(
    remote_run: str,
    seaweed: SeaweedServer,
    local_run_server: ViewerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []
    for srv in _serve(remote_run, seaweed.storage_options):
        listing = _json(srv, "/api/slides")
        here = _json(local_run_server, "/api/slides")
        assert listing == here  # names, counts, status, preview link, root label
        (summary,) = listing["slides"]
        assert summary["stale"] is None and summary["has_tfrecord"] and summary["has_qc"]
        for path in (
            f"/api/grid?id={SLIDE}",
            f"/api/qc?id={SLIDE}",
            f"/api/mosaic?id={SLIDE}&n=12&seed=3",
            f"/api/tile_at?id={SLIDE}&x=1200&y=400",
            f"/api/thumbnail?id={SLIDE}",
            f"/files/{summary['preview']}",
            f"/dz/{SLIDE}_files/11/1_1.jpeg",
        ):
            body = _get(srv, path)
            assert body == _get(local_run_server, path), path
            bodies.append(body)
        grid = _json(srv, f"/api/grid?id={SLIDE}")
        assert len(grid["kept"]) > 5
        mosaic = _json(srv, f"/api/mosaic?id={SLIDE}&n=6&seed=1")["tiles"]
        assert len(mosaic) == 6
        for tile in mosaic:  # the stored tiles, read by ranges from the TFRecord object
            body = _get(srv, tile["image"])
            assert body[:2] == b"\xff\xd8"
            assert body == _get(local_run_server, tile["image"])
        status, _, body = request(srv, f"/api/record?id={SLIDE}&x=1&y=1")
        assert status == 404 and b"error" in body
        status, _, _ = request(srv, "/files/state/CMU-1-Small-Region.json")
        assert status == 404  # only the previews of current slides, as on disk
    _no_secret(seaweed, *bodies)
    _no_secret_logged(seaweed, caplog)


def test_a_changed_object_marks_the_slide_stale(
    remote_run: str, seaweed: SeaweedServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy of the run: current; its TFRecord object deleted while served: a 404 naming
    the object; its coordinates table changed: stale, its outputs not shown."""
    src = remote_run.split("/", 3)[3]
    dst = f"stale/{LABEL}"
    for key in store.list(src):
        store.write_atomic(dst + key[len(src) :], store.read(key))
    url = remote_run.replace(src, dst)
    names = slide_output_names(SLIDE)
    for srv in _serve(url, seaweed.storage_options):
        (summary,) = _json(srv, "/api/slides")["slides"]
        assert summary["stale"] is None and summary["has_tfrecord"]
        tile = _json(srv, f"/api/mosaic?id={SLIDE}&n=1")["tiles"][0]["image"]
        store.delete(f"{dst}/{names['tfrecord']}")
        status, _, body = request(srv, tile)
        assert status == 404, body
        error = json.loads(body)["error"]
        assert f"{url}/{names['tfrecord']}" in error
        _no_secret(seaweed, body)
    tfrecord = names["tfrecord"]
    store.write_atomic(f"{dst}/{tfrecord}", store.read(f"{src}/{tfrecord}"))
    coords = f"{dst}/{names['coords']}"
    store.write_atomic(coords, store.read(coords) + b"0,0,0,0\n")
    caplog.set_level(logging.WARNING)
    for srv in _serve(url, seaweed.storage_options):
        (summary,) = _json(srv, "/api/slides")["slides"]
        assert summary["stale"] and "coords" in summary["stale"]
        assert not summary["has_tfrecord"] and summary["preview"] is None
        assert _json(srv, f"/api/grid?id={SLIDE}")["kept"] == []
        status, _, _ = request(srv, f"/files/previews/{SLIDE}.jpg")
        assert status == 404
    assert "stale" in caplog.text
    _no_secret_logged(seaweed, caplog)


def test_a_missing_object_is_a_clear_error(
    bucket: str, seaweed: SeaweedServer, slide_url: str
) -> None:
    url = f"s3://{bucket}/slides/no-such-slide.svs"
    with pytest.raises(SlideNotFoundError) as info:
        Catalog.from_path(url, storage_options=seaweed.storage_options)
    assert url in str(info.value)
    _no_secret(seaweed, str(info.value))
    wrong = {**seaweed.storage_options, "secret": "not-the-secret-" + "x" * 20}
    with pytest.raises(StorageError) as bad:
        Catalog.from_path(slide_url, storage_options=wrong)
    assert "not-the-secret" not in str(bad.value) and slide_url in str(bad.value)


def test_cli_view_of_a_bucket_with_storage_options(
    slide_url: str, seaweed: SeaweedServer, bucket: str
) -> None:
    opts = seaweed.storage_options
    args = [f"--storage-option={k}={v}" for k, v in opts.items() if isinstance(v, str)]
    args.append("--storage-option=client_kwargs.region_name=us-east-1")
    missing = subprocess.run(
        [sys.executable, "-m", "tilestream", "view", f"s3://{bucket}/slides/nope.svs", *args],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert missing.returncode != 0
    assert f"s3://{bucket}/slides/nope.svs" in missing.stderr + missing.stdout
    _no_secret(seaweed, missing.stderr, missing.stdout)


def test_an_https_slide_and_an_roi_beside_a_slide_object(
    slide_url: str,
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    local_slide_server: ViewerServer,
) -> None:
    """The filer's HTTP URL of the slide object (ranged GETs, no options) gives the same
    tiles; an ROI object beside the slide object is found and drawn."""
    https_url = f"{seaweed.filer_url}/buckets/{bucket}/slides/{SLIDE}.svs"
    for srv in _serve(https_url):
        for tile in DZ_TILES[:3]:
            body = _get(srv, f"/dz/{SLIDE}_files/{tile}.jpeg")
            assert body == _get(local_slide_server, f"/dz/{SLIDE}_files/{tile}.jpeg"), tile
    ring = [[100, 100], [900, 100], [900, 700], [100, 700], [100, 100]]
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"name": "tumour", "classification": {"name": "Tumor"}},
            }
        ],
    }
    store.write_atomic(f"slides/{SLIDE}.geojson", json.dumps(geojson).encode())
    try:
        for srv in _serve(slide_url, seaweed.storage_options):
            rois = _json(srv, f"/api/rois?id={SLIDE}")
            assert rois["file"] == f"{SLIDE}.geojson"
            (roi,) = rois["rois"]
            assert roi["exterior"][:4] == ring[:4]
            assert _json(srv, f"/api/slide?id={SLIDE}")["roi_file"] == f"{SLIDE}.geojson"
    finally:
        store.delete(f"slides/{SLIDE}.geojson")


def test_a_folder_in_a_bucket_is_refused_with_the_reason(
    slide_url: str, bucket: str, seaweed: SeaweedServer
) -> None:
    with pytest.raises(ConfigError, match="folder of slides or of run folders") as info:
        Catalog.from_path(f"s3://{bucket}/slides", storage_options=seaweed.storage_options)
    assert f"s3://{bucket}/slides" in str(info.value)


def test_cli_serves_a_run_folder_in_a_bucket(remote_run: str, seaweed: SeaweedServer) -> None:
    args = [f"--storage-option={k}={v}" for k, v in seaweed.storage_options.items()
            if isinstance(v, str)]  # fmt: skip
    args.append("--storage-option=client_kwargs.region_name=us-east-1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tilestream", "view", remote_run, "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        url, seen = _read_url(proc)
        assert f"1 slide from {remote_run}" in seen
        with urllib.request.urlopen(url + "api/slides", timeout=120) as resp:
            body = resp.read()
        (summary,) = json.loads(body)["slides"]
        assert summary["name"] == SLIDE and summary["stale"] is None and summary["has_tfrecord"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        _no_secret(seaweed, body, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_bucket_run_whose_slide_is_not_here_shows_its_outputs(
    remote_run: str, seaweed: SeaweedServer, store: Store
) -> None:
    """The slide's recorded path is not on this computer (extracted elsewhere): the page
    says so, and the preview, grid and stored tiles still come from the objects."""
    src = remote_run.split("/", 3)[3]
    dst = f"elsewhere/{LABEL}"
    for key in store.list(src):
        store.write_atomic(dst + key[len(src) :], store.read(key))
    state_key = f"{dst}/{slide_output_names(SLIDE)['state']}"
    state = json.loads(store.read(state_key))
    state["path"] = f"/no/such/folder/{SLIDE}.svs"
    store.write_atomic(state_key, json.dumps(state).encode())
    for srv in _serve(remote_run.replace(src, dst), seaweed.storage_options):
        (summary,) = _json(srv, "/api/slides")["slides"]
        assert summary["stale"] is None and not summary["has_slide"]
        meta = _json(srv, f"/api/slide?id={SLIDE}")
        assert meta["slide_error"] == f"slide file not found: {SLIDE}.svs"
        assert _get(srv, f"/api/thumbnail?id={SLIDE}")[:2] == b"\xff\xd8"  # from the preview
        assert len(_json(srv, f"/api/grid?id={SLIDE}")["kept"]) > 5
        tile = _json(srv, f"/api/mosaic?id={SLIDE}&n=1")["tiles"][0]["image"]
        assert _get(srv, tile)[:2] == b"\xff\xd8"
        status, _, body = request(srv, f"/dz/{SLIDE}_files/8/0_0.jpeg")
        assert status == 404 and b"not found" in body
