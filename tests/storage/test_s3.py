"""The storage contract on a real S3 server (SeaweedFS on loopback), and its errors."""

from __future__ import annotations

import itertools
import logging
import traceback

import pytest

from tilestream.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
    StorageReadOnlyError,
)
from tilestream.storage import FsspecStore, Store, store_for
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.testing.storage import StoreConformance

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def conformance_bucket(seaweed: SeaweedServer) -> str:
    return seaweed.make_bucket("conformance")


class TestS3Store(StoreConformance):
    @pytest.fixture
    def store(self, seaweed: SeaweedServer, conformance_bucket: str) -> Store:
        # One bucket, a fresh prefix per test: the store's root is "bucket/prefix".
        base, key = store_for(f"s3://{conformance_bucket}", seaweed.storage_options)
        assert key == "" and isinstance(base, FsspecStore)
        prefix = f"{conformance_bucket}/t{next(_prefixes)}"
        return FsspecStore(base.fs, prefix, url=f"s3://{prefix}", retry=base.retry)

    @pytest.fixture
    def secrets(self, seaweed: SeaweedServer) -> list[str]:
        return [seaweed.secret_key, seaweed.read_only_secret]


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer) -> str:
    name = seaweed.make_bucket("errors")
    store, _ = store_for(f"s3://{name}", seaweed.storage_options)
    store.write_atomic("slides/a.bin", b"0123456789")
    return name


def _no_secret(seaweed: SeaweedServer, exc: BaseException, text: str = "") -> None:
    full = "".join(traceback.format_exception(exc)) + repr(exc) + text
    assert seaweed.secret_key not in full
    assert seaweed.read_only_secret not in full


def test_s3_store_for_splits_bucket_and_key(seaweed: SeaweedServer, bucket: str) -> None:
    store, key = store_for(f"s3://{bucket}/slides/a.bin", seaweed.storage_options)
    assert isinstance(store, FsspecStore)
    assert (store.url, key) == (f"s3://{bucket}", "slides/a.bin")
    assert store.read_range(key, 2, 3) == b"234"
    assert store.etag(key)
    assert list(store.list()) == ["slides/a.bin"]  # the bucket's root
    assert seaweed.secret_key not in repr(store)


def test_wrong_credentials_are_a_clear_error(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = {**seaweed.storage_options, "secret": "not-the-" + seaweed.secret_key}
    store, key = store_for(f"s3://{bucket}/slides/a.bin", options)
    with caplog.at_level(logging.DEBUG, logger="tilestream"):
        with pytest.raises(StorageAccessDeniedError) as info:
            store.read_range(key, 0, 4)
        with pytest.raises(StorageAccessDeniedError):
            store.stat(key)
    message = str(info.value)
    assert f"s3://{bucket}/slides/a.bin" in message
    assert "credentials" in message
    _no_secret(seaweed, info.value, caplog.text)
    assert "not-the-" not in "".join(traceback.format_exception(info.value))


def test_missing_bucket_and_missing_key(seaweed: SeaweedServer, bucket: str) -> None:
    store, key = store_for("s3://no-such-bucket/a.bin", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match=r"s3://no-such-bucket/a.bin: no such bucket"):
        store.read_range(key, 0, 1)
    store, key = store_for(f"s3://{bucket}/slides/missing.bin", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match=rf"s3://{bucket}/slides/missing.bin"):
        store.read_range(key, 0, 1)


def test_check_root_asks_for_the_bucket(seaweed: SeaweedServer, bucket: str) -> None:
    store, _ = store_for(f"s3://{bucket}/some/prefix", seaweed.storage_options)
    store.check_root()
    missing, _ = store_for("s3://no-such-bucket/run", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match=r"^s3://no-such-bucket: no such bucket; create"):
        missing.check_root()
    wrong, _ = store_for(f"s3://{bucket}", {**seaweed.storage_options, "secret": "wrong-1234"})
    with pytest.raises(StorageAccessDeniedError) as info:
        wrong.check_root()
    assert "wrong-1234" not in str(info.value)


def test_a_read_only_identity_may_read_but_not_write(seaweed: SeaweedServer, bucket: str) -> None:
    store, key = store_for(f"s3://{bucket}/slides/a.bin", seaweed.read_only_options)
    assert store.read(key) == b"0123456789"
    with pytest.raises(
        StorageAccessDeniedError, match=r"access denied \(AccessDenied, HTTP 403\)"
    ) as info:
        store.write_atomic("slides/new.bin", b"x")
    assert f"s3://{bucket}/slides/new.bin" in str(info.value)
    assert isinstance(info.value, PermissionError)
    _no_secret(seaweed, info.value)
    with pytest.raises(StorageAccessDeniedError):
        store.put_if_absent("slides/lease", b"x")


def test_unreachable_endpoint_is_retried_then_reported(seaweed: SeaweedServer) -> None:
    from tilestream.storage import RetryPolicy
    from tilestream.testing.seaweedfs import free_port_pair

    options = {**seaweed.storage_options, "endpoint_url": f"http://127.0.0.1:{free_port_pair()}"}
    store, key = store_for(
        "s3://bucket/a.bin", options, retry=RetryPolicy(attempts=3, base_delay=0.01)
    )
    with pytest.raises(
        StorageError, match=r"s3://bucket/a.bin: connection failed .*after 3 attempts"
    ):
        store.read_range(key, 0, 1)
    assert store.stats.retries == 2


def test_credentials_from_the_environment_never_appear(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-" + seaweed.secret_key)
    options = {"endpoint_url": seaweed.endpoint_url, "client_kwargs": {"region_name": "us-east-1"}}
    store, key = store_for(f"s3://{bucket}/slides/a.bin", {**options, "skip_instance_cache": True})
    with pytest.raises(StorageAccessDeniedError) as info:
        store.read(key)
    _no_secret(seaweed, info.value, repr(store))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    store, key = store_for(f"s3://{bucket}/slides/a.bin", {**options, "skip_instance_cache": True})
    assert store.read(key) == b"0123456789"


def test_http_reads_by_range_and_is_read_only(seaweed: SeaweedServer, bucket: str) -> None:
    # SeaweedFS's filer serves the bucket's objects over plain HTTP and honours Range.
    store, key = store_for(f"{seaweed.filer_url}/buckets/{bucket}/slides/a.bin")
    assert store.read_only and store.size(key) == 10
    assert store.read_ranges(key, [(7, 3), (0, 2)]) == [b"789", b"01"]
    with store.open_read(key) as f:
        f.seek(4)
        assert f.read(2) == b"45"
    with pytest.raises(StorageReadOnlyError, match=rf"{seaweed.filer_url}/buckets/{bucket}/x"):
        store.write_atomic(f"buckets/{bucket}/x", b"x")
    missing, mkey = store_for(f"{seaweed.filer_url}/buckets/{bucket}/none.bin?token=secret-token")
    with pytest.raises(StorageNotFoundError) as info:
        missing.read(mkey)
    assert str(info.value).startswith(f"{seaweed.filer_url}/buckets/{bucket}/none.bin: ")
    assert "secret-token" not in "".join(traceback.format_exception(info.value))
