"""The loaders over TFRecords in SeaweedFS (S3 and the filer's HTTP) give what they give locally.

Same records and bytes, the same epoch multiset through real DataLoader workers and simulated
ranks (every record exactly once), few large requests, and faults retried or reported clearly.
"""

from __future__ import annotations

import collections
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _remote import KINDS, Remote, make_remote
from tilestream.errors import CorruptRecordError, StorageNotFoundError, StorageUnavailableError
from tilestream.loaders.stream import ReadPlan, multi_tfrecord_loader, tfrecord_loader
from tilestream.testing.faultproxy import FaultProxy
from tilestream.tfrecord import load_index

SPEC = [("a", 70), ("b", 9), ("c", 130), ("d", 41)]


def expected(spec: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted((s, j) for s, n in spec for j in range(n))


def run(loader: Any) -> list[tuple[str, int]]:
    out = []
    for batch in loader:
        out += list(zip(batch["slide"], batch["loc_x"].tolist(), strict=True))
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILESTREAM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=KINDS)
def remote(request: pytest.FixtureRequest) -> Remote:
    return make_remote(request.param, request, "loaders")


def _key(record: dict[str, Any]) -> tuple[bytes, int]:
    return record["slide"], record["loc_x"]


def test_streams_match_local(remote: Remote, write_tfrecords: Any) -> None:
    paths = write_tfrecords(SPEC)
    urls = remote.put(paths)
    opts = remote.options
    for path, url in zip(paths, urls, strict=True):
        assert list(tfrecord_loader(url, parser=bytes, storage_options=opts)) == list(
            tfrecord_loader(path, parser=bytes)
        )
    local = sorted(map(_key, multi_tfrecord_loader(paths, infinite=False, shuffle=True, seed=4)))
    got = multi_tfrecord_loader(urls, infinite=False, shuffle=True, seed=4, storage_options=opts)
    assert sorted(map(_key, got)) == local
    # Exactly once over shards, for several shard counts (runs of blocks, not strides).
    for n in (2, 3, 5):
        seen = []
        for i in range(n):
            stream = multi_tfrecord_loader(
                urls, infinite=False, shuffle=True, seed=1, shard=(i, n), storage_options=opts,
                read_plan=ReadPlan(block_records=8, read_ahead=1 << 16, shuffle_buffer=16),
            )  # fmt: skip
            seen += [_key(r) for r in stream]
        assert sorted(seen) == local


def test_the_shuffle_changes_with_the_epoch_and_mixes_files(
    write_tfrecords: Any, request: Any
) -> None:
    remote = make_remote("s3", request, "shuffle")
    urls = remote.put(write_tfrecords(SPEC))

    def order(epoch: int) -> list[tuple[bytes, int]]:
        return [
            _key(r)
            for r in multi_tfrecord_loader(
                urls,
                infinite=False,
                shuffle=True,
                seed=2,
                epoch=epoch,
                storage_options=remote.options,
            )
        ]

    first, again, second = order(0), order(0), order(1)
    assert first == again and first != second
    assert sorted(first) == sorted(second) == expected_bytes(SPEC)
    slides_in_first_100 = {s for s, _ in first[:100]}
    assert len(slides_in_first_100) >= 3


def expected_bytes(spec: list[tuple[str, int]]) -> list[tuple[bytes, int]]:
    return [(s.encode(), j) for s, j in expected(spec)]


@pytest.mark.torch
def test_tile_dataset_epoch_matches_local_with_workers(
    torch: Any, remote: Remote, write_tfrecords: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tilestream.torch import IndexedTileDataset, TileDataset

    paths = write_tfrecords(SPEC)
    urls = remote.put(paths)
    local = TileDataset(paths, as_dict=True, seed=3)
    ds = TileDataset(urls, as_dict=True, seed=3, storage_options=remote.options)
    assert ds.num_records == local.num_records and ds.tfrecords == [u.split("?")[0] for u in urls]
    images: dict[tuple[str, int], Any] = {}
    for batch in torch.utils.data.DataLoader(local, batch_size=16, num_workers=0):
        for s, x, img in zip(batch["slide"], batch["loc_x"].tolist(), batch["image"], strict=True):
            images[(s, x)] = img
    seen = []
    for batch in torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2):
        for s, x, img in zip(batch["slide"], batch["loc_x"].tolist(), batch["image"], strict=True):
            assert torch.equal(img, images[(s, x)])
            seen.append((s, x))
    assert sorted(seen) == expected(SPEC)
    indexed = IndexedTileDataset(urls, as_dict=True, storage_options=remote.options)
    ref = IndexedTileDataset(paths, as_dict=True)
    for i in (0, 75, len(ref) - 1):
        assert torch.equal(indexed[i]["image"], ref[i]["image"])
        assert indexed[i]["loc_x"] == ref[i]["loc_x"]


