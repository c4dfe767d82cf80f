"""Faults between gcsfs and a real GCS JSON-API server (fake-gcs-server behind the fault proxy).

The emulator has no authentication and never fails by itself; the fault proxy
answers in its place, with GCS's JSON error bodies, as GCS would: a passing 503
is retried and the bytes are the same; a lasting 503 and a 403 must become the
:class:`~tilestream.errors.StorageError` subclasses they are on S3
(``StorageUnavailableError``, ``StorageAccessDeniedError``), naming the URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tilestream.errors import StorageAccessDeniedError, StorageUnavailableError
from tilestream.storage import RetryPolicy, Store, store_for
from tilestream.testing.fakegcs import FakeGcsServer
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.storage import payload

BUCKET = "gcs-faults"
DATA = payload(50_000, 11)


def _gcs_error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"code": status, "message": message}}).encode()


@pytest.fixture(scope="module")
def _object(fake_gcs: FakeGcsServer) -> str:
    fake_gcs.make_bucket(BUCKET)
    store, _ = store_for(f"gs://{BUCKET}", fake_gcs.storage_options)
    store.write_atomic("obj.bin", DATA)
    return "obj.bin"


@pytest.fixture
def proxy(fake_gcs: FakeGcsServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(fake_gcs.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def flaky(fake_gcs: FakeGcsServer, proxy: FaultProxy, _object: str) -> Store:
    options = {**fake_gcs.storage_options, "endpoint_url": proxy.url}
    store, _ = store_for(f"gs://{BUCKET}", options, retry=RetryPolicy(attempts=2, base_delay=0.01))
    return store


def test_a_passing_503_is_retried_with_the_same_bytes(flaky: Store, proxy: FaultProxy) -> None:
    proxy.fail_next(1, status=503, body=_gcs_error(503, "backend error"))
    assert flaky.read_range("obj.bin", 1000, 2000) == DATA[1000:3000]
    assert proxy.counters.failures == 1
    proxy.reset_next(1)  # a response cut midway
    assert flaky.read_range("obj.bin", 0, 40_000) == DATA[:40_000]
    assert proxy.counters.resets == 1


@pytest.mark.slow
def test_a_lasting_503_is_storage_unavailable(flaky: Store, proxy: FaultProxy) -> None:
    """(gcsfs retries a 503 itself, 6 attempts over about 30 s, before tilestream sees it.)"""
    proxy.fail_next(1000, status=503, body=_gcs_error(503, "backend error"))
    try:
        with pytest.raises(StorageUnavailableError, match=rf"gs://{BUCKET}/obj.bin"):
            flaky.read_range("obj.bin", 0, 10)
    finally:
        proxy.clear()


def test_a_403_is_access_denied(flaky: Store, proxy: FaultProxy) -> None:
    proxy.fail_next(1, status=403, body=_gcs_error(403, "anonymous caller has no access"))
    try:
        with pytest.raises(StorageAccessDeniedError, match=rf"gs://{BUCKET}/obj.bin"):
            flaky.read_range("obj.bin", 0, 10)
    finally:
        proxy.clear()
