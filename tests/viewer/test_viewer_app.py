"""The viewer's state (caches, open slides), its catalogue of a run folder and its API answers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tilestream.runfolder import slide_names
from tilestream.viewer import Catalog, ViewerApp
from tilestream.viewer.api import api_reply
from tilestream.viewer.httpio import HTTPError

pytestmark = pytest.mark.testdata

SLIDES = ["CMU-1-Small-Region", "tcga-cr-7395-01a-01-ts1", "kidney-48-5"]


@pytest.fixture
def app(slides_dir: Path) -> Iterator[ViewerApp]:
    app = ViewerApp(Catalog.from_path(slides_dir), open_slides=3)
    yield app
    app.close()


def test_small_images_are_made_once_while_cached_and_bounded_in_bytes(app: ViewerApp) -> None:
    entry = app.entry(SLIDES[0])
    made: list[str] = []

    def make(what: str, size: int) -> bytes:
        made.append(what)
        return what.encode() * size

    assert app.cached(entry, "a", lambda: make("a", 100)) == b"a" * 100
    assert app.cached(entry, "a", lambda: make("a", 100)) == b"a" * 100
    assert made == ["a"]
    app.images.resize(max_bytes=250)
    app.cached(entry, "b", lambda: make("b", 100))
    app.cached(entry, "c", lambda: make("c", 100))  # over budget: "a" goes
    assert app.images.nbytes <= 250
    assert app.cached(entry, "a", lambda: make("a", 100)) == b"a" * 100
    assert made == ["a", "b", "c", "a"]


def test_lowering_open_slides_releases_the_least_recent_at_once(app: ViewerApp) -> None:
    pools = {}
    for name in SLIDES:
        entry = app.entry(name)
        app.renderer(entry).tile(0, 0, 0)
        pools[name] = app.pool(entry)
    assert app.open_slide_ids == SLIDES
    assert all(pool.opened == 1 for pool in pools.values())
    app.open_slides = 1
    assert app.open_slides == 1
    assert app.open_slide_ids == SLIDES[-1:]
    assert pools[SLIDES[0]].opened == 0 and pools[SLIDES[1]].opened == 0  # handles closed
    assert pools[SLIDES[2]].opened == 1
    # a released slide is reopened on demand, releasing the other one
    app.renderer(app.entry(SLIDES[0])).tile(0, 0, 0)
    assert app.open_slide_ids == SLIDES[:1]


def test_api_names_unknown_slides_before_unknown_endpoints(app: ViewerApp) -> None:
    with pytest.raises(HTTPError, match="no slide 'nope'") as info:
        api_reply(app, "nonsense", {"id": ["nope"]})
    assert info.value.status == 404
    with pytest.raises(HTTPError, match="no API 'nonsense'"):
        api_reply(app, "nonsense", {"id": [SLIDES[0]]})
    with pytest.raises(HTTPError, match="parameter 'x'") as info:
        api_reply(app, "tile_at", {"id": [SLIDES[0]], "x": ["inf"], "y": ["0"]})
    assert info.value.status == 400
    listed = json.loads(api_reply(app, "slides", {}).body)
    assert {s["id"] for s in listed["slides"]} >= set(SLIDES)


def _run_folder(root: Path) -> Path:
    run = root / "256px_128um"
    (run / "state").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"tile_px": 256}, "hash": "h1"}))
    done = {"status": "done", "config_hash": "h1", "tiles": 3}
    (run / "state" / "a.json").write_text(json.dumps(done))
    (run / "state" / "broken.json").write_text("{not json")
    (run / "b.tfrecords").write_bytes(b"")  # a TFRecord without a state record
    (run / ".hidden.tfrecords").write_bytes(b"")
    (run / "state" / ".hidden.json").write_text(json.dumps(done))
    return run


def test_catalogue_lists_the_run_folders_slides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _run_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        catalog = Catalog.from_path(tmp_path)
    assert [e.name for e in catalog.entries] == slide_names(run) == ["a", "b", "broken"]
    entries = {e.name: e for e in catalog.entries}
    assert entries["a"].state["tiles"] == 3 and entries["a"].config == {"tile_px": 256}
    assert entries["broken"].state == {}
    assert "cannot read" in caplog.text and "broken.json" in caplog.text
    assert entries["b"].stale is not None and entries["b"].tfrecord is None  # no state: stale
