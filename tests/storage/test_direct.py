"""S3 reads as presigned ranged GETs over a plain HTTP pool (``storage/_direct.py``), on SeaweedFS.

The direct path must give the bytes and errors s3fs gives, re-sign a URL the
store refuses as expired, never show the signed URL, and stand aside where it
cannot do what botocore does (requester pays, extra request parameters, proxies).
"""

from __future__ import annotations

import logging
import os
import pickle
import time

import pytest

from tilestream.errors import (
    StorageAccessDeniedError,
    StorageNotFoundError,
    StorageUnavailableError,
)
from tilestream.storage import FsspecStore, RetryPolicy, store_for
from tilestream.storage import _direct as direct
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.timeout(180)

PAYLOAD = os.urandom(3 << 20)


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer) -> str:
    name = seaweed.make_bucket("direct-get")
    store, key = store_for(f"s3://{name}/blob.bin", seaweed.storage_options)
    store.write_atomic(key, PAYLOAD)
    return name


def _store(url: str, options: dict[str, object], **kw: object) -> FsspecStore:
    store, _ = store_for(url, {**options, "skip_instance_cache": True}, **kw)  # type: ignore[arg-type]
    assert isinstance(store, FsspecStore)
    return store


def test_reads_bypass_s3fs_and_equal_its_bytes(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _store(f"s3://{bucket}", seaweed.storage_options)
    monkeypatch.setenv("TILESTREAM_S3_DIRECT", "0")
    slow = _store(f"s3://{bucket}", seaweed.storage_options)
    assert fast.direct_reads and not slow.direct_reads
    ranges = [(0, 10), (5, 1 << 20), (len(PAYLOAD) - 7, 7), (len(PAYLOAD) - 3, 100), (1234, 0)]
    for store in (fast, slow):
        assert store.read("blob.bin") == PAYLOAD
        for offset, size in ranges:
            assert store.read_range("blob.bin", offset, size) == PAYLOAD[offset : offset + size]
        assert store.read_range("blob.bin", len(PAYLOAD) + 10, 5) == b""  # past the end
        got = store.read_ranges("blob.bin", [(0, 100), (2 << 20, 4096), (50, 10)], max_gap=0)
        assert got == [PAYLOAD[:100], PAYLOAD[2 << 20 : (2 << 20) + 4096], PAYLOAD[50:60]]
    assert fast.stats.requests == slow.stats.requests
    assert fast.stats.bytes_read == slow.stats.bytes_read


def test_errors_are_those_of_s3fs(seaweed: SeaweedServer, bucket: str) -> None:
    store = _store(f"s3://{bucket}", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match=rf"s3://{bucket}/nothing\.bin: no such object"):
        store.read_range("nothing.bin", 0, 10)
    missing = _store("s3://no-such-direct-bucket", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match="no such bucket"):
        missing.read("blob.bin")
    wrong = _store(f"s3://{bucket}", {**seaweed.storage_options, "secret": "not-the-secret-123"})
    with pytest.raises(StorageAccessDeniedError, match="credentials were refused") as info:
        wrong.read_range("blob.bin", 0, 10)
    assert "not-the-secret-123" not in str(info.value)
    assert "X-Amz" not in str(info.value) and seaweed.access_key not in str(info.value)


def test_an_expired_url_is_signed_again(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "EXPIRES", 1)
    monkeypatch.setattr(direct, "REFRESH", 1000.0)  # keep using the URL long after it expired
    store = _store(f"s3://{bucket}", seaweed.storage_options)
    assert store.read_range("blob.bin", 0, 16) == PAYLOAD[:16]
    time.sleep(2.5)  # SeaweedFS now answers the cached URL with 403 "Request has expired"
    assert store.read_range("blob.bin", 16, 16) == PAYLOAD[16:32]
    assert store.stats.retries == 0  # signed again at once, not retried with backoff


def test_faults_are_retried_and_never_show_the_signed_url(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FaultProxy.for_url(seaweed.endpoint_url) as proxy:
        options = {**seaweed.storage_options, "endpoint_url": proxy.url}
        store = _store(f"s3://{bucket}", options, retry=RetryPolicy(attempts=3, base_delay=0.0))
        assert store.direct_reads
        store.read_range("blob.bin", 0, 10)  # signed, connected
        proxy.reset_next(1)
        proxy.fail_next(1)
        assert store.read_range("blob.bin", 0, 2 << 20) == PAYLOAD[: 2 << 20]
        assert store.stats.retries == 2
        proxy.fail_next(10)
        with pytest.raises(StorageUnavailableError, match="after 3 attempts") as info:
            store.read_range("blob.bin", 0, 10)
    # botocore's own DEBUG lines show every request's signature (as for any botocore
    # request); tilestream's lines and the HTTP pool's never do
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("botocore"))
    assert "<signed>" in logged  # the pool's lines were there, their query hidden
    shown = str(info.value) + repr(info.value) + logged
    assert f"s3://{bucket}/blob.bin" in str(info.value)
    for secret in ("Signature=", "X-Amz-Credential", seaweed.access_key, seaweed.secret_key):
        assert secret not in shown
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_pickled_store_reads_in_the_new_process_state(
    seaweed: SeaweedServer, bucket: str
) -> None:
    store = _store(f"s3://{bucket}", seaweed.storage_options)
    store.read_range("blob.bin", 0, 10)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.direct_reads
    assert copy.read_range("blob.bin", 100, 50) == PAYLOAD[100:150]


@pytest.mark.parametrize(
    "extra",
    [
        {"requester_pays": True},
        {"s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256"}},
        {"config_kwargs": {"proxies": {"http": "http://127.0.0.1:9"}}},
    ],
    ids=["requester-pays", "extra-parameters", "proxies"],
)
def test_what_botocore_must_send_stays_on_s3fs(
    seaweed: SeaweedServer, bucket: str, extra: dict[str, object]
) -> None:
    store = _store(f"s3://{bucket}", {**seaweed.storage_options, **extra})
    assert not store.direct_reads


def test_an_environment_proxy_for_the_endpoint_leaves_reads_to_s3fs(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real forward proxy would be needed to read through it; here it only must not be bypassed
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    store = _store(f"s3://{bucket}", seaweed.storage_options, retry=RetryPolicy(attempts=1))
    with pytest.raises(StorageUnavailableError):
        store.read_range("blob.bin", 0, 10)  # s3fs itself goes to the (dead) proxy
    assert not store.direct_reads


def _child_reads_without_signing(store: FsspecStore, expected: bytes) -> None:
    ok = store.read_range("blob.bin", 0, len(expected)) == expected
    # the URL the parent signed served the child: s3fs made no client (no session, no models)
    os._exit(0 if ok and getattr(store.fs, "_s3", None) is None else 3)


def test_a_forked_child_reads_with_the_parents_urls_on_its_own_connections(
    seaweed: SeaweedServer, bucket: str
) -> None:
    import multiprocessing

    store = _store(f"s3://{bucket}", seaweed.storage_options)
    assert store.read_range("blob.bin", 0, 10) == PAYLOAD[:10]  # signed, and a pooled connection
    child = multiprocessing.get_context("fork").Process(
        target=_child_reads_without_signing, args=(store, PAYLOAD[:4096])
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert store.read_range("blob.bin", 10, 10) == PAYLOAD[10:20]  # the parent's pool still works
