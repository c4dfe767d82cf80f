"""End to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

The viewer is opened on a real extraction of ``CMU-1-Small-Region.svs``: the
dataset page, the slide page (Deep Zoom tiles load, the grid overlay is toggled,
a kept tile is clicked and its stored image appears) and the mosaic page. A
screenshot of each page is saved under the test's temporary folder.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import missing  # tests/conftest.py: skip here, fail under CI=true
from tilestream.extract import extract_tiles
from tilestream.viewer import ViewerServer

SLIDE = "CMU-1-Small-Region"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.testdata, pytest.mark.slow]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if found:
            return found
    missing("Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright's driver over the system's browser)."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
        raise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _kept_green_and_red(page: Any) -> dict[str, int]:
    # Count overlay pixels drawn in the kept (green) and rejected (red) colours.
    return page.evaluate(
        """() => {
            const c = document.getElementById("overlay");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let green = 0, red = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i + 3] < 100) continue;
                if (d[i + 1] > 120 && d[i] < 60 && d[i + 2] < 110) green++;
                if (d[i] > 180 && d[i + 1] < 80 && d[i + 2] < 80) red++;
            }
            return { green, red };
        }"""
    )


def _tissue_outline_blue(page: Any) -> int:
    # Count overlay pixels drawn in the QC tissue outline colour (40, 90, 255).
    return int(
        page.evaluate(
            """() => {
                const c = document.getElementById("overlay");
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (d[i + 3] > 100 && d[i + 2] > 200 && d[i] < 90 && d[i + 1] < 140) n++;
                }
                return n;
            }"""
        )
    )


def test_viewer_in_headless_chromium(browser: Any, slides_dir: Path, tmp_path: Path) -> None:
    result = extract_tiles(slides_dir / f"{SLIDE}.svs", tmp_path / "out", tile_px=256, tile_um=128)
    assert result.status == "done" and result.tiles > 10
    run_dir = tmp_path / "out" / "256px_128um"
    with (run_dir / f"{SLIDE}.coords.csv").open(newline="") as f:
        kept = list(csv.DictReader(f))

    errors: list[str] = []
    with ViewerServer(tmp_path / "out", port=0) as server:
        server.start()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(60_000)

        # -- the dataset page --------------------------------------------------
        page.goto(server.url)
        row = page.locator(f'#slides tbody tr[data-id="{SLIDE}"]')
        row.wait_for()
        assert "done" in row.inner_text() and str(result.tiles) in row.inner_text()
        page.wait_for_function(
            "() => { const i = document.querySelector('img.thumb');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        page.screenshot(path=str(tmp_path / "dataset.png"))

        # -- the slide page: Deep Zoom tiles load ------------------------------
        row.locator("a[href^='/slide.html']").click()
        page.wait_for_url("**/slide.html?id=*")
        page.wait_for_function(
            "() => window.tsState && window.tsState.viewer && window.tsState.tilesLoaded > 0"
            " && window.tsState.viewer.world.getItemCount() === 1"
            " && window.tsState.viewer.world.getItemAt(0).getFullyLoaded()"
        )
        assert page.evaluate("window.tsState.tilesLoaded") >= 4
        assert "2220 \u00d7 2967" in page.locator("#meta").inner_text()
        assert page.locator("#associated img[data-name='label']").count() == 1

        # -- toggle the grid overlay on and off and on --------------------------
        assert _kept_green_and_red(page) == {"green": 0, "red": 0}
        page.check("#toggle-grid")
        on = _kept_green_and_red(page)
        assert on["green"] > 1000 and on["red"] > 1000, on
        page.uncheck("#toggle-grid")
        assert _kept_green_and_red(page) == {"green": 0, "red": 0}
        page.check("#toggle-grid")
        page.check("#toggle-tissue")

        # -- the QC panel: areas in mm², tiles rejected per reason, outlines ----
        page.locator("#qc-panel").wait_for(state="visible")
        qc_text = page.locator("#qc-panel").inner_text()
        assert "tissue" in qc_text and "mm²" in qc_text and f"{SLIDE}.geojson" in qc_text
        for reason, n in result.rejected.items():
            assert f"{reason}\t{n}" in qc_text, (reason, qc_text)
        assert _tissue_outline_blue(page) == 0
        page.check("#toggle-qc")
        assert _tissue_outline_blue(page) > 500
        page.screenshot(path=str(tmp_path / "qc.png"))

        # -- click the middle of a kept tile: its stored image appears ---------
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
        image = page.evaluate(
            "() => { const i = document.getElementById('tile-image');"
            " return [i.naturalWidth, i.naturalHeight, i.getAttribute('src')]; }"
        )
        assert image[:2] == [256, 256]
        assert f"x={tile['loc_x']}&y={tile['loc_y']}" in image[2]
        info = page.locator("#tile-info").inner_text()
        assert "kept" in info and f"{tile['loc_x']}, {tile['loc_y']}" in info
        assert f"{float(tile['tissue']):.3f}" in info
        page.screenshot(path=str(tmp_path / "slide.png"))

        # -- the mosaic page: tiles straight from the TFRecord -----------------
        page.goto(server.url + f"mosaic.html?id={SLIDE}")
        page.wait_for_function(
            f"() => {{ const imgs = [...document.querySelectorAll('#mosaic img')];"
            f" return imgs.length === {min(64, result.tiles)}"
            " && imgs.every(i => i.complete && i.naturalWidth === 256); }"
        )
        page.screenshot(path=str(tmp_path / "mosaic.png"))
        page.close()

    assert not errors, errors
    for name in ("dataset.png", "qc.png", "slide.png", "mosaic.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_token_login_and_stale_slides_in_headless_chromium(
    browser: Any, slides_dir: Path, tmp_path: Path
) -> None:
    # The printed URL logs the browser in (cookie, redirect without the token): every
    # page, script, thumbnail and Deep Zoom tile then loads. A slide whose outputs are
    # of another config shows as stale, with the reason.
    result = extract_tiles(slides_dir / f"{SLIDE}.svs", tmp_path / "out", tile_px=256, tile_um=128)
    assert result.status == "done"
    state_file = tmp_path / "out" / "256px_128um" / "state" / f"{SLIDE}.json"
    errors: list[str] = []
    with ViewerServer(tmp_path / "out", port=0, token=True) as server:
        server.start()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(60_000)
        page.goto(server.url)  # without the token: refused
        assert "access token" in page.content()
        page.goto(server.open_url)
        assert page.url == server.url  # the token is out of the address bar
        row = page.locator(f'#slides tbody tr[data-id="{SLIDE}"]')
        row.wait_for()
        assert "done" in row.inner_text()
        page.wait_for_function(
            "() => { const i = document.querySelector('img.thumb');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        row.locator("a[href^='/slide.html']").click()
        page.wait_for_function(
            "() => window.tsState && window.tsState.viewer && window.tsState.tilesLoaded > 0"
        )
        assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts
        page.close()
    state = json.loads(state_file.read_text())
    state["config_hash"] = "another-config"
    state_file.write_text(json.dumps(state))
    with ViewerServer(tmp_path / "out", port=0) as server:
        server.start()
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(60_000)
        page.goto(server.url)
        row = page.locator(f'#slides tbody tr[data-id="{SLIDE}"]')
        row.wait_for()
        text = row.inner_text()
        assert "stale" in text and "another-config" in text
        assert row.locator("a[href^='/mosaic.html']").count() == 0
        assert "1 stale" in page.locator("#summary").inner_text()
        page.close()
    assert not errors, errors
