"""The viewer serves a DICOMweb series as it serves a local slide: Deep Zoom tiles, metadata.

The dicomized CMU slide in the session's Orthanc holds the SVS's JPEG tiles as its frames,
so its Deep Zoom tiles equal those the viewer renders from the SVS itself.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from _http import request
from tilestream.errors import ConfigError
from tilestream.extract import extract_tiles
from tilestream.viewer import ViewerServer
from tilestream.viewer.catalog import Catalog


def _json(server: ViewerServer, path: str) -> Any:
    status, _, body = request(server, path)
    assert status == 200, body
    return json.loads(body)


def _tile(server: ViewerServer, slide_id: str, level: int, col: int, row: int) -> np.ndarray:
    status, _, body = request(server, f"/dz/{slide_id}_files/{level}/{col}_{row}.jpeg")
    assert status == 200, body
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_a_series_url_is_served_like_the_svs(orthanc, cmu_slide: Path) -> None:
    url = orthanc.url("cmu-small-region")
    series_uid = url.rsplit("/", 1)[-1]
    with ViewerServer(url, port=0) as remote, ViewerServer(cmu_slide, port=0) as local:
        remote.start()
        local.start()
        slides = _json(remote, "/api/slides")
        assert slides["mode"] == "slide" and [s["id"] for s in slides["slides"]] == [series_uid]
        meta = _json(remote, f"/api/slide?id={series_uid}")
        assert tuple(meta["dimensions"]) == (2220, 2967)
        assert "127.0.0.1" not in json.dumps(slides)  # the browser sees no server address
        for level, col, row in ((12, 0, 0), (12, 3, 5), (11, 2, 2), (9, 0, 0)):
            ours = _tile(remote, series_uid, level, col, row)
            theirs = _tile(local, "CMU-1-Small-Region", level, col, row)
            assert np.array_equal(ours, theirs), (level, col, row)


def test_a_run_of_url_slides_shows_its_slide(orthanc, tmp_path: Path) -> None:
    url = orthanc.url("cmu-small-region")
    result = extract_tiles(url, tmp_path, tile_px=256, tile_um=128)
    assert result.status == "done"
    catalog = Catalog.from_path(tmp_path / "256px_128um")
    (entry,) = catalog.entries
    assert entry.slide_path == url and entry.has_slide
    with ViewerServer(tmp_path, port=0) as server:
        server.start()
        grid = _json(server, f"/api/grid?id={entry.id}")
        assert len(grid["kept"]) == result.tiles
        assert _tile(server, entry.id, 12, 1, 1).shape == (256, 256, 3)


@pytest.mark.parametrize("suffix", ["?token=secret", "#frag"])
def test_a_url_with_a_secret_in_it_is_not_served(orthanc, suffix: str) -> None:
    with pytest.raises(ConfigError) as info:
        Catalog.from_path(orthanc.url("cmu-small-region") + suffix)
    assert "secret" not in str(info.value)
