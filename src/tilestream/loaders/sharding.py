"""Sharding maths: which records of which file a shard reads.

Every loader in tilestream splits records, never files, between shards, so the
split is balanced and correct for any number of shards, including more shards
than files. Record ``p`` (in the per-epoch order) of file ``f`` belongs to shard
``(offset[f] + p) % n``, where ``offset[f]`` is the number of records in the
files before ``f``. Shards therefore partition the records exactly: disjoint,
complete, and their sizes differ by at most one.

Under PyTorch the global shard of a worker is ``rank * num_workers + worker_id``
out of ``world_size * num_workers`` (:func:`global_shard`), with the rank and
world size from :func:`distributed_context`.

Examples
--------
>>> shard_positions(10, offset=0, shard=(1, 3))
range(1, 10, 3)
>>> [list(r) for r in shard_ranges([2, 3], (0, 2))]
[[0], [0, 2]]
>>> global_shard(rank=1, world_size=2, worker_id=1, num_workers=2)
(3, 4)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

from tilestream.errors import ConfigError

__all__ = [
    "distributed_context",
    "global_shard",
    "record_offsets",
    "shard_chunks",
    "shard_positions",
    "shard_ranges",
    "split_count",
    "validate_shard",
]


def validate_shard(shard: tuple[int, int] | Sequence[int] | None) -> tuple[int, int] | None:
    """Check a ``shard=(index, count)`` argument.

    Parameters
    ----------
    shard
        ``(index, count)`` with ``0 <= index < count``, or None for no sharding.

    Returns
    -------
    tuple of int or None
        The validated shard.

    Raises
    ------
    ConfigError
        If the shard is malformed.

    Examples
    --------
    >>> validate_shard((0, 2))
    (0, 2)
    >>> validate_shard((2, 2))
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: shard index must be in [0, 2), got 2
    """
    if shard is None:
        return None
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"shard must be a pair (index, count), got {shard!r}") from exc
    if any(isinstance(v, bool) or int(v) != v for v in shard):
        raise ConfigError(f"shard must be a pair of integers, got {shard!r}")
    if count < 1:
        raise ConfigError(f"shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise ConfigError(f"shard index must be in [0, {count}), got {index}")
    return index, count


def record_offsets(lengths: Sequence[int]) -> np.ndarray:
    """Number of records before each file (exclusive cumulative sum).

    Examples
    --------
    >>> record_offsets([3, 1, 2]).tolist()
    [0, 3, 4]
    """
    lens = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(len(lens), dtype=np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=out[1:])
    return out


def shard_positions(length: int, *, offset: int, shard: tuple[int, int] | None) -> range:
    """Positions ``p`` in ``range(length)`` with ``(offset + p) % count == index``.

    Parameters
    ----------
    length
        Number of records in the file (after clipping).
    offset
        Number of records in the files before this one.
    shard
        ``(index, count)``, or None for every position.

    Examples
    --------
    >>> list(shard_positions(5, offset=4, shard=(0, 3)))
    [2]
    """
    if shard is None:
        return range(length)
    index, count = shard
    return range((index - offset) % count, length, count)


def shard_ranges(lengths: Sequence[int], shard: tuple[int, int] | None) -> list[range]:
    """The positions of each file that belong to ``shard``.

    The union over all shards of ``count`` is every position of every file, and
    two shards never share a position.

    Examples
    --------
    >>> [len(r) for r in shard_ranges([1, 1, 1], (2, 4))]
    [0, 0, 1]
    """
    offsets = record_offsets(lengths)
    return [
        shard_positions(int(n), offset=int(o), shard=shard)
        for n, o in zip(lengths, offsets, strict=True)
    ]


def shard_chunks(lengths: Sequence[int], shard: tuple[int, int] | None) -> list[range]:
    """Like :func:`shard_ranges`, but each shard's positions of a file are one contiguous run.

    Shard ``s`` gets as many positions of each file as :func:`shard_ranges`
    gives it (so shard sizes differ by at most one over all files), laid out
    in shard order: shards ``0, 1, ...`` take consecutive runs of each file.
    Read in a block-permuted order (:func:`tilestream.loaders.remote.block_order`),
    a run is whole blocks of consecutive records: what ranged reads of remote
    TFRecords need. The union over all shards is every position, once.

    Examples
    --------
    >>> [list(r) for r in shard_chunks([5, 3], (0, 2))], [list(r) for r in shard_chunks([5, 3], (1, 2))]
    ([[0, 1, 2], [0]], [[3, 4], [1, 2]])
    """
    if shard is None:
        return [range(int(n)) for n in lengths]
    index, count = shard
    out = []
    for n, o in zip(lengths, record_offsets(lengths), strict=True):
        sizes = [
            len(shard_positions(int(n), offset=int(o), shard=(s, count))) for s in range(count)
        ]
        start = sum(sizes[:index])
        out.append(range(start, start + sizes[index]))
    return out


def split_count(total: int, shard: tuple[int, int] | None) -> int:
    """How many of ``total`` items shard ``(index, count)`` gets when split evenly.

    Examples
    --------
    >>> [split_count(10, (i, 3)) for i in range(3)]
    [4, 3, 3]
    """
    if shard is None:
        return total
    index, count = shard
    return total // count + (1 if index < total % count else 0)


def distributed_context() -> tuple[int, int]:
    """The ``(rank, world_size)`` of this process.

    Read from :mod:`torch.distributed` when it is initialised, else from the
    ``RANK`` and ``WORLD_SIZE`` environment variables, else ``(0, 1)``.

    Raises
    ------
    ConfigError
        If the environment variables are malformed or inconsistent.

    Examples
    --------
    >>> import os
    >>> "RANK" in os.environ or distributed_context() == (0, 1)
    True
    """
    torch = sys.modules.get("torch")  # never import torch just to ask
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    rank_s = os.environ.get("RANK")
    world_s = os.environ.get("WORLD_SIZE")
    if rank_s is None and world_s is None:
        return 0, 1
    try:
        rank = int(rank_s) if rank_s is not None else 0
        world = int(world_s) if world_s is not None else 1
    except ValueError as exc:
        raise ConfigError(f"RANK={rank_s!r} and WORLD_SIZE={world_s!r} must be integers") from exc
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world


def global_shard(
    *, rank: int, world_size: int, worker_id: int, num_workers: int
) -> tuple[int, int]:
    """The global shard of a data-loader worker on a distributed rank.

    Examples
    --------
    >>> global_shard(rank=0, world_size=1, worker_id=0, num_workers=1)
    (0, 1)
    >>> global_shard(rank=2, world_size=3, worker_id=0, num_workers=2)
    (4, 6)
    """
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ConfigError(f"worker {worker_id} is not in [0, {num_workers})")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, {world_size})")
    return rank * num_workers + worker_id, world_size * num_workers
