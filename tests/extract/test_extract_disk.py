"""A full disk, at the start of a run and in the middle of a slide: a real, tiny tmpfs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import missing
from tilestream.errors import ExtractionError
from tilestream.extract import extract_slides


def _mount_tmpfs(where: Path, size: str) -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        missing("mounting a small tmpfs needs root on Linux (CI runs as root)")
    if shutil.which("mount") is None:
        missing("no mount command")
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        missing(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {proc.stderr}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB file system: room for the run's own files, not for a slide's TFRecord."""
    where = tmp_path / "small"
    _mount_tmpfs(where, "1m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as info:  # noqa: PT012
        while True:
            f.write(b"\0" * 4096)
    assert info.value.errno == errno.ENOSPC


def test_a_full_disk_at_the_start_is_a_clear_error(cmu_slide: Path, small_fs: Path) -> None:
    out = small_fs / "out"
    (out / "128px_128um").mkdir(parents=True)  # the folder exists; its files do not fit
    _fill(small_fs)
    with pytest.raises(ExtractionError) as info:
        extract_slides([cmu_slide], out, tile_px=128, tile_um=128, workers=1)
    assert str(out / "128px_128um") in str(info.value) and "no space left" in str(info.value)
    out = small_fs / "new"  # and a folder that cannot even be created
    proc = subprocess.run(
        [sys.executable, "-m", "tilestream", "extract", str(cmu_slide), "--out", str(out),
         "--tile-px", "128", "--tile-um", "128", "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0] and str(out) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_disk_that_fills_mid_slide_fails_the_slide_cleanly(
    cmu_slide: Path, small_fs: Path
) -> None:
    out = small_fs / "out"
    run = extract_slides([cmu_slide], out, tile_px=128, tile_um=128, stride_div=2, workers=1)
    [result] = run.results
    assert result.status == "failed" and not result.traceback
    assert "CMU-1-Small-Region" in result.error and "no space left" in result.error
    assert str(out) in result.error
    run_dir = out / "128px_128um"
    assert not (run_dir / "CMU-1-Small-Region.tfrecords").exists()
    assert not (run_dir / "CMU-1-Small-Region.index.npz").exists()
    assert not list(run_dir.rglob("*.tmp"))
    state = json.loads((run_dir / "state" / "CMU-1-Small-Region.json").read_text())
    assert state["status"] == "failed" and "no space left" in state["error"]
