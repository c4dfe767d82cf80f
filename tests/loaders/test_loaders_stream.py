"""Framework-free streams: order, sharding, clipping, weights, determinism, bad input.

The reading tests run once per ``storage`` kind: ``local``, and ``s3`` and ``http`` reading
the same files from SeaweedFS, with the same assertions.
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tilestream.errors import (
    ConfigError,
    CorruptRecordError,
    EmptyTFRecordsError,
    TFRecordError,
    UnsupportedRecordError,
)
from tilestream.loaders import multi_tfrecord_loader, tfrecord_loader


def ids(stream):
    return [(r["slide"].decode(), r["loc_x"]) for r in stream]


def expected(spec):
    return sorted((s, j) for s, n in spec for j in range(n))


def test_single_file_in_order_and_clipped(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("s1", 7)]))
    assert ids(tfrecord_loader(path, **storage.kw)) == [("s1", j) for j in range(7)]
    assert ids(tfrecord_loader(path, clip=3, **storage.kw)) == [("s1", j) for j in range(3)]


def test_single_file_shards_partition_it(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("s1", 10)]))
    parts = [ids(tfrecord_loader(path, shard=(i, 3), **storage.kw)) for i in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(x for p in parts for x in p) == expected([("s1", 10)])


def test_single_file_shuffle_is_per_epoch_and_reproducible(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("s1", 30)]))
    a = ids(tfrecord_loader(path, shuffle=True, seed=5, epoch=0, **storage.kw))
    b = ids(tfrecord_loader(path, shuffle=True, seed=5, epoch=0, **storage.kw))
    c = ids(tfrecord_loader(path, shuffle=True, seed=5, epoch=1, **storage.kw))
    assert a == b
    assert a != c
    assert sorted(a) == sorted(c) == expected([("s1", 30)])
    assert a != sorted(a)


def test_without_an_index_one_is_built_and_sharding_still_holds(storage, write_tfrecords, tmp_path):
    (path,) = storage.put(write_tfrecords([("s1", 9)], index=False), with_indexes=False)
    assert not list(tmp_path.glob("*.index*"))
    parts = [ids(tfrecord_loader(path, shard=(i, 2), **storage.kw)) for i in range(2)]
    assert sorted(parts[0] + parts[1]) == expected([("s1", 9)])
    assert not set(parts[0]) & set(parts[1])


@pytest.mark.timeout(60)  # an empty shard once looped forever
@pytest.mark.parametrize("shards", [1, 2, 3, 7, 25])
@pytest.mark.parametrize("shuffle", [False, True])
def test_finite_multi_stream_reads_every_record_once(storage, write_tfrecords, shards, shuffle):
    spec = [("a", 1), ("b", 9), ("c", 4), ("d", 0 + 2)]
    paths = storage.put(write_tfrecords(spec))
    seen = []
    for i in range(shards):
        seen += ids(
            multi_tfrecord_loader(
                paths,
                infinite=False,
                shard=(i, shards),
                shuffle=shuffle,
                seed=11,
                weights=[5, 1, 1, 0.5],
                **storage.kw,
            )
        )
    assert sorted(seen) == expected(spec)


def test_same_seed_same_stream_different_epoch_different_stream(storage, write_tfrecords):
    paths = storage.put(write_tfrecords([("a", 20), ("b", 20), ("c", 20)]))

    def run(seed, epoch):
        return ids(
            multi_tfrecord_loader(
                paths, infinite=False, shuffle=True, seed=seed, epoch=epoch, **storage.kw
            )
        )

    assert run(1, 0) == run(1, 0)
    assert run(1, 0) != run(1, 1)
    assert run(1, 0) != run(2, 0)


def test_weights_steer_the_interleave_and_renormalise_on_exhaustion(storage, write_tfrecords):
    paths = storage.put(write_tfrecords([("a", 60), ("b", 60)]))
    got = ids(
        multi_tfrecord_loader(paths, infinite=False, weights={"a": 9, "b": 1}, seed=3, **storage.kw)
    )
    # Early on, 'a' dominates; once it is exhausted the rest is all 'b' (renormalised).
    first = collections.Counter(s for s, _ in got[:40])
    assert first["a"] > 30
    assert sorted(got) == expected([("a", 60), ("b", 60)])
    last_a = max(i for i, (s, _) in enumerate(got) if s == "a")
    assert all(s == "b" for s, _ in got[last_a + 1 :])


def test_infinite_stream_cycles_files_with_weights(storage, write_tfrecords):
    paths = storage.put(write_tfrecords([("a", 3), ("b", 5)]))
    got = ids(multi_tfrecord_loader(paths, weights=[1, 3], seed=0, epoch_length=4000, **storage.kw))
    assert len(got) == 4000
    counts = collections.Counter(s for s, _ in got)
    assert counts["b"] / 4000 == pytest.approx(0.75, abs=0.03)
    # Every record of a cycled file keeps coming back.
    assert set(got) == set(expected([("a", 3), ("b", 5)]))


@pytest.mark.timeout(60)
def test_infinite_shards_stay_disjoint_within_a_cycle(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("a", 6)]))
    parts = [
        ids(
            multi_tfrecord_loader(
                [path], shard=(i, 3), seed=2, shuffle=True, epoch_length=2, **storage.kw
            )
        )
        for i in range(3)
    ]
    assert sorted(x for p in parts for x in p) == expected([("a", 6)])
    # Each later cycle is reshuffled, and the shards are disjoint within every cycle.
    longer = [
        ids(
            multi_tfrecord_loader(
                [path], shard=(i, 3), seed=2, shuffle=True, epoch_length=8, **storage.kw
            )
        )
        for i in range(3)
    ]
    for cycle in range(4):
        chunk = [x for p in longer for x in p[2 * cycle : 2 * cycle + 2]]
        assert sorted(chunk) == expected([("a", 6)])
    assert longer[1][:2] == parts[1]
    assert len(set(longer[1])) > 2


def test_infinite_shard_with_no_records_reads_everything(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("a", 2)]))
    got = ids(multi_tfrecord_loader([path], shard=(4, 5), seed=2, epoch_length=6, **storage.kw))
    assert len(got) == 6
    assert set(got) == set(expected([("a", 2)]))


def test_clip_dict_and_int(storage, write_tfrecords):
    paths = storage.put(write_tfrecords([("a", 5), ("b", 5)]))
    got = ids(multi_tfrecord_loader(paths, infinite=False, clip={"a": 2}, seed=0, **storage.kw))
    assert sorted(got) == [("a", 0), ("a", 1)] + [("b", j) for j in range(5)]
    got = ids(multi_tfrecord_loader(paths, infinite=False, clip=1, seed=0, **storage.kw))
    assert sorted(got) == [("a", 0), ("b", 0)]
    with pytest.raises(ConfigError, match="clip given for unknown files: 'zz'"):
        multi_tfrecord_loader(paths, clip={"zz": 1}, **storage.kw)
    with pytest.raises(ConfigError, match="non-negative integer"):
        multi_tfrecord_loader(paths, clip=-1, **storage.kw)


def test_weighted_sampling_is_o_log_n_with_many_files(storage, write_tfrecords, tmp_path):
    # 300 files of 1 record: a finite weighted pass reads all of them once.
    spec = [(f"f{i:03d}", 1) for i in range(300)]
    paths = storage.put(write_tfrecords(spec, folder=tmp_path / "many"))
    got = ids(
        multi_tfrecord_loader(
            paths, infinite=False, weights=np.arange(1, 301), seed=4, **storage.kw
        )
    )
    assert sorted(got) == expected(spec)


def _corrupt_middle_record(path: str) -> int:
    from tilestream.tfrecord import load_index

    offsets = load_index(path).offsets
    target = int(offsets[2]) + 12 + 40  # inside record 2's payload
    stat = os.stat(path)  # bit rot on disk: the mtime stays, so the index stays valid
    data = bytearray(Path(path).read_bytes())
    data[target] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return int(offsets[2])


def test_corrupt_record_raises_naming_file_record_and_offset(storage, write_tfrecords):
    (local,) = write_tfrecords([("s1", 5)])
    offset = _corrupt_middle_record(local)
    path = storage.name(local)
    with pytest.raises(CorruptRecordError) as info:
        list(tfrecord_loader(path, **storage.kw))
    err = info.value
    assert (err.path, err.record, err.offset) == (path, 2, offset)
    assert f"record 2 at byte {offset}" in str(err)
    assert path in str(err)


def test_corrupt_record_is_skipped_logged_and_counted(storage, write_tfrecords, caplog):
    (local,) = write_tfrecords([("s1", 5)])
    _corrupt_middle_record(local)
    path = storage.name(local)
    stream = tfrecord_loader(path, on_error="skip", **storage.kw)
    with caplog.at_level(logging.WARNING, logger="tilestream.loaders.stream"):
        got = ids(stream)
    assert got == [("s1", 0), ("s1", 1), ("s1", 3), ("s1", 4)]
    assert stream.skipped == 1
    assert "record 2" in caplog.text


def test_undecodable_payload_is_a_corrupt_record_with_its_location(
    storage, write_tfrecords, tmp_path
):
    from tilestream.tfrecord import TFRecordWriter

    path = str(tmp_path / "junk.tfrecords")
    with TFRecordWriter(path) as w:
        w.write(b"\x0a\x05")  # a truncated protobuf with valid framing
    path = storage.name(path)
    with pytest.raises(CorruptRecordError, match=r"record 0 at byte 0"):
        list(tfrecord_loader(path, **storage.kw))


def test_bad_files_fail_at_construction(write_tfrecords, tmp_path):
    (good,) = write_tfrecords([("s1", 2)])
    with pytest.raises(TFRecordError, match="does not exist") as info:
        multi_tfrecord_loader([good, str(tmp_path / "missing.tfrecords")])
    assert "missing.tfrecords" in str(info.value)
    empty = tmp_path / "empty.tfrecords"
    empty.write_bytes(b"")
    with pytest.raises(EmptyTFRecordsError, match="empty"):
        multi_tfrecord_loader([good, str(empty)])
    gz = tmp_path / "c.tfrecords"
    gz.write_bytes(gzip.compress(Path(good).read_bytes()))
    with pytest.raises(UnsupportedRecordError, match="gzip"):
        tfrecord_loader(str(gz))
    with pytest.raises(EmptyTFRecordsError):
        multi_tfrecord_loader([])
    with pytest.raises(ConfigError, match="unknown files"):
        multi_tfrecord_loader([good], weights={"nope": 1})
    with pytest.raises(ConfigError, match="needs a seed"):
        multi_tfrecord_loader([good], shard=(0, 2), shuffle=True)
    with pytest.raises(ConfigError, match="on_error"):
        multi_tfrecord_loader([good], on_error="ignore")  # type: ignore[arg-type]
