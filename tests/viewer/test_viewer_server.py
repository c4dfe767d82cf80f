"""The viewer's HTTP server, through a real HTTP client, on a real extraction of a real slide."""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import json
import random
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import openslide.deepzoom
import pytest
from PIL import Image

from tilestream.slide import Slide, open_slide
from tilestream.tfrecord import TFRecord
from tilestream.viewer import SlidePool, TileRenderer, ViewerServer

SLIDE = "CMU-1-Small-Region"

pytestmark = pytest.mark.testdata


def fetch(
    server: ViewerServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(server: ViewerServer, path: str) -> Any:
    status, headers, body = fetch(server, path)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def kept_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / f"{SLIDE}.coords.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# -- dataset and metadata -----------------------------------------------------------


def test_dataset_lists_slides_with_counts_status_and_failures(
    server: ViewerServer, run_dir: Path
) -> None:
    data = get_json(server, "/api/slides")
    assert data["mode"] == "runs"
    slides = {s["name"]: s for s in data["slides"]}
    assert set(slides) == {SLIDE, "histolab-broken"}
    ok = slides[SLIDE]
    state = json.loads((run_dir / "state" / f"{SLIDE}.json").read_text())
    assert ok["status"] == "done"
    assert ok["tiles"] == len(kept_rows(run_dir)) == state["tiles"]
    assert ok["grid"] == state["grid"]
    assert ok["rejected"] == state["rejected"]
    assert ok["has_tfrecord"] and ok["has_grid"] and ok["has_slide"]
    bad = slides["histolab-broken"]
    assert bad["status"] == "failed"
    assert bad["error"] and bad["error_type"]
    assert not bad["has_tfrecord"]
    # the thumbnail and the extraction's preview (a file under the served folder)
    status, headers, body = fetch(server, f"/api/thumbnail?id={SLIDE}")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(body)).size) == 256
    status, headers, body = fetch(server, "/files/" + ok["preview"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert body == (run_dir / "previews" / f"{SLIDE}.jpg").read_bytes()


def test_metadata_panel_data(server: ViewerServer, slides_dir: Path) -> None:
    meta = get_json(server, f"/api/slide?id={SLIDE}")
    with openslide.OpenSlide(slides_dir / f"{SLIDE}.svs") as ref:
        assert meta["dimensions"] == list(ref.dimensions)
        assert [lv["dimensions"] for lv in meta["levels"]] == [
            list(d) for d in ref.level_dimensions
        ]
        assert meta["mpp"] == pytest.approx([float(ref.properties["openslide.mpp-x"])] * 2)
        assert meta["objective_power"] == 20
        assert set(meta["associated"]) >= {"label", "macro"}
        assert meta["properties"]["aperio.AppMag"] == ref.properties["aperio.AppMag"]
        label = ref.associated_images["label"]
    status, headers, body = fetch(server, f"/api/associated?id={SLIDE}&name=label")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(body)).convert("RGB")
    assert shown.size == label.size
    diff = np.abs(np.asarray(shown, float) - np.asarray(label.convert("RGB"), float))
    assert diff.mean() < 4
    assert fetch(server, f"/api/associated?id={SLIDE}&name=nope")[0] == 404
    assert meta["dz"]["url"] == f"/dz/{SLIDE}.dzi"


def test_failed_slide_metadata_is_an_error_message_not_a_traceback(server: ViewerServer) -> None:
    meta = get_json(server, "/api/slide?id=histolab-broken")
    assert meta["status"] == "failed" and meta["error"]
    assert "histolab-broken.svs" in meta["slide_error"] and "dz" not in meta
    status, _, body = fetch(server, "/dz/histolab-broken_files/0/0_0.jpeg")
    assert status == 500
    error = json.loads(body)["error"]
    assert "histolab-broken.svs" in error and "Traceback" not in error


# -- Deep Zoom ------------------------------------------------------------------------


def _openslide_box(
    ref: openslide.OpenSlide, level0: tuple[int, int], k: int, size: tuple[int, int]
) -> Any:
    # OpenSlide's level-0 pixels of the region, over white, box-reduced k times
    region = ref.read_region(level0, 0, (size[0] * k, size[1] * k))
    rgb = Image.new("RGB", region.size, "white")
    rgb.paste(region, None, region)
    return np.asarray(rgb.reduce(k) if k > 1 else rgb, float)


def test_dzi_and_tiles_match_openslide(server: ViewerServer, slides_dir: Path) -> None:
    status, _, body = fetch(server, f"/dz/{SLIDE}.dzi")
    assert status == 200
    root = ET.fromstring(body)
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    size = root.find(f"{ns}Size")
    assert size is not None
    assert (int(size.get("Width", 0)), int(size.get("Height", 0))) == (2220, 2967)
    assert root.get("TileSize") == "254" and root.get("Overlap") == "1"
    renderer = server.app.renderer(server.app.entry(SLIDE))
    with openslide.OpenSlide(slides_dir / f"{SLIDE}.svs") as ref:
        dz = openslide.deepzoom.DeepZoomGenerator(ref, 254, 1)
        assert dz.level_count == renderer.level_count == 13
        assert dz.level_tiles == renderer.level_tiles
        checked = 0
        for level in (12, 11, 10, 9, 8):
            cols, rows = dz.level_tiles[level]
            k = 2 ** (12 - level)
            for col, row in sorted({(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}):
                status, headers, body = fetch(server, f"/dz/{SLIDE}_files/{level}/{col}_{row}.jpeg")
                assert status == 200 and headers["content-type"] == "image/jpeg"
                served = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), float)
                pixels = renderer.tile_array(level, col, row).astype(float)
                # the geometry is openslide.deepzoom's: the same tile sizes
                assert pixels.shape[:2][::-1] == dz.get_tile_dimensions(level, (col, row))
                x0, y0 = (max(0, t * 254 - 1) for t in (col, row))
                reference = _openslide_box(ref, (x0 * k, y0 * k), k, pixels.shape[:2][::-1])
                diff = np.abs(pixels - reference)
                if level == 12:  # read 1:1: OpenSlide's pixels exactly, and its generator's
                    assert diff.max() == 0
                    theirs = np.asarray(dz.get_tile(level, (col, row)), float)
                    assert np.array_equal(pixels, theirs)
                elif col < cols - 1 and row < rows - 1:  # box reductions of OpenSlide's pixels
                    assert diff.max() <= (0 if level == 11 else 1), (level, col, row)
                else:  # odd edges are padded by repetition, not background
                    assert diff.mean() < 2, (level, col, row)
                # the JPEG encoding (quality 80) of those pixels
                assert np.abs(served - pixels).mean() < 8, (level, col, row)
                checked += 1
    assert checked == 12