@pytest.mark.torch
def test_two_ranks_two_workers_over_s3_read_every_record_once(
    torch: Any, request: Any, write_tfrecords: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tilestream.torch import TileDataset

    remote = make_remote("s3", request, "ranks")
    urls = remote.put(write_tfrecords(SPEC))
    ds = TileDataset(urls, as_dict=True, seed=5, storage_options=remote.options)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen = []
        for rank in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            seen += run(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2))
        assert sorted(seen) == expected(SPEC)
        assert len(seen) == len(set(seen))


@pytest.mark.torch
def test_requests_carry_many_records(torch: Any, request: Any, write_tfrecords: Any) -> None:
    from tilestream.torch import TileDataset

    remote = make_remote("s3", request, "counts")
    urls = remote.put(write_tfrecords([("a", 400), ("b", 300)]))
    ds = TileDataset(urls, seed=0, batch_size=64, storage_options=remote.options)
    assert ds.plan_io.requests >= 2  # stats and indexes
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    n = sum(len(b[0]) for b in loader)
    assert n == 700
    io = ds.io_stats()
    assert io.requests > 0 and io.bytes_read >= sum(os.path.getsize(p) for p in [])
    assert n / io.requests >= 20, io
    sizes = sum(int(load_index(p).lengths.sum()) for p in write_tfrecords([("a", 400), ("b", 300)]))
    assert io.bytes_read <= sizes * 1.05  # no read amplification to speak of


def test_missing_object_and_bad_crc_are_clear(remote: Remote, write_tfrecords: Any) -> None:
    if remote.kind == "local":
        pytest.skip("the local cases are in test_loaders_stream")
    with pytest.raises(StorageNotFoundError, match=remote.url("run/none.tfrecords")):
        multi_tfrecord_loader([remote.url("run/none.tfrecords")], storage_options=remote.options)
    (path,) = write_tfrecords([("a", 6)])
    offset = int(load_index(path).offsets[3])
    data = bytearray(Path(path).read_bytes())
    data[offset + 30] ^= 0xFF
    (url,) = remote.put([path], with_indexes=False)
    remote.put_bytes("run/a.tfrecords", bytes(data))
    with pytest.raises(CorruptRecordError, match=rf"{url}: record 3 at byte {offset}"):
        list(tfrecord_loader(url, storage_options=remote.options))
    got = tfrecord_loader(url, storage_options=remote.options, on_error="skip")
    assert [r["loc_x"] for r in got] == [0, 1, 2, 4, 5]


@pytest.fixture
def proxied(
    request: Any, write_tfrecords: Any
) -> Iterator[tuple[FaultProxy, list[str], dict[str, Any], list[str]]]:
    remote = make_remote("s3", request, "loaderfaults")
    paths = write_tfrecords(SPEC)
    urls = remote.put(paths)
    with FaultProxy.for_url(remote.seaweed.endpoint_url) as proxy:
        yield proxy, urls, {**remote.seaweed.storage_options, "endpoint_url": proxy.url}, paths


