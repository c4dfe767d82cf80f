"""The run-folder layout owned by ``tilestream.runfolder``, checked against a real extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tilestream import runfolder
from tilestream.extract import demo_slide_path, extract_slides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout")
    run = extract_slides([demo_slide_path()], out, tile_px=128, tile_um=256, threads=1)
    return Path(run.run_dir)


def test_a_real_run_folder_follows_the_layout(run_dir: Path) -> None:
    assert run_dir.name == runfolder.run_folder_name(128, 256) == "128px_256um"
    assert runfolder.is_run_dir(run_dir) and not runfolder.is_run_dir(run_dir.parent)
    names = runfolder.slide_names(run_dir)
    assert names == ["CMU-1-Small-Region"]
    for kind, path in runfolder.slide_outputs(run_dir, names[0]).items():
        assert path.exists(), kind
    for name in runfolder.RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert [runfolder.tfrecord_slide(p) for p in runfolder.run_tfrecords(run_dir)] == names
    states = runfolder.read_states(run_dir)
    assert [s["status"] for s in states] == ["done"]
    manifest = json.loads((run_dir / runfolder.MANIFEST_FILE).read_text())
    assert list(manifest) == [f"{names[0]}{runfolder.TFRECORD_SUFFIX}"]


def test_discovery_skips_hidden_and_interrupted_files(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a.tfrecords").write_bytes(b"")
    (tmp_path / ".a.tfrecords.0123456789ab.tmp").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "b.tfrecords").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.tfrecord").write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in runfolder.find_tfrecords(tmp_path)]
    assert found == ["a.tfrecords", "sub/c.tfrecord"]
    assert runfolder.find_tfrecords(tmp_path, recursive=False) == [tmp_path / "a.tfrecords"]
    assert runfolder.find_tfrecords([tmp_path / "missing.tfrecords"]) == [
        tmp_path / "missing.tfrecords"
    ]
    assert runfolder.slide_names(tmp_path) == ["a"]  # a TFRecord without a state is a slide
    assert runfolder.read_states(tmp_path) == [] and not runfolder.is_run_dir(tmp_path)
