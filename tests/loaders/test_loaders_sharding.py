"""Sharding maths: disjoint and complete for any files, ranks and workers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilestream.errors import ConfigError
from tilestream.loaders.sharding import (
    distributed_context,
    global_shard,
    shard_ranges,
    split_count,
    validate_shard,
)


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    world=st.integers(1, 5),
    workers=st.integers(1, 4),
)
def test_shards_are_disjoint_and_cover_every_record(lengths, world, workers):
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    sizes = []
    for rank in range(world):
        for worker in range(workers):
            shard = global_shard(rank=rank, world_size=world, worker_id=worker, num_workers=workers)
            size = 0
            for f, positions in enumerate(shard_ranges(lengths, shard)):
                for p in positions:
                    assert 0 <= p < lengths[f]
                    assert (f, p) not in seen, f"record {(f, p)} in {seen.get((f, p))} and {shard}"
                    seen[(f, p)] = shard
                    size += 1
            sizes.append(size)
    assert len(seen) == sum(lengths)
    # Balanced: shard sizes differ by at most one, whatever the files.
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [split_count(sum(lengths), (i, world * workers)) for i in range(len(sizes))]


def test_global_shard_numbering():
    shards = [
        global_shard(rank=r, world_size=3, worker_id=w, num_workers=2)
        for r in range(3)
        for w in range(2)
    ]
    assert shards == [(i, 6) for i in range(6)]


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ((2, 2), "shard index must be in"),
        ((0, 0), "count must be at least 1"),
        ((-1, 3), "shard index must be in"),
        ("ab", "pair"),
        ((0.5, 2), "integers"),
    ],
)
def test_bad_shards_are_refused(shard, message):
    with pytest.raises(ConfigError, match=message):
        validate_shard(shard)


def test_distributed_context_from_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_context() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed_context() == (2, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="RANK=3"):
        distributed_context()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="must be integers"):
        distributed_context()
