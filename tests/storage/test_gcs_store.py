"""The storage contract on a real GCS JSON-API server (fake-gcs-server on loopback), via gcsfs.

``gs://`` URLs go through :func:`~tilestream.storage.store_for` to an
:class:`~tilestream.storage.FsspecStore` over gcsfs, pointed at the emulator
with ``storage_options`` (``endpoint_url``, ``token="anon"``). The emulator
has no authentication, so refused credentials are tested on S3 only
(``test_s3.py``). Conditional writes are GCS's ``ifGenerationMatch=0``
(gcsfs's ``mode="create"``): the conformance suite races writers for one key.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from tilestream.errors import StorageNotFoundError
from tilestream.storage import FsspecStore, Store, store_for
from tilestream.testing.fakegcs import FakeGcsServer
from tilestream.testing.storage import StoreConformance

# gcsfs hands aiohttp each upload (a part, or a whole small object) as bytes; aiohttp warns
# about bodies over 1 MiB. Not ours, and harmless: the upload completes.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Sending a large body directly with raw bytes:ResourceWarning"
)

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def conformance_bucket(fake_gcs: FakeGcsServer) -> str:
    return fake_gcs.make_bucket("conformance")


class TestGcsStore(StoreConformance):
    @pytest.fixture
    def store(self, fake_gcs: FakeGcsServer, conformance_bucket: str) -> Store:
        # One bucket, a fresh prefix per test: the store's root is "bucket/prefix".
        base, key = store_for(f"gs://{conformance_bucket}", fake_gcs.storage_options)
        assert key == "" and isinstance(base, FsspecStore)
        assert base.protocol == "gs" and base.supports_conditional_write
        prefix = f"{conformance_bucket}/t{next(_prefixes)}"
        return FsspecStore(base.fs, prefix, url=f"gs://{prefix}", retry=base.retry)


@pytest.fixture(scope="module")
def bucket(fake_gcs: FakeGcsServer) -> str:
    name = fake_gcs.make_bucket("gcs-errors")
    store, _ = store_for(f"gs://{name}", fake_gcs.storage_options)
    store.write_atomic("slides/a.bin", b"0123456789")
    return name


def test_gs_store_for_splits_bucket_and_key(fake_gcs: FakeGcsServer, bucket: str) -> None:
    store, key = store_for(f"gs://{bucket}/slides/a.bin", fake_gcs.storage_options)
    assert isinstance(store, FsspecStore)
    assert (store.url, key) == (f"gs://{bucket}", "slides/a.bin")
    assert store.read_range(key, 2, 3) == b"234"
    stat = store.stat(key)
    assert (stat.size, bool(stat.etag)) == (10, True)
    assert list(store.list()) == ["slides/a.bin"]  # the bucket's root


def test_missing_bucket_and_missing_key(fake_gcs: FakeGcsServer, bucket: str) -> None:
    store, key = store_for("gs://no-such-bucket/a.bin", fake_gcs.storage_options)
    with pytest.raises(StorageNotFoundError, match=r"gs://no-such-bucket/a.bin: no such object"):
        store.read_range(key, 0, 1)
    store, key = store_for(f"gs://{bucket}/slides/missing.bin", fake_gcs.storage_options)
    with pytest.raises(StorageNotFoundError, match=rf"gs://{bucket}/slides/missing.bin"):
        store.stat(key)


def test_a_conditional_write_never_replaces_an_object(fake_gcs: FakeGcsServer, bucket: str) -> None:
    store, _ = store_for(f"gs://{bucket}", fake_gcs.storage_options)
    assert store.supports_conditional_write
    assert store.put_if_absent("locks/lease", b"first")
    assert not store.put_if_absent("locks/lease", b"second")
    assert store.read("locks/lease") == b"first"


def test_an_overwrite_is_a_new_generation(fake_gcs: FakeGcsServer, bucket: str) -> None:
    """What resume compares: the version changes when an object is replaced by the same size."""
    store, _ = store_for(f"gs://{bucket}", fake_gcs.storage_options)
    store.write_atomic("gen/o.bin", b"aaaa")
    before = store.stat("gen/o.bin")
    store.write_atomic("gen/o.bin", b"bbbb")
    after = store.stat("gen/o.bin")
    assert before.size == after.size == 4
    assert before.version != after.version


def test_the_server_starts_answers_and_stops(tmp_path: Path) -> None:
    """A second server of its own: buckets persist in its folder; stop ends the process."""
    from tilestream.testing.fakegcs import fake_gcs_binary

    if fake_gcs_binary() is None:
        pytest.skip("fake-gcs-server is not installed")
    with FakeGcsServer(tmp_path) as server:
        assert server.running and "127.0.0.1" in repr(server)
        assert server.make_bucket("one") == "one"
        assert server.make_bucket("one") == "one"  # an existing bucket is kept
        assert server.buckets() == ["one"]
        port = server.port
    assert not server.running
    with socket.socket() as sock:  # nothing listens on the port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    assert (tmp_path / "data" / "one").is_dir() and (tmp_path / "fake-gcs.log").exists()
