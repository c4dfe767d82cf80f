"""Network faults between the store and a real S3 server (SeaweedFS), injected by a TCP proxy.

Transient faults (reset connections, 503s) are retried and the bytes equal a
clean read; persistent ones become a clear ``StorageError`` naming the URL.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator

import pytest

from tilestream.errors import (
    StorageError,
    StorageThrottledError,
    StorageUnavailableError,
)
from tilestream.storage import RetryPolicy, Store, store_for
from tilestream.testing.faultproxy import SLOW_DOWN, FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.testing.storage import payload

DATA = payload(3_000_000, 11)
RANGES = [(0, 1000), (50_000, 20_000), (1_000_000, 300_000), (2_999_000, 1000)]


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer) -> str:
    name = seaweed.make_bucket("faults")
    store, _ = store_for(f"s3://{name}", seaweed.storage_options)
    store.write_atomic("slide.bin", DATA)
    return name


@pytest.fixture(scope="module")
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(seaweed.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def store(seaweed: SeaweedServer, proxy: FaultProxy, bucket: str) -> Iterator[Store]:
    proxy.clear()
    options = {**seaweed.storage_options, "endpoint_url": proxy.url}
    store, _ = store_for(f"s3://{bucket}", options, retry=RetryPolicy(attempts=4, base_delay=0.01))
    yield store
    proxy.clear()


def test_a_clean_read_through_the_proxy(store: Store, proxy: FaultProxy) -> None:
    proxy.reset_counters()
    assert store.read_ranges("slide.bin", RANGES) == [DATA[o : o + n] for o, n in RANGES]
    assert proxy.counters.requests >= 1
    assert proxy.counters.bytes_down >= sum(n for _, n in RANGES)
    assert store.stats.retries == 0


def test_reset_connections_are_retried(store: Store, proxy: FaultProxy) -> None:
    proxy.reset_next(2)
    got = store.read_ranges("slide.bin", RANGES, max_gap=0)
    assert got == [DATA[o : o + n] for o, n in RANGES]
    assert proxy.counters.resets >= 2
    assert store.stats.retries == 2


def test_503s_are_retried(store: Store, proxy: FaultProxy) -> None:
    proxy.fail_next(3)
    assert store.read("slide.bin") == DATA
    assert store.stats.retries == 3


def test_a_file_read_through_resets_equals_a_clean_read(store: Store, proxy: FaultProxy) -> None:
    with store.open_read("slide.bin") as f:
        proxy.reset_next(3)
        f.seek(1_000_000)
        part = f.read(500_000)
        f.seek(0)
        whole = f.read()
    assert part == DATA[1_000_000:1_500_000]
    assert whole == DATA
    assert store.stats.retries >= 3


def test_writes_are_retried_after_503(store: Store, proxy: FaultProxy) -> None:
    proxy.fail_next(2)
    store.write_atomic("written.bin", DATA[:100_000])
    assert store.read("written.bin") == DATA[:100_000]
    assert store.stats.retries == 2


def test_a_persistent_503_is_a_clear_error(
    store: Store,
    proxy: FaultProxy,
    seaweed: SeaweedServer,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.fail_next(100)
    with (
        caplog.at_level(logging.DEBUG, logger="tilestream"),
        pytest.raises(StorageUnavailableError) as info,
    ):
        store.read_range("slide.bin", 0, 10)
    assert caplog.text.count(f"s3://{bucket}/slide.bin: the store failed (HTTP 503); retry") == 3
    assert seaweed.secret_key not in caplog.text
    message = str(info.value)
    assert message.startswith(f"s3://{bucket}/slide.bin: ")
    assert "HTTP 503" in message and "after 4 attempts" in message
    assert isinstance(info.value, ConnectionError)
    assert seaweed.secret_key not in "".join(traceback.format_exception(info.value))


def test_a_throttled_endpoint_is_a_clear_error(
    store: Store, proxy: FaultProxy, bucket: str
) -> None:
    proxy.fail_next(100, body=SLOW_DOWN)
    with pytest.raises(
        StorageThrottledError, match=rf"s3://{bucket}/slide.bin: .*slow down \(SlowDown"
    ):
        store.read_range("slide.bin", 0, 10)


def test_persistent_resets_are_a_clear_error(store: Store, proxy: FaultProxy, bucket: str) -> None:
    proxy.reset_next(100)
    with pytest.raises(
        StorageUnavailableError, match=rf"s3://{bucket}/slide.bin: connection failed"
    ):
        store.read_range("slide.bin", 0, 100_000)


def test_a_failed_streamed_upload_leaves_nothing(store: Store, proxy: FaultProxy) -> None:
    chunk = 1024 * 1024
    big = payload(20 * chunk, 12)
    proxy.fail_next(1)  # the multipart upload's first request is refused: no retry for a stream
    with pytest.raises(StorageError):
        store.write_atomic("stream.bin", (big[i : i + chunk] for i in range(0, len(big), chunk)))
    assert not store.exists("stream.bin")


def test_latency_is_added_per_round_trip(store: Store, proxy: FaultProxy) -> None:
    store.stat("slide.bin")  # a pooled connection
    start = time.perf_counter()
    store.read_range("slide.bin", 0, 10)
    fast = time.perf_counter() - start
    proxy.latency = 0.05
    start = time.perf_counter()
    assert store.read_range("slide.bin", 0, 10) == DATA[:10]
    slow = time.perf_counter() - start
    assert slow >= 0.05 > fast


def test_ranges_far_apart_are_fetched_concurrently(store: Store, proxy: FaultProxy) -> None:
    ranges = [(i * 300_000, 1000) for i in range(8)]
    store.read_ranges("slide.bin", ranges[:2], max_gap=0)  # warm the connection pool
    proxy.latency = 0.2
    proxy.reset_counters()
    start = time.perf_counter()
    got = store.read_ranges("slide.bin", ranges, max_gap=0)
    elapsed = time.perf_counter() - start
    assert got == [DATA[o : o + n] for o, n in ranges]
    assert proxy.counters.requests == 8
    assert elapsed < 8 * 0.2 / 2  # serially it would take 1.6 s


def test_timeouts_are_retried_then_reported(
    seaweed: SeaweedServer, proxy: FaultProxy, bucket: str
) -> None:
    options = {
        **seaweed.storage_options,
        "endpoint_url": proxy.url,
        "config_kwargs": {"read_timeout": 0.3},
        "skip_instance_cache": True,
    }
    store, key = store_for(
        f"s3://{bucket}/slide.bin", options, retry=RetryPolicy(attempts=2, base_delay=0.01)
    )
    assert store.read_range(key, 0, 10) == DATA[:10]
    proxy.latency = 1.0
    try:
        start = time.perf_counter()
        with pytest.raises(StorageUnavailableError, match=r"connection failed .*after 2 attempts"):
            store.read_range(key, 0, 10)
        assert time.perf_counter() - start < 2 * 1.0
    finally:
        proxy.clear()
    assert store.stats.retries == 1
