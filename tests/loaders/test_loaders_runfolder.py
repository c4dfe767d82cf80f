"""The loaders read only the current slides of an extraction run folder.

A real run folder: two slides extracted from the small real slide, then a rerun
under another config that fails for one of them. Its old tiles stay on disk
(nothing is deleted) but every loader leaves them out, with a warning naming it.
The reading tests run once per ``storage`` kind: the run folder on local disk, and
copied as it is to SeaweedFS, read over S3 and over HTTP (a web server cannot list a
folder: there the loaders get the TFRecords' URLs, not the folder's).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from _remote import Remote, storage_kinds
from tilestream.errors import EmptyTFRecordsError


@pytest.fixture(scope="module")
def _extracted(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """A run folder where slide ``a`` is current and slide ``b`` failed its rerun (made once)."""
    from tilestream.extract import extract_slides
    from tilestream.runfolder import read_state, run_config_hash

    tmp_path = tmp_path_factory.mktemp("runfolder")
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b"):
        os.symlink(cmu_slide, slides / f"{name}.svs")
    first = extract_slides(
        [slides / "a.svs", slides / "b.svs"], tmp_path / "out", tile_px=64, tile_um=128, workers=1
    )
    run = first.run_dir
    old_hash = run_config_hash(run)
    # The rerun: another config, and b's slide file is now unreadable.
    (slides / "b.svs").unlink()
    (slides / "b.svs").write_bytes(b"not a slide at all" * 100)
    extract_slides(
        [slides / "a.svs", slides / "b.svs"],
        tmp_path / "out",
        tile_px=64,
        tile_um=128,
        min_tissue=0.4,
        workers=1,
    )
    assert run_config_hash(run) != old_hash
    state_a, state_b = read_state(run, "a"), read_state(run, "b")
    assert state_a is not None and state_a["config_hash"] == run_config_hash(run)
    assert state_b is not None
    assert state_b["status"] != "done" or state_b["config_hash"] == old_hash
    assert (run / "b.tfrecords").stat().st_size > 0  # the old tiles are still there
    return run


@pytest.fixture
def run_folder(_extracted: Path, tmp_path: Path) -> Path:
    """A copy of the run folder for one test (times kept: its indexes stay valid)."""
    return Path(shutil.copytree(_extracted, tmp_path / _extracted.name, symlinks=True))


def _slides_of_torch(ds: Any) -> set[str]:
    return {item["slide"] for item in ds}


def _warned_about_b(caplog: pytest.LogCaptureFixture, run: str, storage: Remote) -> bool:
    return any(
        r.levelno == logging.WARNING and storage.join(run, "b.tfrecords") in r.getMessage()
        for r in caplog.records
    )


def _given(storage: Remote, run_folder: Path, given: str) -> tuple[str, Any]:
    """The run folder placed in ``storage``, and what a loader is given: it, or its files."""
    run = storage.put_tree(run_folder)
    if given == "folder":
        if storage.kind == "http":
            pytest.skip("a web server cannot list a folder: the loaders get its files' URLs")
        return run, run
    return run, [storage.join(run, p.name) for p in sorted(run_folder.glob("*.tfrecords"))]


@pytest.mark.torch
@pytest.mark.parametrize("given", ["folder", "paths"])
def test_torch_datasets_leave_out_a_stale_slide(storage, torch, run_folder, caplog, given):
    from tilestream.torch import IndexedTileDataset, TileDataset

    run, src = _given(storage, run_folder, given)
    with caplog.at_level(logging.WARNING):
        ds = TileDataset(src, as_dict=True, labels={"a": 1}, **storage.kw)
    assert _warned_about_b(caplog, run, storage)
    assert ds.tfrecords == [storage.join(run, "a.tfrecords")]
    assert ds.left_out == [storage.join(run, "b.tfrecords")]
    assert _slides_of_torch(ds) == {"a"}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        indexed = IndexedTileDataset(src, incl_slidenames=True, **storage.kw)
    assert _warned_about_b(caplog, run, storage)
    assert {indexed[i][2] for i in range(len(indexed))} == {"a"}
    assert (run_folder / "b.tfrecords").exists()  # left out, not deleted


@pytest.mark.tensorflow
@pytest.mark.parametrize("given", ["folder", "paths"])
def test_tf_dataset_leaves_out_a_stale_slide(storage, tf, run_folder, caplog, given):
    from tilestream.tf import tile_dataset

    run, src = _given(storage, run_folder, given)
    with caplog.at_level(logging.WARNING):
        ds = tile_dataset(src, as_dict=True, **storage.kw)
    assert _warned_about_b(caplog, run, storage)
    assert {e["slide"].numpy().decode() for e in ds} == {"a"}
    assert ds.left_out == [storage.join(run, "b.tfrecords")]


def test_plan_tiles_keeps_per_file_options_in_step(storage, run_folder, caplog):
    from tilestream.loaders.tiles import plan_tiles
    from tilestream.tfrecord import load_index

    run = storage.put_tree(run_folder)
    paths = [storage.join(run, "b.tfrecords"), storage.join(run, "a.tfrecords")]
    n_a = len(load_index(run_folder / "a.tfrecords"))
    with caplog.at_level(logging.WARNING):
        plan = plan_tiles(
            paths,
            weights={"a": 1.0, "b": 3.0},
            clip={"b": 1, "a": 2},
            indices=[None, None],
            **storage.kw,
        )
    assert plan.paths == [storage.join(run, "a.tfrecords")]
    assert plan.lengths == [min(2, n_a)]
    assert plan.weights is not None and plan.weights.tolist() == [1.0]
    assert plan.left_out == [storage.join(run, "b.tfrecords")]
    assert _warned_about_b(caplog, run, storage)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)  # a listing
def test_a_run_folder_of_only_stale_slides_is_a_clear_error(storage, run_folder):
    from tilestream.loaders.tiles import plan_tiles
    from tilestream.runfolder import STATE_DIR

    state = json.loads((run_folder / STATE_DIR / "a.json").read_text())
    state["status"] = "failed"
    (run_folder / STATE_DIR / "a.json").write_text(json.dumps(state))
    run = storage.put_tree(run_folder)
    with pytest.raises(EmptyTFRecordsError, match="stale") as info:
        plan_tiles(run, **storage.kw)
    assert "a.tfrecords" in str(info.value) and "b.tfrecords" in str(info.value)


def test_framework_free_streams_leave_out_a_stale_slide(storage, run_folder, caplog):
    from tilestream.loaders import multi_tfrecord_loader, tfrecord_loader

    run, paths = _given(storage, run_folder, "paths")
    with caplog.at_level(logging.WARNING):
        stream = multi_tfrecord_loader(paths, weights=[1, 2], infinite=False, seed=0, **storage.kw)
    assert _warned_about_b(caplog, run, storage)
    assert {r["slide"] for r in stream} == {b"a"}
    with pytest.raises(EmptyTFRecordsError, match="stale"):
        tfrecord_loader(storage.join(run, "b.tfrecords"), **storage.kw)