def test_tiles_have_caching_headers_and_revalidate(server: ViewerServer) -> None:
    path = f"/dz/{SLIDE}_files/12/1_1.jpeg"
    status, headers, body = fetch(server, path)
    assert status == 200
    assert "max-age=" in headers["cache-control"]
    etag = headers["etag"]
    status, headers2, body2 = fetch(server, path, {"If-None-Match": etag})
    assert status == 304 and body2 == b"" and headers2["etag"] == etag
    status, _, body3 = fetch(server, path)
    assert status == 200 and body3 == body
    # static assets are cacheable too
    status, headers, _ = fetch(server, "/static/openseadragon/openseadragon.min.js")
    assert status == 200 and "max-age=" in headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    [
        f"/dz/{SLIDE}_files/13/0_0.jpeg",  # no such level
        f"/dz/{SLIDE}_files/12/9_0.jpeg",  # column past the edge (9 x 12 tiles)
        f"/dz/{SLIDE}_files/12/0_12.jpeg",
        f"/dz/{SLIDE}_files/12/-1_0.jpeg",
        f"/dz/{SLIDE}_files/12/a_b.jpeg",
        f"/dz/{SLIDE}_files/12/0_0.png",
        f"/dz/{SLIDE}_files/99999999999999999999/0_0.jpeg",
        f"/dz/{SLIDE}_files/12/0_0",
        "/dz/no-such-slide_files/12/0_0.jpeg",
        "/dz/no-such-slide.dzi",
        "/api/slide?id=no-such-slide",
        f"/api/record?id={SLIDE}&x=1&y=1",  # no stored tile there
        "/api/nothing",
        "/nothing.html",
    ],
)
def test_bad_tiles_and_unknown_things_are_404(server: ViewerServer, path: str) -> None:
    status, headers, body = fetch(server, path)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert "error" in json.loads(body)
    assert b"Traceback" not in body