@pytest.mark.torch
def test_faults_are_retried_with_identical_epochs(
    torch: Any, proxied: tuple[FaultProxy, list[str], dict[str, Any], list[str]]
) -> None:
    from tilestream.torch import TileDataset

    proxy, urls, options, _ = proxied
    ds = TileDataset(urls, as_dict=True, seed=1, storage_options=options, block_records=16)
    clean = run(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    proxy.reset_next(2)
    proxy.fail_next(2, status=503)
    faulty = run(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    assert faulty == clean and sorted(clean) == expected(SPEC)
    assert proxy.counters.resets >= 2 and proxy.counters.failures >= 2


def test_a_persistent_fault_is_a_clear_error_and_no_hang(
    proxied: tuple[FaultProxy, list[str], dict[str, Any], list[str]],
) -> None:
    proxy, urls, options, _ = proxied
    stream = multi_tfrecord_loader(urls, infinite=False, storage_options=options)
    proxy.fail_next(100_000, status=503)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"s3://loaderfaults-\w+/run/") as info:
        list(stream)
    assert time.monotonic() - started < 90
    text = "".join(traceback.format_exception(info.value))
    assert options["secret"] not in text and options["key"] not in text
    proxy.clear()


def test_an_infinite_stream_of_small_records_reads_ahead_a_bounded_number_of_blocks(
    proxied: tuple[FaultProxy, list[str], dict[str, Any], list[str]],
) -> None:
    # A shard of 3 records of a 9-record file: every pass is a new block. The byte budget
    # (64 MiB) alone would queue one request per pass until it held 64 MiB of them.
    from tilestream.loaders.remote import BlockPrefetcher

    proxy, urls, options, _ = proxied
    b_url = urls[1]  # SPEC[1]: ("b", 9)
    list(multi_tfrecord_loader([b_url], infinite=False, storage_options=options))  # the index
    proxy.reset_counters()
    started = time.monotonic()
    got = list(
        multi_tfrecord_loader(
            [b_url], shard=(1, 3), seed=2, shuffle=True, epoch_length=40, storage_options=options
        )
    )
    assert len(got) == 40 and time.monotonic() - started < 10
    # 14 passes of 3 records, at most 3 requests each (blocks of a record: 9 // 3 shards is
    # 3, cut into blocks of 3 or fewer), plus what was queued ahead at the end and opening the file.
    limit = 14 * 3 + BlockPrefetcher.ahead_blocks + BlockPrefetcher.workers + 4
    assert proxy.counters.requests <= limit, proxy.counters
    assert len({_key(r) for r in got}) > 3  # the shard's records change from pass to pass


@pytest.mark.tensorflow
def test_tile_dataset_tf_matches_local(request: Any, write_tfrecords: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    from tilestream.tf import tile_dataset

    remote = make_remote("s3", request, "tfdata")
    paths = write_tfrecords(SPEC)
    urls = remote.put(paths)

    def content(ds: Any) -> list[tuple[str, int, bytes]]:
        out = []
        for img, _label, slide, x, _y in ds:
            out.append((slide.numpy().decode(), int(x), img.numpy().tobytes()))
        return sorted(out)

    kw: dict[str, Any] = {"incl_slidenames": True, "incl_loc": True, "seed": 2}
    local = content(tile_dataset(paths, **kw))
    got = content(tile_dataset(urls, storage_options=remote.options, **kw))
    assert got == local and len(got) == sum(n for _, n in SPEC)
    shards = [
        content(tile_dataset(urls, shard=(i, 2), storage_options=remote.options, **kw))
        for i in range(2)
    ]
    assert sorted(shards[0] + shards[1]) == local
    assert tf is not None


def test_a_prefix_url_lists_its_tfrecords(
    request: Any, write_tfrecords: Any, tmp_path: Path
) -> None:
    from tilestream.loaders.tiles import list_tfrecords, plan_tiles

    remote = make_remote("s3", request, "prefix")
    urls = remote.put(write_tfrecords(SPEC))
    remote.put_bytes("run/notes.txt", b"x")
    remote.put_bytes("run/sub/e.tfrecords", b"")
    found = list_tfrecords(f"s3://{remote.bucket}/run/", remote.options)
    assert found == sorted(urls)
    plan = plan_tiles(f"s3://{remote.bucket}/run", storage_options=remote.options)
    assert plan.num_records == sum(n for _, n in SPEC)
    assert collections.Counter(plan.slides) == collections.Counter(s for s, _ in SPEC)
    assert np.all(np.asarray(plan.lengths) > 0)
