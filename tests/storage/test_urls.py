"""``store_for``, URL redaction, range coalescing and the retry policy, without a server."""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tilestream.errors import ConfigError, MissingDependencyError, StorageUnavailableError
from tilestream.storage import RetryPolicy, coalesce, redact_url, store_for
from tilestream.storage.classify import classify
from tilestream.storage.retry import call_with_retries
from tilestream.testing.faultproxy import FaultProxy


@pytest.mark.parametrize(
    ("protocol", "module", "extra"),
    [("s3", "s3fs", "s3"), ("gs", "gcsfs", "gcs"), ("https", "aiohttp", "http")],
)
def test_a_missing_extra_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, protocol: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=rf"pip install 'tilestream\[{extra}\]'"):
        store_for(f"{protocol}://bucket/key")


def test_credentials_in_a_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError) as info:
        store_for("https://user:hunter2@example.org/a.svs?sig=topsecret")
    assert "hunter2" not in str(info.value) and "topsecret" not in str(info.value)
    assert "https://example.org/a.svs" in str(info.value)


def test_a_bucketless_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a bucket"):
        store_for("s3:///key")


def test_redact_url() -> None:
    assert redact_url("s3://bucket/k") == "s3://bucket/k"
    assert redact_url("https://a:b@h:1/p?q=1#f") == "https://h:1/p"
    assert redact_url("/local/path") == "/local/path"


def test_coalesce_respects_gap_and_size_limits() -> None:
    ranges = [(0, 10), (15, 10), (100, 10), (115, 10)]
    assert [(r.start, r.end) for r in coalesce(ranges, max_gap=5)] == [(0, 25), (100, 125)]
    assert [(r.start, r.end) for r in coalesce(ranges, max_gap=1000, max_request=50)] == [
        (0, 25),
        (100, 125),
    ]
    assert len(coalesce(ranges, max_gap=4)) == 4
    assert [r.members for r in coalesce([(50, 5), (0, 5)], max_gap=100)] == [(1, 0)]


def test_retries_are_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def always_reset() -> None:
        calls.append(1)
        raise ConnectionResetError(104, "Connection reset by peer")

    with (
        caplog.at_level(logging.INFO, logger="tilestream"),
        pytest.raises(
            StorageUnavailableError, match=r"s3://b/k: connection failed .* after 3 attempts"
        ),
    ):
        call_with_retries(
            always_reset,
            url="s3://b/k",
            policy=RetryPolicy(attempts=3, base_delay=0),
            classify=classify,
        )
    assert len(calls) == 3
    assert caplog.text.count("s3://b/k") >= 2


def test_retry_policy_delays_grow_and_are_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=0.5)
    assert all(0 <= policy.delay(i) <= min(0.5, 0.1 * 2**i) for i in range(10))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello world" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hello() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_fault_proxy_forwards_counts_and_injects(hello: str) -> None:
    with FaultProxy.for_url(hello) as proxy:
        url = proxy.url_for(hello)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == b"hello world" * 100
        assert (proxy.counters.connections, proxy.counters.requests) == (1, 1)
        assert proxy.counters.bytes_down > 1100 and proxy.counters.bytes_up > 0
        proxy.fail_next(1)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        assert info.value.code == 503
        info.value.close()
        proxy.reset_next(1)
        with pytest.raises(OSError), urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        assert (proxy.counters.resets, proxy.counters.failures) == (1, 1)
        proxy.latency = 0.05
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        assert time.perf_counter() - start >= 0.05