def test_bad_parameters_are_400(server: ViewerServer) -> None:
    status, _, body = fetch(server, f"/api/tile_at?id={SLIDE}&x=left&y=3")
    assert status == 400 and "x" in json.loads(body)["error"]
    assert fetch(server, f"/api/tile_at?id={SLIDE}&y=3")[0] == 400


def test_concurrent_tile_requests_give_the_same_bytes_as_one_thread(
    run_root: Path, slides_dir: Path
) -> None:
    # Without the encoded-tile cache, every request reads the slide: 12 threads over
    # 4 handles at once. Each tile must come out exactly as rendered alone.
    reference = TileRenderer(SlidePool(slides_dir / f"{SLIDE}.svs", 1))
    wanted = [(lv, c, r) for lv in (9, 10, 11, 12)
              for c in range(reference.level_tiles[lv][0])
              for r in range(reference.level_tiles[lv][1])]  # fmt: skip
    expected = {t: reference.tile(*t) for t in wanted}
    with ViewerServer(run_root, port=0) as srv:
        srv.app.tiles.max_bytes = 0  # nothing cached
        srv.start()
        results: dict[tuple[int, int, int], list[bytes]] = {t: [] for t in wanted}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker(seed: int) -> None:
            order = list(wanted)
            random.Random(seed).shuffle(order)
            host, port = srv.address
            conn = http.client.HTTPConnection(host, port, timeout=60)
            try:
                for lv, c, r in order:
                    conn.request("GET", f"/dz/{SLIDE}_files/{lv}/{c}_{r}.jpeg")
                    resp = conn.getresponse()
                    body = resp.read()
                    assert resp.status == 200, body
                    with lock:
                        results[(lv, c, r)].append(body)
            except BaseException as exc:
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        pool = srv.app._pools[SLIDE]
        assert 1 <= pool.opened <= srv.app.handles_per_slide
    for tile, bodies in results.items():
        assert len(bodies) == 12
        assert all(b == expected[tile] for b in bodies), tile


# -- tiles of the extraction ----------------------------------------------------------


