"""TFRecords read by URL (SeaweedFS over S3 and over its filer's HTTP) as they are read locally.

The same files are read from local disk, ``s3://`` and ``http://`` and must give the same
records, bytes, decoded examples and errors; indexes are cached by ETag; faults are retried.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _remote import KINDS, Remote, make_remote
from tilestream.errors import (
    CorruptRecordError,
    StorageNotFoundError,
    StorageUnavailableError,
    TruncatedRecordError,
)
from tilestream.storage import store_for
from tilestream.testing.faultproxy import FaultProxy
from tilestream.tfrecord import (
    TFRecord,
    TFRecordWriter,
    iter_examples,
    iter_records,
    serialized_record,
)
from tilestream.tfrecord.framing import frame
from tilestream.tfrecord.remote import RemoteObject
from tilestream.tfrecord.remote_index import cache_dir, cache_path, remote_index

GRID = [(x * 256, y * 256) for y in range(6) for x in range(7)]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TILESTREAM_CACHE", str(root))
    return root


def _tiles(folder: Path, name: str = "slide-1", *, index: bool = True, n: int = 42) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.tfrecords"
    rng = np.random.default_rng(len(name) + n)
    with TFRecordWriter(path, index=index) as w:
        for i, (x, y) in enumerate(GRID[:n] if n <= len(GRID) else [(i, 0) for i in range(n)]):
            img = b"\xff\xd8\xff" + rng.bytes(int(rng.integers(200, 3000))) + bytes([i % 256])
            w.write(serialized_record(name, img, x, y), location=(x, y))
    return path


@pytest.fixture(params=KINDS)
def remote(request: pytest.FixtureRequest) -> Remote:
    return make_remote(request.param, request, "tfrecords")


def test_records_examples_and_random_access_match_local(remote: Remote, tmp_path: Path) -> None:
    path = _tiles(tmp_path / "local")
    (url,) = remote.put([path])
    opts = remote.options
    assert list(iter_records(url, storage_options=opts)) == list(iter_records(path))
    assert list(iter_examples(url, storage_options=opts)) == list(iter_examples(path))
    local = TFRecord(path)
    tfr = TFRecord(url, storage_options=opts)
    assert len(tfr) == len(local) == len(GRID)
    assert [tfr[i] for i in range(len(tfr))] == [local[i] for i in range(len(local))]
    assert tfr[-1] == local[-1] and tfr[5:9] == local[5:9]
    assert tfr.read_raw(7) == local.read_raw(7)
    assert tfr.locations == local.locations
    assert tfr.get_record_by_xy(512, 256) == local.get_record_by_xy(512, 256)
    assert tfr.fields == local.fields and tfr.img_format == local.img_format
    assert tfr.get_size() == path.stat().st_size
    again = pickle.loads(pickle.dumps(tfr))
    assert again[3] == local[3]
    assert url in repr(tfr)


def test_file_urls_read_the_local_file(tmp_path: Path) -> None:
    path = _tiles(tmp_path)
    assert list(iter_records(path.as_uri())) == list(iter_records(path))
    assert TFRecord(path.as_uri())[4] == TFRecord(path)[4]


@pytest.mark.parametrize("kind", ["s3", "http"])
def test_real_tfrecords_match_local(
    kind: str, request: pytest.FixtureRequest, tfrecords_dir: Path
) -> None:
    remote = make_remote(kind, request, "realtfr")
    names = [
        "raccoon_test.record",
        "tfx_mnist.tfrecord",
        "tfx_penguin_train_data_tfrecord-00000-of-00001.gz",
    ]
    urls = remote.put([tfrecords_dir / n for n in names], with_indexes=False)
    for name, url in zip(names, urls, strict=True):
        local = tfrecords_dir / name
        assert list(iter_records(url, storage_options=remote.options)) == list(iter_records(local))
        tfr, ref = (
            TFRecord(url, storage_options=remote.options),
            TFRecord(local, create_index=False),
        )
        assert len(tfr) == len(ref)
        for i in (0, len(ref) // 2, len(ref) - 1):
            assert tfr.read_raw(i) == ref.read_raw(i)


# ----------------------------------------------------------------------------- the index cache


def test_index_cache_hit_miss_and_etag_change(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = make_remote("s3", request, "tfrcache")
    path = _tiles(tmp_path / "a", index=False)
    (url,) = remote.put([path])
    obj = RemoteObject.open(url, remote.options)
    first = remote_index(obj)  # miss: no index beside it, a scan
    assert first.path == cache_path(obj) and first.path.exists()
    assert len(first) == len(GRID) and first.locations is not None
    scanned = obj.store.stats.requests

    again = RemoteObject.open(url, remote.options)
    hit = remote_index(again)  # hit: the stat only
    assert again.store.stats.requests == 1 and again.store.stats.bytes_read == 0
    np.testing.assert_array_equal(hit.array, first.array)
    assert scanned >= 3  # stat, head, ranged reads of the data

    # The object is replaced (a new ETag): the old index is never used.
    bigger = _tiles(tmp_path / "b", index=False, n=50)
    remote.put_bytes("run/slide-1.tfrecords", bigger.read_bytes())
    changed = RemoteObject.open(url, remote.options)
    assert changed.version != obj.version
    assert len(remote_index(changed)) == 50
    assert len(TFRecord(url, storage_options=remote.options)) == 50
    assert len(list(cache_dir().glob("*.index.npz"))) == 2


def test_the_index_beside_the_object_is_fetched_once(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = make_remote("s3", request, "tfrbeside")
    path = _tiles(tmp_path, index=True)
    (url,) = remote.put([path])
    obj = RemoteObject.open(url, remote.options)
    index = remote_index(obj)
    assert obj.store.stats.requests == 2  # stat, the .index.npz; no scan
    assert len(index) == len(GRID)


def test_a_stale_index_beside_the_object_is_not_used(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = make_remote("s3", request, "tfrstale")
    old = _tiles(tmp_path / "old", index=True, n=10)
    (url,) = remote.put([old])
    new = _tiles(tmp_path / "new", index=False, n=30)
    remote.put_bytes("run/slide-1.tfrecords", new.read_bytes())  # the index stays the old one
    assert len(TFRecord(url, storage_options=remote.options)) == 30


def test_a_damaged_cache_file_is_rebuilt(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    remote = make_remote("s3", request, "tfrdamaged")
    (url,) = remote.put([_tiles(tmp_path, index=False)])
    obj = RemoteObject.open(url, remote.options)
    remote_index(obj).path.write_bytes(b"PK\x03\x04 not a zip")  # type: ignore[union-attr]
    assert len(remote_index(RemoteObject.open(url, remote.options))) == len(GRID)


# ----------------------------------------------------------------------------- errors


def test_a_missing_object_names_its_url(remote: Remote, tmp_path: Path) -> None:
    if remote.kind == "local":
        pytest.skip("local files: covered by the local tests")
    url = remote.url("run/none.tfrecords")
    with pytest.raises(StorageNotFoundError, match=url) as info:
        list(iter_records(url, storage_options=remote.options))
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match=url):
        len(TFRecord(url, storage_options=remote.options))


def test_a_bad_crc_is_the_local_error_with_the_url(remote: Remote, tmp_path: Path) -> None:
    records = [frame(bytes([i]) * 100) for i in range(5)]
    data = bytearray(b"".join(records))
    data[len(records[0]) * 3 + 40] ^= 0xFF  # record 3's payload
    path = tmp_path / "bad.tfrecords"
    path.write_bytes(bytes(data))
    (url,) = remote.put([path])
    with pytest.raises(CorruptRecordError) as local:
        list(iter_records(path))
    with pytest.raises(CorruptRecordError) as got:
        list(iter_records(url, storage_options=remote.options))
    assert got.value.record == local.value.record == 3
    assert got.value.offset == local.value.offset == 3 * len(records[0])
    assert str(got.value) == str(local.value).replace(str(path), url)
    tfr = TFRecord(url, storage_options=remote.options, create_index=False)
    with pytest.raises(CorruptRecordError, match=rf"{url}: record 3 at byte {3 * len(records[0])}"):
        tfr.read_raw(3)
    assert tfr.read_raw(2) == bytes([2]) * 100


def test_a_truncated_object_is_reported_like_a_local_file(remote: Remote, tmp_path: Path) -> None:
    path = tmp_path / "cut.tfrecords"
    path.write_bytes((frame(b"a" * 50) + frame(b"b" * 50))[:-7])
    (url,) = remote.put([path])
    it = iter_records(url, storage_options=remote.options, allow_truncated=True)
    assert list(it) == [b"a" * 50] and it.truncated_at == 66
    with pytest.raises(TruncatedRecordError, match="record 1 at byte 66"):
        list(iter_records(url, storage_options=remote.options))


# ----------------------------------------------------------------------------- faults


@pytest.fixture
def proxied(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FaultProxy, str, dict[str, Any], Path]]:
    remote = make_remote("s3", request, "tfrfaults")
    path = _tiles(tmp_path, n=40)
    (url,) = remote.put([path], with_indexes=False)
    with FaultProxy.for_url(remote.seaweed.endpoint_url) as proxy:
        yield proxy, url, {**remote.seaweed.storage_options, "endpoint_url": proxy.url}, path


def test_resets_and_503s_are_retried_with_identical_records(
    proxied: tuple[FaultProxy, str, dict[str, Any], Path],
) -> None:
    proxy, url, options, path = proxied
    expected = list(iter_records(path))
    proxy.reset_next(2)
    proxy.fail_next(2, status=503)
    assert list(iter_records(url, storage_options=options)) == expected
    proxy.reset_next(1)
    proxy.fail_next(1, status=503)
    tfr = TFRecord(url, storage_options=options)
    assert [tfr.read_raw(i) for i in range(len(tfr))] == expected
    assert proxy.counters.resets >= 3 and proxy.counters.failures >= 3


def test_a_persistent_fault_is_a_clear_error_without_secrets(
    proxied: tuple[FaultProxy, str, dict[str, Any], Path], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, url, options, _ = proxied
    caplog.set_level(logging.DEBUG, logger="tilestream")
    proxy.fail_next(10_000, status=503)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=url) as info:
        list(iter_records(url, storage_options=options))
    assert time.monotonic() - started < 60
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("tilestream")]
    assert ours  # the retries are logged
    text = "".join(traceback.format_exception(info.value)) + "\n".join(ours)
    assert options["secret"] not in text and options["key"] not in text
    out = io.StringIO()
    traceback.print_exception(info.value, file=out)
    assert options["secret"] not in out.getvalue()
    proxy.clear()


def test_remote_reads_are_large_ranged_requests(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = make_remote("s3", request, "tfrcount")
    path = _tiles(tmp_path, n=42)
    (url,) = remote.put([path])
    tfr = TFRecord(url, storage_options=remote.options)
    assert [tfr.read_raw(i) for i in range(len(tfr))] == list(iter_records(path))
    store = tfr._remote.store  # type: ignore[union-attr]
    # stat + index + one block of records (42 < 64 records, < 4 MiB)
    assert store.stats.requests <= 4
    store2, key = store_for(url, remote.options)
    assert store2.size(key) == path.stat().st_size
