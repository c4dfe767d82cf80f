"""Interrupted runs and failing disks: nothing partial under a final name, and resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _outputs import assert_same_outputs
from tilestream.tfrecord import iter_records

N_SLIDES = 8


def _listing(tmp_path: Path, slide: Path) -> Path:
    listing = tmp_path / "slides.csv"
    rows = "".join(f"{slide},s{i}\n" for i in range(N_SLIDES))
    listing.write_text("slide,name\n" + rows)
    return listing


def _done_states(run_dir: Path) -> set[str]:
    """The slides whose state says "done" (a slide being extracted has a "running" one)."""
    folder = run_dir / "state"
    paths = folder.glob("*.json") if folder.is_dir() else []
    return {p.stem for p in paths if json.loads(p.read_text()).get("status") == "done"}


def _cmd(listing: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tilestream", "extract", str(listing), "--out", str(out),
        "--tile-px", "128", "--tile-um", "128", "--stride-div", "2", "--workers", "1",
        "--threads", "1", "--no-progress",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted_run(cmu_slide: Path, tmp_path: Path) -> None:
    listing = _listing(tmp_path, cmu_slide)
    ref_out, out = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_cmd(listing, ref_out), check=True, capture_output=True)
    run_dir = out / "128px_128um"
    proc = subprocess.Popen(
        _cmd(listing, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if len(_done_states(run_dir)) >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    finished = len(_done_states(run_dir))
    assert 2 <= finished < N_SLIDES, "the kill did not land mid-run"
    # nothing half-written under a final name: every TFRecord present reads to its end
    # (a slide killed after its TFRecord but before its "done" state is simply redone)
    tfrecords = {p.stem for p in run_dir.glob("*.tfrecords")}
    assert _done_states(run_dir) <= tfrecords
    for path in run_dir.glob("*.tfrecords"):
        assert sum(1 for _ in iter_records(path)) > 0
    rerun = subprocess.run(_cmd(listing, out), check=True, capture_output=True, text=True)
    assert "already complete" in rerun.stdout
    assert not list(out.rglob("*.tmp"))
    assert_same_outputs(ref_out, out)


def test_disk_full_leaves_nothing_partial(cmu_slide: Path, tmp_path: Path) -> None:
    """A size-limited file system (RLIMIT_FSIZE): the slide fails by name, nothing partial remains."""
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
        from tilestream.extract import extract_tiles
        r = extract_tiles({str(cmu_slide)!r}, {str(tmp_path)!r}, tile_px=256, tile_um=128)
        print(json.dumps(r.to_dict()))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "failed"
    assert "CMU-1-Small-Region" in result["error"] and "too large" in result["error"].lower()
    run = tmp_path / "256px_128um"
    assert not (run / "CMU-1-Small-Region.tfrecords").exists()
    assert not (run / "CMU-1-Small-Region.index.npz").exists()
    assert not list(run.rglob("*.tmp"))
    state = json.loads((run / "state" / "CMU-1-Small-Region.json").read_text())
    assert state["status"] == "failed"