def test_clicked_tile_gives_values_and_the_stored_image(
    server: ViewerServer, run_dir: Path
) -> None:
    rows = kept_rows(run_dir)
    row = rows[len(rows) // 2]
    x, y, w = int(row["x"]), int(row["y"]), int(row["width"])
    hit = get_json(server, f"/api/tile_at?id={SLIDE}&x={x + w // 2}&y={y + w // 3}")
    assert hit["status"] == "kept"
    assert (hit["x"], hit["y"], hit["loc_x"], hit["loc_y"]) == (
        x, y, int(row["loc_x"]), int(row["loc_y"]),
    )  # fmt: skip
    assert hit["record"] == int(row["record"])
    assert hit["tissue"] == pytest.approx(float(row["tissue"]))
    assert hit["grayspace"] == pytest.approx(float(row["grayspace"]))
    status, headers, body = fetch(server, hit["image"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    with TFRecord(run_dir / f"{SLIDE}.tfrecords") as tfr:
        _, stored = tfr.get_record_by_xy(hit["loc_x"], hit["loc_y"])
    assert body == stored
    assert Image.open(io.BytesIO(body)).size == (256, 256)
    # a rejected tile and a point outside the grid
    with (run_dir / "state" / f"{SLIDE}.rejected.csv").open(newline="") as f:
        rejected = next(csv.DictReader(f))
    hit = get_json(server, f"/api/tile_at?id={SLIDE}&x={rejected['x']}&y={rejected['y']}")
    assert hit["status"] == "rejected" and hit["reason"] == rejected["reason"]
    assert "image" not in hit
    assert get_json(server, f"/api/tile_at?id={SLIDE}&x=-5&y=-5")["status"] == "none"


def test_grid_has_kept_and_rejected_tiles(server: ViewerServer, run_dir: Path) -> None:
    grid = get_json(server, f"/api/grid?id={SLIDE}")
    state = json.loads((run_dir / "state" / f"{SLIDE}.json").read_text())
    assert len(grid["kept"]) == state["tiles"]
    assert len(grid["rejected"]) == sum(state["rejected"].values())
    assert len(grid["kept"]) + len(grid["rejected"]) == state["grid"]
    assert grid["tile_w"] == 256  # 128 um at 0.499 um/px: 256.5 px, snapped to 256 native px
    kept = {(x, y) for x, y, _, _ in grid["kept"]}
    assert not kept & {(x, y) for x, y, _ in grid["rejected"]}


def test_mosaic_samples_stored_tiles(server: ViewerServer, run_dir: Path) -> None:
    locations = {(int(r["loc_x"]), int(r["loc_y"])) for r in kept_rows(run_dir)}
    mosaic = get_json(server, f"/api/mosaic?id={SLIDE}&n=10&seed=3")
    picked = {(t["loc_x"], t["loc_y"]) for t in mosaic["tiles"]}
    assert len(picked) == 10 and picked <= locations
    assert mosaic == get_json(server, f"/api/mosaic?id={SLIDE}&n=10&seed=3")
    assert mosaic != get_json(server, f"/api/mosaic?id={SLIDE}&n=10&seed=4")
    everything = get_json(server, f"/api/mosaic?id={SLIDE}&n=500")
    assert {(t["loc_x"], t["loc_y"]) for t in everything["tiles"]} == locations
    status, _headers, body = fetch(server, mosaic["tiles"][0]["image"])
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert fetch(server, "/api/mosaic?id=histolab-broken")[0] == 404


def test_tissue_outline_overlay(server: ViewerServer) -> None:
    status, headers, body = fetch(server, f"/api/tissue.png?id={SLIDE}")
    assert status == 200 and headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(body))
    assert image.mode == "RGBA"
    w, h = image.size
    assert max(w, h) >= 1000 and abs(w / h - 2220 / 2967) < 0.01
    alpha = np.asarray(image)[..., 3] > 0
    # an outline: some pixels, far fewer than the tissue itself covers
    assert 0.002 < alpha.mean() < 0.2


def test_rois_from_geojson_and_errors_named(run_root: Path, tmp_path: Path) -> None:
    rois = tmp_path / "rois"
    rois.mkdir()
    square = [[1000, 800], [1600, 800], [1600, 1500], [1000, 1500], [1000, 800]]
    feature = {"type": "Feature", "properties": {"name": "tumour"},
               "geometry": {"type": "Polygon", "coordinates": [square]}}  # fmt: skip
    (rois / f"{SLIDE}.geojson").write_text(json.dumps(feature))
    (rois / "histolab-broken.csv").write_text("ROI_name,X_base,Y_base\na,1,1\n")
    with ViewerServer(run_root, port=0, roi_dir=rois) as srv:
        srv.start()
        slides = {s["name"]: s for s in get_json(srv, "/api/slides")["slides"]}
        assert slides[SLIDE]["has_roi"]
        data = get_json(srv, f"/api/rois?id={SLIDE}")
        assert data["file"] == f"{SLIDE}.geojson"
        assert len(data["rois"]) == 1
        assert data["rois"][0]["exterior"][:4] == square[:4]
        status, _, body = fetch(srv, "/api/rois?id=histolab-broken")
        assert status == 500
        assert "histolab-broken.csv" in json.loads(body)["error"]
    with ViewerServer(run_root, port=0) as srv:
        srv.start()
        assert get_json(srv, f"/api/rois?id={SLIDE}") == {"file": None, "rois": []}


# -- safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../../../etc/passwd",
        "/files/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/files/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/files/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/files/256px_128um/../../../etc/passwd",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/..%5c..%5cetc%5cpasswd",
        "/files/a%00b",
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/openseadragon/%2e%2e/%2e%2e/server.py",
        "/files/link-out.txt",  # symlink to a file outside the served folder
        "/files/dir-out/secret.txt",  # symlinked folder leading outside
    ],
)
def test_paths_outside_the_served_folder_are_refused(
    server: ViewerServer, run_root: Path, tmp_path_factory: pytest.TempPathFactory, path: str
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.txt"
    secret.write_text("top secret")
    for name, target in (("link-out.txt", secret), ("dir-out", outside)):
        link = run_root / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    status, _, body = fetch(server, path)
    assert status == 403, (status, body)
    assert b"top secret" not in body and b"root:" not in body


def test_previews_inside_the_served_folder_are_served(server: ViewerServer, run_dir: Path) -> None:
    (preview,) = (run_dir / "previews").glob("*.jpg")
    status, _, body = fetch(server, f"/files/{run_dir.name}/previews/{preview.name}")
    assert status == 200 and body == preview.read_bytes()
    assert fetch(server, f"/files/{run_dir.name}/config.json")[0] == 404  # not a preview
    assert fetch(server, f"/files/{run_dir.name}/nope.json")[0] == 404
    status, _headers, body = fetch(server, "/static/openseadragon/LICENSE.txt")
    assert status == 200 and b"OpenSeadragon" in body


def test_the_library_never_prints(server: ViewerServer, capfd: pytest.CaptureFixture[str]) -> None:
    for path in ["/", f"/dz/{SLIDE}_files/12/0_0.jpeg", "/dz/x_files/1/1_1.jpeg",
                 "/files/../x", "/api/tile_at?id=x", f"/api/tile_at?id={SLIDE}&x=a&y=b"]:  # fmt: skip
        fetch(server, path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- other kinds of PATH --------------------------------------------------------------


def test_single_slide_and_folder_of_slides(slides_dir: Path) -> None:
    with ViewerServer(slides_dir / f"{SLIDE}.svs", port=0) as srv:
        srv.start()
        data = get_json(srv, "/api/slides")
        assert data["mode"] == "slide" and [s["id"] for s in data["slides"]] == [SLIDE]
        assert fetch(srv, f"/dz/{SLIDE}_files/12/0_0.jpeg")[0] == 200
        assert fetch(srv, "/files/CMU-1-Small-Region.svs")[0] == 404  # no folder served
        assert get_json(srv, f"/api/grid?id={SLIDE}") == {
            "tile_w": None,
            "kept": [],
            "rejected": [],
        }
    with ViewerServer(slides_dir, port=0) as srv:
        srv.start()
        ids = {s["id"] for s in get_json(srv, "/api/slides")["slides"]}
        assert {SLIDE, "tcga-cr-7395-01a-01-ts1", "kidney-48-5"} <= ids
        meta = get_json(srv, "/api/slide?id=openslide-python-unopenable")
        assert "openslide-python-unopenable.tiff" in meta["slide_error"]
        assert get_json(srv, "/api/slide?id=kidney-48-5")["dimensions"]


def test_only_recent_slides_hold_handles_even_under_concurrent_requests(slides_dir: Path) -> None:
    names = ["CMU-1-Small-Region", "tcga-cr-7395-01a-01-ts1", "kidney-48-5",
             "openslide-python-boxes", "openslide-python-small"]  # fmt: skip
    with ViewerServer(slides_dir, port=0) as srv:
        srv.app.open_slides = 2
        srv.start()
        first_pool = None
        for name in names:
            assert fetch(srv, f"/dz/{name}.dzi")[0] == 200
            assert fetch(srv, f"/dz/{name}_files/1/0_0.jpeg")[0] == 200
            if first_pool is None:
                first_pool = srv.app._pools[name]
            assert len(srv.app.open_slide_ids) <= 2
        assert srv.app.open_slide_ids == names[-2:]
        assert first_pool is not None and first_pool.opened == 0  # released
        # many threads over more slides than may stay open: every answer right
        srv.app.open_slides = 1
        srv.app.tiles.max_bytes = 0
        statuses: list[int] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            for j in range(6):
                name = names[(i + j) % len(names)]
                status = fetch(srv, f"/dz/{name}_files/4/0_0.jpeg")[0]  # every slide has level 4
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 48
        assert len(srv.app.open_slide_ids) == 1


def test_loopback_server_refuses_foreign_host_headers(server: ViewerServer) -> None:
    port = server.address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert fetch(server, "/api/slides", {"Host": host})[0] == 200
    for host in ("evil.example:80", f"evil.example:{port}", "127.0.0.1.evil.example"):
        status, _, body = fetch(server, "/api/slides", {"Host": host})
        assert status == 403 and b"Host" in body


def _slide_layer_tile(
    renderer: TileRenderer, slide: Slide, level: int, col: int, row: int, scaled: bool
) -> Any:
    # The slide layer's reduced read of the region Deep Zoom tile (col, row) of level covers,
    # None when that region is not an integer multiple of the tile.
    location, slide_level, size = renderer.dz.get_tile_coordinates(level, (col, row))
    tw, th = renderer.dz.get_tile_dimensions(level, (col, row))
    k = size[0] // tw
    if k < 2 or size != (k * tw, k * th):
        return None
    return slide.read_region_reduced(location, slide_level, (tw, th), k, scaled_decoding=scaled)


def test_reduced_tiles_decoded_at_scale_match_openslide(slides_dir: Path) -> None:
    # Every level read per tile (no whole-level images): 2x, 4x and 8x reductions of
    # CMU's stored JPEG tiles decoded at that scale, against box reductions of
    # OpenSlide's pixels; without scaled decoding, those box reductions exactly.
    path = slides_dir / f"{SLIDE}.svs"
    renderer = TileRenderer(SlidePool(path), level_image_pixels=0)
    exact = TileRenderer(SlidePool(path), level_image_pixels=0, scaled_decoding=False)
    scaled_differs = False
    with openslide.OpenSlide(path) as ref:
        for level, k in ((11, 2), (10, 4), (9, 8)):
            cols, rows = renderer.level_tiles[level]
            for col, row in [(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)]:
                pixels = renderer.tile_array(level, col, row).astype(float)
                x0, y0 = (max(0, t * 254 - 1) for t in (col, row))
                reference = _openslide_box(ref, (x0 * k, y0 * k), k, pixels.shape[:2][::-1])
                diff = np.abs(pixels - reference)
                assert diff.mean() < (0.5 if col < cols - 1 else 2), (level, col, row)
                box = exact.tile_array(level, col, row).astype(float)
                if col < cols - 1 and row < rows - 1:
                    assert np.array_equal(box, reference), (level, col, row)
                    scaled_differs |= bool(diff.max() > 0)
    assert scaled_differs  # the scaled decoding was used: not the exact box mean


@pytest.mark.parametrize(
    ("name", "scaled"),
    [(f"{SLIDE}.svs", True), (f"{SLIDE}.svs", False), ("tcga-cr-7395-01a-01-ts1.svs", True)],
)
def test_reduced_tiles_are_the_slide_layers_reduced_reads(
    slides_dir: Path, name: str, scaled: bool
) -> None:
    # A tile reduced by an integer factor is the slide layer's reduced read of its region,
    # pixel for pixel (CMU: stored JPEG tiles, decoded at scale or box-reduced; TCGA:
    # JPEG 2000, box-reduced whatever is asked).
    renderer = TileRenderer(SlidePool(slides_dir / name), level_image_pixels=0,
                            scaled_decoding=scaled)  # fmt: skip
    checked = 0
    with open_slide(slides_dir / name) as slide:
        for level in range(renderer.level_count - 4, renderer.level_count):
            cols, rows = renderer.level_tiles[level]
            for col, row in itertools.product(range(cols), range(rows)):
                expected = _slide_layer_tile(renderer, slide, level, col, row, scaled)
                if expected is None:
                    continue
                got = renderer.tile_array(level, col, row)
                assert np.array_equal(got, expected), (level, col, row)
                checked += 1
    assert checked >= 30
