"""Stale slides of a run folder (failed or other-config reruns) are left out by every reader here."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tilestream.cli import main
from tilestream.dataset import Dataset, read_manifest, scan_manifest, update_manifest_at_dir
from tilestream.extract import extract_slides
from tilestream.tfrecord import get_tfrecord_length

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def failed_rerun(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder where ``bad``'s rerun under a new config failed and ``good``'s succeeded.

    Both slides are first extracted with quality 95; then ``bad.svs`` is
    damaged and both are extracted again with quality 90: ``good`` is redone
    under the new config, ``bad`` fails and keeps its first outputs.
    """
    root = tmp_path_factory.mktemp("rerun")
    slides = root / "slides"
    slides.mkdir()
    for name in ("good", "bad"):
        shutil.copy(cmu_slide, slides / f"{name}.svs")
    out = root / "out"
    first = extract_slides([slides], out, tile_px=64, tile_um=128, workers=1, threads=1)
    assert first.done == 2 and first.failed == []
    (slides / "bad.svs").write_bytes(b"this is no longer a slide")
    again = extract_slides([slides], out, tile_px=64, tile_um=128, quality=90, workers=1, threads=1)
    assert [r.slide for r in again.failed] == ["bad"]
    run = out / "64px_128um"
    assert (run / "bad.tfrecords").exists() and get_tfrecord_length(run / "bad.tfrecords") > 0
    return out


def _warned(caplog: pytest.LogCaptureFixture, path: Path) -> bool:
    return any(
        r.levelname == "WARNING" and str(path) in r.getMessage() and "leaving out" in r.getMessage()
        for r in caplog.records
    )


def test_dataset_leaves_out_a_slide_whose_rerun_failed(
    failed_rerun: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = failed_rerun / "64px_128um"
    bad = run / "bad.tfrecords"
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        ds = Dataset(tfrecords=failed_rerun, tile_px=64, tile_um=128)
        assert ds.tfrecords() == [str(run / "good.tfrecords")]
    assert _warned(caplog, bad)
    assert ds.slides() == ["good"]
    assert ds.num_tiles == get_tfrecord_length(run / "good.tfrecords")
    assert list(ds.manifest()) == [str(run / "good.tfrecords")]
    stale = ds.stale_tfrecords()
    assert list(stale) == [str(bad)] and "failed" in stale[str(bad)]
    summary = ds.summary()
    assert summary.stale == stale and summary.num_tfrecords == 1
    assert any(line.startswith("Stale TFRecords, left out (1): ") for line in summary.lines())
    assert ds._loader_args(None, {}) == {}  # nothing of bad's reaches the loaders
    # a TFRecord given as a file is checked the same way
    assert Dataset(tfrecords=[bad, run / "good.tfrecords"]).tfrecords() == [
        str(run / "good.tfrecords")
    ]
    # annotated: listed as a slide without a (usable) TFRecord, never loaded
    ann = [{"slide": "good"}, {"slide": "bad"}]
    ds2 = Dataset(tfrecords=run, annotations=ann)
    assert ds2.tfrecords() == [str(run / "good.tfrecords")]
    assert ds2.slides_without_tfrecords() == ["bad"] and ds2.stale_tfrecords() == stale
    assert bad.exists()  # nothing deleted


def test_manifest_leaves_out_stale_slides(
    failed_rerun: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = failed_rerun / "64px_128um"
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        scan = scan_manifest(run)
    assert list(scan.entries) == ["good.tfrecords"] and list(scan.stale) == ["bad.tfrecords"]
    assert _warned(caplog, run / "bad.tfrecords")
    out = tmp_path / "m.json"
    assert list(update_manifest_at_dir(run, manifest_path=out)) == ["good.tfrecords"]
    assert list(read_manifest(out)) == ["good.tfrecords"]
    # searched from above the run folder too
    assert list(scan_manifest(failed_rerun).stale) == ["64px_128um/bad.tfrecords"]


def test_manifest_command_shows_stale_slides(
    failed_rerun: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = failed_rerun / "64px_128um"
    assert main(["manifest", str(run), "--no-write"]) == 0
    text = capsys.readouterr().out
    assert "bad.tfrecords" in text and "left out" in text and "failed" in text


def test_other_states_from_the_run_folder_contract(failed_rerun: Path, tmp_path: Path) -> None:
    """States written as :mod:`tilestream.runfolder` documents them: running, other config, resized."""
    run = tmp_path / "64px_128um"
    shutil.copytree(failed_rerun / "64px_128um", run)
    good = json.loads((run / "state" / "good.json").read_text())
    assert good["status"] == "done"
    assert Dataset(tfrecords=run).slides() == ["good"]
    (run / "state" / "good.json").write_text(json.dumps({**good, "status": "running"}))
    ds = Dataset(tfrecords=run)
    assert ds.slides() == []
    assert "did not complete" in ds.stale_tfrecords()[str(run / "good.tfrecords")]
    (run / "state" / "good.json").write_text(json.dumps({**good, "config_hash": "other"}))
    assert (
        "extracted under config other"
        in Dataset(tfrecords=run).stale_tfrecords()[str(run / "good.tfrecords")]
    )
    (run / "state" / "good.json").write_text(json.dumps(good))
    assert Dataset(tfrecords=run).slides() == ["good"]
    (run / "config.json").unlink()  # no longer a run folder: every TFRecord is current
    assert Dataset(tfrecords=run).slides() == ["bad", "good"]
