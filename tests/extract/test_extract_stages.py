"""The stages of one slide's extraction, each called by itself, against a full run.

``extract_slide_task`` is plan -> select -> write tiles -> write outputs ->
result; these tests run a stage alone on a real slide (the shared test data or
a synthetic SVS) and hold it to what a full run writes. The tests that take ``storage``
run again with the slide read from SeaweedFS: the same outputs, byte for byte
(``tests/extract/conftest.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from _remote import Remote, storage_kinds
from tilestream.errors import ExtractionError
from tilestream.extract import ExtractConfig, SlideTask, extract_slides, extract_tiles
from tilestream.extract.engine import build_result, prepare_slide_outputs
from tilestream.extract.manifest import MANIFEST_FILE, RunManifest, current_manifest
from tilestream.extract.plan import check_selection, plan_slide, slide_opener
from tilestream.extract.report import load_states
from tilestream.extract.select import REJECT_REASONS, select_tiles, tile_boxes
from tilestream.extract.write import (
    coords_header,
    reject_blurry,
    tile_image_name,
    write_outputs,
    write_tiles,
)
from tilestream.runfolder import OUTPUT_KINDS, slide_outputs
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.tfrecord import TFRecord

CONFIG = ExtractConfig(tile_px=128, tile_um=256)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "syn.svs"
    make_synthetic_slide(path, width=3000, height=2000, levels=2, seed=5)
    return path


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_selection_stage_keeps_the_tiles_a_full_run_writes(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    result = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, name="s1", **storage.kw)
    assert result.status == "done"
    outputs = slide_outputs(tmp_path / CONFIG.label, "s1")

    plan = plan_slide(SlideTask(slide, "s1", storage_options=storage.options), CONFIG)
    selection = select_tiles(plan.grid, plan.lowres, CONFIG, rois=plan.rois, name="s1")
    kept = selection.kept_indices
    coords = _rows(outputs["coords"])
    assert len(kept) == len(coords) == result.tiles and len(plan.grid) == result.grid
    assert [(int(r["x"]), int(r["y"])) for r in coords] == [
        (int(plan.grid.xs[i]), int(plan.grid.ys[i])) for i in kept
    ]
    rejected = _rows(outputs["rejected"])
    assert [r["reason"] for r in rejected] == [str(r) for r in selection.reason[~selection.keep]]
    assert {k: v for k, v in selection.counts.items() if k != "blur"} == {
        k: v for k, v in result.rejected.items() if k != "blur"
    }
    assert list(selection.counts) == list(REJECT_REASONS)


def test_tile_boxes_cover_each_tile_in_the_low_resolution_image(cmu_slide: Path) -> None:
    plan = plan_slide(SlideTask(str(cmu_slide), "s1"), CONFIG)
    ds = plan.lowres.downsample
    boxes = tile_boxes(plan.grid, ds)
    assert boxes.shape == (len(plan.grid), 4) and boxes.dtype == np.int64
    assert (boxes[:, 0] == np.floor(plan.grid.xs / ds)).all()
    assert (boxes[:, 2] == max(1, round(plan.grid.extract_px / ds))).all()


def test_stages_called_one_by_one_write_what_a_full_run_writes(
    synthetic: Path, tmp_path: Path, storage: Remote
) -> None:
    config = ExtractConfig(tile_px=64, tile_um=64, blur_threshold=5.0)
    task = SlideTask(storage.name(synthetic), "syn", storage_options=storage.options)
    full = extract_slides([task], tmp_path / "full", config=config, workers=1)
    assert full.done == 1
    want = slide_outputs(tmp_path / "full" / config.label, "syn")

    run_dir = tmp_path / "staged"
    outputs = prepare_slide_outputs(run_dir, "syn")
    assert outputs == slide_outputs(run_dir, "syn") and outputs["state"].parent.is_dir()
    plan = plan_slide(task, config)
    selection = select_tiles(plan.grid, plan.lowres, config, rois=plan.rois, name="syn")
    check_selection(plan, selection, config, "syn")
    written = write_tiles(slide_opener(task, config), plan, selection, config, outputs, name="syn")
    reject_blurry(selection, written.blur_rejected)
    write_outputs(outputs, plan, selection, written.coords_rows, config)

    for kind in ("tfrecord", "coords", "rejected", "outlines", "preview"):
        assert outputs[kind].read_bytes() == want[kind].read_bytes(), kind
    result = build_result(
        task, config, plan, selection, written, outputs=outputs, source={}, seconds=0.0, timings={}
    )
    state = json.loads(want["state"].read_text())
    for key in ("tiles", "grid", "rejected", "blurry", "level", "extract_px", "qc", "outputs"):
        assert getattr(result, key) == state[key], key


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_the_output_stage_writes_the_run_folder_contract_for_given_tiles(
    synthetic: Path, tmp_path: Path, storage: Remote
) -> None:
    task = SlideTask(storage.name(synthetic), "syn", storage_options=storage.options)
    plan = plan_slide(task, CONFIG)
    selection = select_tiles(plan.grid, plan.lowres, CONFIG, name="syn")
    outputs = prepare_slide_outputs(tmp_path, "syn", to_images=True)
    written = write_tiles(slide_opener(task, CONFIG), plan, selection, CONFIG, outputs, name="syn",
                          threads=2)  # fmt: skip
    assert "tfrecord" not in outputs and not (tmp_path / "syn.tfrecords").exists()
    rows = written.coords_rows[:3]  # the output stage describes the tiles it is given
    write_outputs(outputs, plan, selection, rows, CONFIG)

    coords = _rows(outputs["coords"])
    assert list(coords[0]) == coords_header(selection)
    assert [int(r["record"]) for r in coords] == [0, 1, 2]
    images = sorted(p.name for p in outputs["images"].iterdir())
    assert images == sorted(tile_image_name("syn", r[1], r[2], CONFIG.img_format)
                            for r in written.coords_rows)  # fmt: skip
    assert len(_rows(outputs["rejected"])) == int((~selection.keep).sum())
    outlines = json.loads(outputs["outlines"].read_text())
    assert outlines["type"] == "FeatureCollection" and outlines["features"]
    assert outputs["preview"].read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_planning_refuses_a_slide_smaller_than_a_tile(slides_dir: Path, storage: Remote) -> None:
    small = storage.name(slides_dir / "openslide-python-small.svs")
    task = SlideTask(small, "small", storage_options=storage.options)
    plan = plan_slide(task, CONFIG)
    assert len(plan.grid) == 0
    selection = select_tiles(plan.grid, plan.lowres, CONFIG, name="small")
    with pytest.raises(ExtractionError, match="smaller than one tile"):
        check_selection(plan, selection, CONFIG, "small")


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_planning_refuses_an_roi_off_the_slide(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    roi = tmp_path / "far.csv"
    roi.write_text(
        "ROI_name,X_base,Y_base\nfar,900000,900000\nfar,900100,900000\nfar,900100,900100\n"
    )
    task = SlideTask(storage.name(cmu_slide), "s1", roi=str(roi), storage_options=storage.options)
    with pytest.raises(ExtractionError, match="lies outside the slide") as info:
        plan_slide(task, CONFIG)
    assert str(roi) in str(info.value)


def test_manifest_lists_current_slides_only(cmu_slide: Path, tmp_path: Path) -> None:
    run = extract_slides([SlideTask(str(cmu_slide), "a")], tmp_path, config=CONFIG, workers=1)
    run_dir = run.run_dir
    (run_dir / "stray.tfrecords").write_bytes(b"")  # a TFRecord without a state: not listed
    want = {"a.tfrecords": {"total": run.tiles}}
    assert current_manifest(run_dir, CONFIG.hash()) == want
    assert current_manifest(run_dir, "another-hash") == {}
    assert current_manifest(run_dir, CONFIG.hash(), exclude={"a"}) == {}

    manifest = RunManifest(run_dir, CONFIG.hash())
    manifest.rebuild()
    assert json.loads((run_dir / MANIFEST_FILE).read_text()) == want
    manifest.update("a", listed=False)
    assert json.loads((run_dir / MANIFEST_FILE).read_text()) == {}
    manifest.update("a")
    assert json.loads((run_dir / MANIFEST_FILE).read_text()) == want


def test_load_states_reads_every_slide_state_by_name(cmu_slide: Path, tmp_path: Path) -> None:
    tasks = [SlideTask(str(cmu_slide), n) for n in ("b", "a")]
    run = extract_slides(tasks, tmp_path, config=CONFIG, workers=1)
    (run.run_dir / "state" / "c.json").write_text("{not json")
    states = load_states(run.run_dir)
    assert [s["slide"] for s in states] == ["a", "b"]
    assert all(set(OUTPUT_KINDS) <= set(s["outputs"]) for s in states)


def test_tfrecord_of_the_tile_stage_holds_the_coordinates(synthetic: Path, tmp_path: Path) -> None:
    task = SlideTask(str(synthetic), "syn")
    plan = plan_slide(task, CONFIG)
    selection = select_tiles(plan.grid, plan.lowres, CONFIG, name="syn")
    outputs = prepare_slide_outputs(tmp_path, "syn")
    written = write_tiles(slide_opener(task, CONFIG), plan, selection, CONFIG, outputs, name="syn")
    with TFRecord(outputs["tfrecord"]) as records:
        locs = [(int(r["loc_x"]), int(r["loc_y"])) for r in records]
    assert locs == [(r[1], r[2]) for r in written.coords_rows]
    assert outputs["index"].is_file()
