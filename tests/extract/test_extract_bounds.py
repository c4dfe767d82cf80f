"""Extraction's memory and time follow what a slide file holds, not what it declares.

Crafted TIFFs (kilobytes, see :mod:`_crafted_tiff`) are extracted in a child
process whose address space is capped (``RLIMIT_AS``) and under a timeout:
a slide declaring 65,536 px JPEG tiles fails at once with the tile budget
named; a sparse 10^5 x 10^5 px slide holding a few tissue tiles is extracted
in seconds (its low-resolution pass does not read the never-written tiles);
one declaring 10^6 x 10^6 px fails on the grid limit before allocating it.
The same holds with the files in SeaweedFS, read by range requests (``storage``):
the same results, the same outputs byte for byte (``tests/extract/conftest.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _crafted_tiff import small_jpeg, write_tiff
from _remote import Remote, storage_kinds
from tilestream.errors import ExtractionError
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import MAX_GRID_POSITIONS, plan_grid
from tilestream.slide import open_slide
from tilestream.testing.synthetic import make_synthetic_slide

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from tilestream.extract import extract_slides

    options = json.loads(os.environ.get("STORAGE_OPTIONS", "null"))
    t = time.perf_counter()
    run = extract_slides(sys.argv[2:], sys.argv[1], tile_px=256, tile_um=128, workers=1,
                         storage_options=options)
    out = {
        r.slide: [r.status, r.error_type, r.error, r.tiles, r.timings.get("mask", 0.0)]
        for r in run.results
    }
    print(json.dumps({"seconds": time.perf_counter() - t, "results": out}))
    """
)


def _tissue_tiles(tmp_path: Path) -> list[bytes]:
    """16 stored JPEG tiles of synthetic tissue (256 px)."""
    source = tmp_path / "tissue.svs"
    make_synthetic_slide(source, width=1024, height=1024, levels=1, tile_size=256, seed=3)
    with open_slide(source) as slide:
        return [slide.read_stored_tile_bytes(0, c, r) for r in range(4) for c in range(4)]


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_extraction_of_files_declaring_more_than_they_hold(tmp_path: Path, storage: Remote) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    write_tiff(
        slides / "bigtile.tif",
        width=10**6,
        height=10**6,
        tile=(65536, 65536),
        segments={0: small_jpeg()},
    )
    write_tiff(
        slides / "empty.tif",
        width=10**5,
        height=10**5,
        tile=(256, 256),
        segments={0: small_jpeg(256)},
    )
    cols = -(-(10**5) // 256)
    tiles = _tissue_tiles(tmp_path)
    written = {(200 + r) * cols + 150 + c: tiles[r * 4 + c] for r in range(4) for c in range(4)}
    write_tiff(slides / "sparse.tif", width=10**5, height=10**5, tile=(256, 256), segments=written)
    write_tiff(
        slides / "huge.tif", width=10**6, height=10**6, tile=(8192, 8192), segments={0: tiles[0]}
    )
    for path in slides.iterdir():
        assert path.stat().st_size < 2 << 20
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
           "STORAGE_OPTIONS": json.dumps(storage.options)}  # fmt: skip
    if "TILESTREAM_CACHE" in os.environ:
        env["TILESTREAM_CACHE"] = os.environ["TILESTREAM_CACHE"]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path / "out"),
            *storage.put(sorted(slides.iterdir())),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]

    status, kind, error, _, _ = results["bigtile"]
    assert (status, kind) == ("failed", "SlideTooLargeError"), results["bigtile"]
    assert "bigtile.tif" in error and "65536x65536" in error and "tile budget" in error

    status, kind, error, _, mask_seconds = results["empty"]
    assert (status, kind) == ("failed", "ExtractionError"), results["empty"]
    assert "no tile passed the filters" in error

    status, kind, error, count, mask_seconds = results["sparse"]
    assert status == "done", results["sparse"]
    assert 4 <= count <= 36, results["sparse"]
    assert mask_seconds < 30, results["sparse"]

    status, kind, error, _, _ = results["huge"]
    assert (status, kind) == ("failed", "ExtractionError"), results["huge"]
    assert "huge" in error and "tile positions" in error and "MAX_GRID_POSITIONS" in error
    assert report["seconds"] < 120, report


def test_grid_limit_is_checked_before_allocating() -> None:
    config = ExtractConfig(tile_px=256, tile_um=128)
    side = 256 * (int(MAX_GRID_POSITIONS**0.5) + 1)
    with pytest.raises(ExtractionError, match="tile positions"):
        plan_grid(config, dimensions=(side, side), downsamples=(1.0,), mpp=0.5, name="big")
    grid = plan_grid(config, dimensions=(256 * 100, 256 * 50), downsamples=(1.0,), mpp=0.5)
    assert len(grid) == 5000
