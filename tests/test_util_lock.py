"""One run per run folder, and workers that die with their driver: with real processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tilestream._util.lock import LOCK_FILE, run_lock
from tilestream.errors import ExtractionError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and signals are POSIX")


def _holding(code: str, ready: Path) -> subprocess.Popen[bytes]:
    """A Python process that runs ``code`` (which touches ``ready``) then sleeps."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, "READY": str(ready)}
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "the helper process ended early"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


HOLD_RUN = """
    import os, sys, time, pathlib
    from tilestream._util.lock import run_lock
    with run_lock(sys.argv[1] if len(sys.argv) > 1 else os.environ["RUN"]):
        pathlib.Path(os.environ["READY"]).touch()
        time.sleep(60)
"""


def _hold_run(run: Path, ready: Path) -> subprocess.Popen[bytes]:
    os.environ["RUN"] = str(run)
    try:
        return _holding(HOLD_RUN, ready)
    finally:
        del os.environ["RUN"]


def test_a_second_run_is_refused_naming_the_first(tmp_path: Path) -> None:
    holder = _hold_run(tmp_path, tmp_path / "ready")
    try:
        t0 = time.monotonic()
        with pytest.raises(ExtractionError) as info, run_lock(tmp_path):
            pass
        assert time.monotonic() - t0 < 2  # fails fast
        message = str(info.value)
        assert str(tmp_path) in message and "in use by another tilestream run" in message
        assert f"pid {holder.pid} on host {os.uname().nodename}" in message
        assert "since 20" in message and "-c" in message  # start time and command
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = _hold_run(tmp_path, tmp_path / "ready")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stale = json.loads((tmp_path / LOCK_FILE).read_text())
    assert stale["pid"] == holder.pid
    with caplog.at_level(logging.WARNING), run_lock(tmp_path) as mine:
        assert mine["pid"] == os.getpid()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly
    caplog.clear()
    with caplog.at_level(logging.WARNING), run_lock(tmp_path):
        pass
    assert "taking over" not in caplog.text


HOLD_TASK = """
    import os, pathlib, time
    from tilestream._util.lock import task_lock
    with task_lock(os.environ["RUN"]):
        pathlib.Path(os.environ["READY"]).touch()
        time.sleep(float(os.environ.get("HOLD", "60")))
"""


def test_a_new_run_waits_for_slide_tasks_of_a_killed_run(tmp_path: Path) -> None:
    """Tasks a killed driver left running keep a rerun out until they end."""
    os.environ.update(RUN=str(tmp_path), HOLD="60")
    try:
        survivor = _holding(HOLD_TASK, tmp_path / "ready1")
    finally:
        del os.environ["RUN"], os.environ["HOLD"]
    try:
        with pytest.raises(ExtractionError) as info, run_lock(tmp_path, wait=0.5):
            pass
        assert "still writing into this folder" in str(info.value)
        assert str(survivor.pid) in str(info.value)
    finally:
        survivor.kill()
        survivor.wait()
    os.environ.update(RUN=str(tmp_path), HOLD="1.5")
    try:
        survivor = _holding(HOLD_TASK, tmp_path / "ready2")
    finally:
        del os.environ["RUN"], os.environ["HOLD"]
    t0 = time.monotonic()
    with run_lock(tmp_path, wait=30):
        waited = time.monotonic() - t0
    assert waited > 0.5  # the new run got the folder only once the task had ended
    survivor.wait()


WORKER = """
import os, pathlib, time
import tilestream._util.lifetime as lifetime
if os.environ.get("NO_PDEATHSIG"):
    lifetime._set_parent_death_signal = lambda: False  # the watchdog alone (as on macOS)
lifetime.die_with_parent(os.getppid())
pathlib.Path(os.environ["READY"]).write_text(str(os.getpid()))
time.sleep(60)
"""
PARENT = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1]]); time.sleep(60)"


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl", "watchdog"])
def test_workers_die_with_their_parent(tmp_path: Path, pdeathsig: bool) -> None:
    ready = tmp_path / "ready"
    env = {**os.environ, "READY": str(ready)}
    if not pdeathsig:
        env["NO_PDEATHSIG"] = "1"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER], env=env)
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.02)
    child = psutil.Process(int(ready.read_text()))
    parent.kill()
    parent.wait()
    try:
        child.wait(timeout=3)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the worker outlived its parent")


def test_the_holder_record_keeps_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["tilestream", "extract", "s.svs", "--scheduler", "tls://alice:s3cret@host:8786"]
    monkeypatch.setattr(sys, "argv", argv)
    with run_lock(tmp_path):
        text = (tmp_path / LOCK_FILE).read_text()
    assert "s3cret" not in text and "alice" not in text
    assert "tls://***@host:8786" in json.loads(text)["command"]
