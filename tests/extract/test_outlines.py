"""Tissue, pen and artifact outlines: traced exactly, written as QuPath GeoJSON, read back.

The round trip the issue asks for: the outline file an extraction writes,
given back unchanged as the slide's ROI, selects exactly the same tiles (on the
real CMU, NDPI and TCGA JPEG 2000 slides, through ``roi=``, ``--roi-dir`` and
the CSV ``roi`` column).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from _remote import Remote, storage_kinds
from tilestream.extract import ExtractConfig, extract_slides, extract_tiles
from tilestream.extract.grid import plan_grid
from tilestream.extract.lowres import LowRes
from tilestream.extract.outlines import (
    outlines_geojson,
    rasterize_polygons,
    ring_area,
    trace_polygons,
    write_outlines,
)
from tilestream.extract.roi import ROI, load_rois, rasterize_rois, split_outlines
from tilestream.extract.select import REJECT_REASONS, outline_excluded_classes, select_tiles
from tilestream.runfolder import slide_outputs

masks = st.integers(1, 14).flatmap(
    lambda h: st.integers(1, 14).flatmap(lambda w: arrays(np.bool_, (h, w)))
)


def _components(mask: np.ndarray) -> int:
    """The number of 4-connected foreground regions (a plain flood fill)."""
    seen = np.zeros_like(mask)
    count = 0
    h, w = mask.shape
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        count += 1
        stack = [(int(r0), int(c0))]
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
    return count


@settings(max_examples=400, deadline=None)
@given(masks)
def test_random_masks_trace_and_rasterise_back_exactly(mask: np.ndarray) -> None:
    polys = trace_polygons(mask)
    assert (rasterize_polygons(polys, mask.shape) == mask).all()
    # one polygon per 4-connected region; exterior CCW, holes CW (RFC 7946)
    assert len(polys) == _components(mask)
    for rings in polys:
        assert ring_area(rings[0]) > 0
        assert all(ring_area(h) < 0 for h in rings[1:])
        # each polygon alone rasterises inside its own region: holes belong to it
        alone = rasterize_polygons([rings], mask.shape)
        assert (alone <= mask).all() and alone.any()


@settings(max_examples=150, deadline=None)
@given(masks, st.sampled_from([1.0, 2.4725, 16.0, 24.4140625, 3.3]))
def test_geojson_file_reads_back_as_the_same_mask(
    tmp_path_factory: pytest.TempPathFactory, mask: np.ndarray, ds: float
) -> None:
    path = tmp_path_factory.mktemp("o") / "s.geojson"
    write_outlines(path, {"Tissue": mask}, ds)
    if not mask.any():
        assert json.loads(path.read_text())["features"] == []
        return
    rois = load_rois(path)
    assert (rasterize_rois(rois, mask.shape, ds) == mask).all()


def test_nested_regions_holes_and_classes() -> None:
    """A ring with a hole holding an island; pen marks in their own class, level-0 coordinates."""
    m = np.zeros((9, 9), bool)
    m[1:8, 1:8] = True
    m[2:7, 2:7] = False
    m[4, 4] = True
    pen = np.zeros_like(m)
    pen[0, 0] = True
    data = outlines_geojson({"Tissue": m, "Pen": pen, "Fold": np.zeros_like(m)}, 4.0)
    assert data["type"] == "FeatureCollection"
    feats = {f["properties"]["classification"]["name"]: f for f in data["features"]}
    assert set(feats) == {"Tissue", "Pen"}  # an empty class is left out
    tissue = feats["Tissue"]
    assert tissue["properties"]["objectType"] == "annotation"
    assert len(tissue["properties"]["classification"]["color"]) == 3
    geom = tissue["geometry"]
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    outer = next(p for p in geom["coordinates"] if len(p) == 2)
    assert outer[0][0] == outer[0][-1]  # closed rings
    assert outer[0][:4] == [[4.0, 4.0], [32.0, 4.0], [32.0, 32.0], [4.0, 32.0]]
    assert ring_area(np.array(outer[1])) < 0
    assert feats["Pen"]["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]]],
    }


def _lowres(tmp: np.ndarray) -> LowRes:
    img = np.full((*tmp.shape, 3), 240, np.uint8)
    img[tmp] = (150, 60, 160)  # stained: saturated
    return LowRes(image=img, downsample=16.0)


def test_tissue_outline_replaces_detection_and_excluded_classes_are_removed(
    tmp_path: Path,
) -> None:
    """A corrected outline file is the tissue; Pen/artifact regions come out of it."""
    stain = np.zeros((64, 64), bool)
    stain[8:56, 8:56] = True
    lowres = _lowres(stain)
    config = ExtractConfig(tile_px=64, tile_um=64, mpp_override=1.0)
    grid = plan_grid(config, dimensions=(1024, 1024), downsamples=(1.0,), mpp=1.0)
    auto = select_tiles(grid, lowres, config)
    corrected = stain.copy()
    corrected[8:32] = False  # the user removed the upper half in QuPath
    pen = np.zeros_like(stain)
    pen[40:56, 40:56] = True
    path = tmp_path / "s.geojson"
    write_outlines(path, {"Tissue": corrected, "Pen": pen}, lowres.downsample)
    rois = load_rois(path)
    plain, tissue, excluded = split_outlines(rois)
    assert not plain and len(tissue) == 1 and len(excluded) == 1
    # every QC mask named after a reject reason (the QC pass adds "pen", artifacts) reads
    # back as excluded, never as a region of interest
    names = {c.lower() for c in outline_excluded_classes()}
    assert {r for r in REJECT_REASONS if r not in ("roi", "tissue")} <= names
    sel = select_tiles(grid, lowres, config, rois=rois)
    assert (sel.tissue_mask == (corrected & ~pen)).all()
    assert sel.counts["roi"] == 0
    assert 0 < sel.keep.sum() < auto.keep.sum()
    ys = grid.ys[sel.keep]
    assert (ys >= 32 * 16 - 64).all()  # nothing kept from the removed half
    # unclassified features stay regions of interest
    square = ROI("r", np.array([[0, 0], [512, 0], [512, 512], [0, 512]], float))
    with_roi = select_tiles(grid, lowres, config, rois=[*rois, square])
    assert with_roi.counts["roi"] > 0 and with_roi.keep.sum() < sel.keep.sum()


def _kept(run: Path, name: str) -> set[tuple[int, int]]:
    with open(run / f"{name}.coords.csv", newline="") as f:
        return {(int(r["x"]), int(r["y"])) for r in csv.DictReader(f)}


REAL = [
    ("CMU-1-Small-Region.svs", {"tile_px": 64, "tile_um": 32}),
    ("test3-DAPI-2-387.ndpi", {"tile_px": 128, "tile_um": "10x"}),
    ("tcga-cr-7395-01a-01-ts1.svs", {"tile_px": 32, "tile_um": 32, "mpp": 0.5}),
]


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
@pytest.mark.parametrize(("slide", "options"), REAL, ids=[s for s, _ in REAL])
def test_exported_outline_given_back_keeps_the_same_tiles(
    slides_dir: Path, tmp_path: Path, slide: str, options: dict[str, Any], storage: Remote
) -> None:
    """The slides read from SeaweedFS too: the same outlines and tiles, byte for byte."""
    src = storage.name(slides_dir / slide)
    first = extract_tiles(src, tmp_path / "a", threads=1, **options, **storage.kw)
    assert first.status == "done", first.error
    run = next((tmp_path / "a").iterdir())
    outline = slide_outputs(run, first.slide)["outlines"]
    data = json.loads(outline.read_text())
    names = [f["properties"]["classification"]["name"] for f in data["features"]]
    assert names[0] == "Tissue" and set(names[1:]) <= {"Pen", "Fold", "Blur"}, names
    again = extract_tiles(
        src, tmp_path / "b", threads=1, roi=outline, roi_method="inside", **options, **storage.kw
    )
    assert again.status == "done", again.error
    run_b = next((tmp_path / "b").iterdir())
    assert _kept(run_b, first.slide) == _kept(run, first.slide)
    assert again.rejected == first.rejected
    # and the re-extraction's own outline is the same file
    assert slide_outputs(run_b, first.slide)["outlines"].read_bytes() == outline.read_bytes()


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_round_trip_through_roi_dir_and_csv_column_with_a_user_roi(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    """A slide extracted inside a QuPath CSV ROI: its outline file carries the ROI too.

    Again with the slide read from SeaweedFS (the ROIs stay local).
    """
    slide = storage.name(cmu_slide)
    roi_csv = tmp_path / "rois" / "CMU-1-Small-Region.csv"
    roi_csv.parent.mkdir()
    roi_csv.write_text("ROI_name,X_base,Y_base\nr,300,200\nr,1900,300\nr,1700,1400\nr,400,1300\n")
    options: dict[str, Any] = {"tile_px": 64, "tile_um": 32, "workers": 1, "threads": 1,
                               **storage.kw}  # fmt: skip
    first = extract_slides([slide], tmp_path / "a", roi_dir=roi_csv.parent, **options)
    res = first.results[0]
    assert res.status == "done" and res.rejected["roi"] > 0
    run = first.run_dir
    names = [
        (f["properties"].get("classification") or {}).get("name")
        for f in json.loads((run / f"{res.slide}.geojson").read_text())["features"]
    ]
    assert names[0] == "Tissue" and names[-1] is None, names
    assert set(names[1:-1]) <= {"Pen", "Fold", "Blur"}, names
    # --roi-dir pointing at the run folder itself finds <slide>.geojson
    via_dir = extract_slides([slide], tmp_path / "b", roi_dir=run, **options)
    assert via_dir.results[0].status == "done"
    assert _kept(via_dir.run_dir, res.slide) == _kept(run, res.slide)
    # the CSV slide list's roi column
    listing = tmp_path / "slides.csv"
    listing.write_text(f"slide,roi\n{slide},{run / f'{res.slide}.geojson'}\n")
    via_csv = extract_slides([listing], tmp_path / "c", **options)
    assert via_csv.results[0].status == "done"
    assert _kept(via_csv.run_dir, res.slide) == _kept(run, res.slide)


_LOG_REPLACES = textwrap.dedent(
    """
    import os, sys
    real = os.replace
    def replace(src, dst, *a, **k):
        real(src, dst, *a, **k)
        with open(sys.argv[1], "a") as f:
            f.write(os.path.basename(os.fspath(dst)) + "\\n")
    os.replace = replace
    from tilestream.extract import extract_slides
    extract_slides([sys.argv[2]], sys.argv[3], workers=1, threads=1, tile_px=64, tile_um=64)
    """
)


def test_outline_is_written_inside_the_slide_commit(cmu_slide: Path, tmp_path: Path) -> None:
    """The outline file replaces the old one after the "running" state and before "done"."""
    log = tmp_path / "replaces.log"
    subprocess.run(
        [sys.executable, "-c", _LOG_REPLACES, str(log), str(cmu_slide), str(tmp_path / "o")],
        check=True,
        timeout=300,
    )
    steps = log.read_text().splitlines()
    state = [i for i, s in enumerate(steps) if s == "CMU-1-Small-Region.json"]
    assert len(state) == 2
    assert state[0] < steps.index("CMU-1-Small-Region.geojson") < state[1]


def test_large_noisy_mask_and_overlapping_user_polygons() -> None:
    """Thousands of rings at once (numpy, no per-edge loop); user polygons that overlap unite."""
    rng = np.random.default_rng(7)
    noisy = rng.random((300, 400)) < 0.45
    polys = trace_polygons(noisy)
    assert len(polys) == _components(noisy) > 1000
    assert (rasterize_polygons(polys, noisy.shape, 1.0) == noisy).all()
    a = [np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)]
    b = [np.array([[2, 2], [6, 2], [6, 6], [2, 6]], float)]
    both = rasterize_polygons([a, b], (7, 7))
    assert both[:4, :4].all() and both[2:6, 2:6].all() and both.sum() == 16 + 16 - 4
