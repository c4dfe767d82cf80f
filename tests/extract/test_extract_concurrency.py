"""Two runs on one output folder, and a killed driver: real CLI processes on a real slide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

N_SLIDES = 8
RUN = "128px_128um"


def _listing(tmp_path: Path, slide: Path) -> Path:
    listing = tmp_path / "slides.csv"
    listing.write_text("slide,name\n" + "".join(f"{slide},s{i}\n" for i in range(N_SLIDES)))
    return listing


def _cmd(listing: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tilestream", "extract", str(listing), "--out", str(out),
        "--tile-px", "128", "--tile-um", "128", "--stride-div", "2", "--workers", "2",
        "--threads", "1", "--no-progress",
    ]  # fmt: skip


def _start_and_wait_for_work(cmd: list[str], run_dir: Path) -> subprocess.Popen[bytes]:
    """Start a run and return once its workers write slide outputs (temporary files exist)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(run_dir.glob(".s*.tfrecords.*.tmp")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run ended (or never wrote) before it could be interfered with")
        time.sleep(0.01)
    return proc


def _states(run_dir: Path) -> dict[str, str]:
    return {
        p.stem: json.loads(p.read_text())["status"]
        for p in (run_dir / "state").glob("*.json")
        if not p.name.endswith(".rejected.csv")
    }


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused(cmu_slide: Path, tmp_path: Path) -> None:
    """Item 11: the second run fails fast naming the first, and the first is unharmed."""
    listing, out = _listing(tmp_path, cmu_slide), tmp_path / "out"
    first = _start_and_wait_for_work(_cmd(listing, out), out / RUN)
    try:
        t0 = time.monotonic()
        second = subprocess.run(_cmd(listing, out), capture_output=True, text=True, timeout=120)
        assert time.monotonic() - t0 < 30
        assert second.returncode == 2, second.stderr
        assert "in use by another tilestream run" in second.stderr
        assert f"pid {first.pid} on host" in second.stderr and "extract" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
        first.wait()
    assert _states(out / RUN) == {f"s{i}": "done" for i in range(N_SLIDES)}
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_killing_the_driver_ends_its_workers_and_a_rerun_takes_over(
    cmu_slide: Path, tmp_path: Path
) -> None:
    """Item 12: SIGKILL of the driver alone (not its group): no worker goes on writing."""
    listing, out = _listing(tmp_path, cmu_slide), tmp_path / "out"
    run_dir = out / RUN
    driver = _start_and_wait_for_work(_cmd(listing, out), run_dir)
    kids = psutil.Process(driver.pid).children(recursive=True)
    assert len(kids) >= 2, "the pool's workers should be running"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(kids, timeout=5)
    for p in alive:  # do not leave them behind, whatever the outcome
        p.kill()
    assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"
    rerun = subprocess.run(_cmd(listing, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "taking over the lock" in rerun.stderr and f"pid {driver.pid}" in rerun.stderr
    assert _states(run_dir) == {f"s{i}": "done" for i in range(N_SLIDES)}
    assert not list(out.rglob("*.tmp"))
    assert (run_dir / ".lock").read_text() == ""
