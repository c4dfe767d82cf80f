"""The viewer over a bucket, in headless Chromium: slide and run folder both in SeaweedFS.

``CMU-1-Small-Region.svs`` is uploaded to a bucket and extracted from there into
the bucket (its state records the slide's ``s3://`` URL); the viewer is given the
run folder's URL and the storage options: the dataset page lists the slide, the
slide page loads Deep Zoom tiles read by ranges from the slide object, the grid
overlay comes from the coordinates object, a clicked kept tile shows its stored
image from the TFRecord object, and the mosaic page fills. No page holds a key.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from tilestream.extract import extract_slides
from tilestream.runfolder import slide_output_keys
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.viewer import ViewerServer
from viewer.test_viewer_browser import _kept_green_and_red, browser  # noqa: F401 (a fixture)

SLIDE = "CMU-1-Small-Region"
LABEL = "256px_128um"

pytestmark = [pytest.mark.testdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def remote_run(slides_dir: Path, seaweed: SeaweedServer) -> tuple[str, list[dict[str, str]]]:
    bucket = seaweed.make_bucket("rview-browser")
    store = store_for(f"s3://{bucket}", seaweed.storage_options)[0]
    store.write_atomic(f"slides/{SLIDE}.svs", (slides_dir / f"{SLIDE}.svs").read_bytes())
    run = extract_slides(
        [f"s3://{bucket}/slides/{SLIDE}.svs"], f"s3://{bucket}/out", workers=1,
        storage_options=seaweed.storage_options, tile_px=256, tile_um=128,
    )  # fmt: skip
    assert run.done == 1
    coords = store.read(slide_output_keys(f"out/{LABEL}", SLIDE)["coords"]).decode()
    return f"s3://{bucket}/out/{LABEL}", list(csv.DictReader(io.StringIO(coords)))


def test_remote_run_in_headless_chromium(
    browser: Any,  # noqa: F811
    remote_run: tuple[str, list[dict[str, str]]],
    seaweed: SeaweedServer,
    tmp_path: Path,
) -> None:
    url, kept = remote_run
    errors: list[str] = []
    pages: list[str] = []
    with ViewerServer(url, port=0, storage_options=seaweed.storage_options) as server:
        server.start()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(60_000)

        page.goto(server.url)
        row = page.locator(f'#slides tbody tr[data-id="{SLIDE}"]')
        row.wait_for()
        assert "done" in row.inner_text() and str(len(kept)) in row.inner_text()
        pages.append(page.content())

        row.locator("a[href^='/slide.html']").click()
        page.wait_for_url("**/slide.html?id=*")
        page.wait_for_function(
            "() => window.tsState && window.tsState.viewer && window.tsState.tilesLoaded > 0"
            " && window.tsState.viewer.world.getItemCount() === 1"
            " && window.tsState.viewer.world.getItemAt(0).getFullyLoaded()"
        )
        assert page.evaluate("window.tsState.tilesLoaded") >= 4
        assert "2220 \u00d7 2967" in page.locator("#meta").inner_text()
        page.check("#toggle-grid")
        on = _kept_green_and_red(page)
        assert on["green"] > 1000 and on["red"] > 1000, on

        tile = kept[len(kept) // 2]
        cx = int(tile["x"]) + int(tile["width"]) / 2
        cy = int(tile["y"]) + int(tile["height"]) / 2
        point = page.evaluate(
            """([x, y]) => {
                const v = window.tsState.viewer;
                const p = v.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
                const r = v.container.getBoundingClientRect();
                return [r.left + p.x, r.top + p.y];
            }""",
            [cx, cy],
        )
        page.mouse.click(point[0], point[1])
        page.wait_for_function(
            "() => { const i = document.getElementById('tile-image');"
            " return i && !i.hidden && i.complete && i.naturalWidth > 0; }"
        )
        src = page.evaluate("() => document.getElementById('tile-image').getAttribute('src')")
        assert f"x={tile['loc_x']}&y={tile['loc_y']}" in src
        pages.append(page.content())
        page.screenshot(path=str(tmp_path / "slide.png"))

        page.goto(server.url + f"mosaic.html?id={SLIDE}")
        page.wait_for_function(
            f"() => {{ const imgs = [...document.querySelectorAll('#mosaic img')];"
            f" return imgs.length === {min(64, len(kept))}"
            " && imgs.every(i => i.complete && i.naturalWidth === 256); }"
        )
        pages.append(page.content())
        page.close()

    assert not errors, errors
    for html in pages:
        assert seaweed.secret_key not in html and seaweed.access_key not in html
