"""Record streams over TFRecords in object storage: blocks, read-ahead and a shuffle buffer.

A loader reading local files fetches each record with one ``pread``; over a
network each request costs a round trip, so a stream of records read by URL
is organised around **blocks of consecutive records** fetched with one ranged
request each, ahead of the consumer:

- **What a shard reads.** Record positions are split between shards in
  contiguous runs (:func:`tilestream.loaders.sharding.shard_chunks`): the
  same number of records per shard as the local split (sizes differ by at
  most one), every record of the epoch exactly once over all shards
  (DataLoader workers and ranks).
- **Order.** Without ``shuffle`` each file is read in record order. With
  ``shuffle``, each file's records are cut into blocks of
  ``block_records`` consecutive records (fewer where a shard's share of the
  file is smaller: then the shares still change from epoch to epoch and from
  one pass of an infinite stream to the next) and **the blocks** are permuted
  per ``(seed, epoch, file, pass)`` (:func:`block_order`); files are
  interleaved at random by weight as locally; then a **shuffle buffer** of
  ``shuffle_buffer`` records (seeded by ``(seed, epoch, shard)``) mixes the
  records read. An infinite stream mixes each pass over the shard's records
  on its own (:func:`shuffle_passes`): no record comes twice before the pass
  has given every other one.
- **Randomness this gives.** Which blocks a shard reads, and in which order,
  changes every epoch, and records of all files are mixed. What is *not*
  shuffled: records of one block (neighbouring tiles of one slide, as
  written) always travel together in the same shard and epoch, and arrive
  within a buffer's length of each other; a batch therefore holds runs of
  tiles of the same slide more often than a full per-record shuffle gives.
  A smaller ``block_records`` or a larger ``shuffle_buffer`` brings the
  stream closer to a full shuffle (at the cost of requests or memory).
- **Read-ahead.** :class:`BlockPrefetcher` walks the stream's positions
  ahead of the consumer and fetches every block on first need on background
  threads (:attr:`BlockPrefetcher.workers` requests in flight), while the
  blocks held stay within ``read_ahead`` bytes (more only while each file
  interleaved holds one block) and at most
  :attr:`BlockPrefetcher.ahead_blocks` blocks wait whose first record the
  consumer has not taken yet (so an infinite stream over small records does
  not queue thousands of tiny requests to fill the byte budget). Each record
  is checked by :func:`tilestream.tfrecord.framing.payload_of` (CRCs; errors name the URL,
  the record and its offset) when the consumer takes it.

The store's counters (:attr:`Store.stats <tilestream.storage.Store.stats>`:
requests, bytes) count every request (:func:`io_stats`).

Examples
--------
>>> block_order(7, 3, np.random.default_rng(0)).tolist()
[6, 0, 1, 2, 3, 4, 5]
>>> list(shuffle_buffer(iter(range(6)), 3, np.random.default_rng(0)))
[0, 3, 2, 1, 5, 4]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np

from tilestream.storage import IOStats
from tilestream.tfrecord.framing import payload_of

if TYPE_CHECKING:
    from tilestream.loaders.sources import RecordSource

__all__ = [
    "BlockPrefetcher",
    "IOStats",
    "block_order",
    "io_stats",
    "shuffle_buffer",
    "shuffle_passes",
]

T = TypeVar("T")


def block_order(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Records ``0..n-1`` in blocks of ``block`` consecutive records, the blocks in random order."""
    starts = np.arange(0, n, max(int(block), 1))
    perm = rng.permutation(len(starts))
    if not len(starts):
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, min(s + block, n)) for s in starts[perm]])


def shuffle_buffer(items: Iterator[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Yield ``items`` through a buffer of ``size``: each output is drawn at random from it."""
    buf: list[T] = []
    draws: list[int] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        if not draws:
            draws = rng.integers(0, size, 256).tolist()
        j = draws.pop()
        out, buf[j] = buf[j], item
        yield out
    for j in rng.permutation(len(buf)).tolist():
        yield buf[j]


def shuffle_passes(
    items: Iterator[T], size: int, per_pass: int, rng: np.random.Generator
) -> Iterator[T]:
    """:func:`shuffle_buffer` over each run of ``per_pass`` items in turn, drained at its end.

    An infinite stream passes over a shard's records again and again; a buffer
    that spanned two passes would give a record twice before the pass had given
    every other one. Each pass is mixed on its own (by a buffer of at most
    ``per_pass`` items, so a small shard starts at once).

    >>> out = list(shuffle_passes(iter([0, 1, 2, 0, 1, 2]), 8, 3, np.random.default_rng(0)))
    >>> sorted(out[:3]), sorted(out[3:])
    ([0, 1, 2], [0, 1, 2])
    """
    if per_pass <= 0:  # a shard without records: nothing to give, ever
        return
    size = max(1, min(size, per_pass))
    while True:
        taken = 0

        def one_pass() -> Iterator[T]:
            nonlocal taken
            for item in items:
                taken += 1
                yield item
                if taken == per_pass:
                    return

        yield from shuffle_buffer(one_pass(), size, rng)
        if taken < per_pass:
            return


def io_stats(sources: Sequence[RecordSource]) -> IOStats:
    """Requests and bytes of the stores of ``sources`` in this process, summed.

    Stores are shared by the sources of one store (one per bucket); a
    DataLoader worker has its own copy (counters start at zero in each).
    """
    total = IOStats()
    seen: set[int] = set()
    for src in sources:
        if src.remote is None or id(src.remote.store) in seen:
            continue
        seen.add(id(src.remote.store))
        st = src.remote.store.stats
        total.add(requests=st.requests, read=st.bytes_read, retries=st.retries)
    return total


@dataclass
class _Block:
    file: int
    first: int  # record number of the first record
    base: int  # byte offset of the first record
    size: int
    future: Future[bytes]
    pending: int  # records of it not yet taken
    started: bool = False  # the consumer has taken its first record


class _FileCursor:
    """Where the positions of one file stand: its sequence for the cycle, and what is fetched."""

    def __init__(self, seq: np.ndarray) -> None:
        self.seq = seq
        self.cycle = 0
        self.pos = 0
        self.covered = 0  # positions [pos, covered) belong to a block already fetched
        self.block: _Block | None = None


class BlockPrefetcher:
    """``(file, record, payload)`` for each position of a stream, read in blocks ahead.

    Parameters
    ----------
    sources
        The files (each with ``remote`` set).
    positions
        ``(file, record)`` in stream order.
    sequence
        ``sequence(file, cycle)``: the records of ``file`` this stream reads in
        its ``cycle``-th pass, in order (``positions`` takes them in this order,
        starting again with the next cycle).
    block_records, read_ahead
        Records per block (at most), and bytes of blocks held at most (see the module).
    verify
        Check data CRCs.
    """

    workers = 8
    block_bytes = 16 << 20
    ahead_blocks = 4 * workers

    def __init__(
        self,
        sources: Sequence[RecordSource],
        positions: Iterator[tuple[int, int]],
        sequence: Callable[[int, int], np.ndarray],
        *,
        block_records: int,
        read_ahead: int,
        verify: bool,
    ) -> None:
        self.sources = sources
        self._positions = positions
        self._sequence = sequence
        self._block_records = block_records
        self._budget = read_ahead
        self._verify = verify
        self._held = 0
        self._unstarted = 0  # blocks fetched whose first record is still ahead
        self._ahead: deque[tuple[int, int, _Block]] = deque()
        self._files: dict[int, _FileCursor] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._done = False
        self._lock = threading.Lock()

    def _cursor(self, f: int) -> _FileCursor:
        cur = self._files.get(f)
        if cur is None:
            cur = self._files[f] = _FileCursor(self._sequence(f, 0))
        return cur

    def _new_block(self, f: int, cur: _FileCursor, record: int) -> _Block:
        src = self.sources[f]
        seq = cur.seq
        k, total = 1, int(src.sizes[record])
        while (
            cur.pos + k < len(seq)
            and k < self._block_records
            and int(seq[cur.pos + k]) == record + k
            and total + int(src.sizes[record + k]) <= self.block_bytes
        ):
            total += int(src.sizes[record + k])
            k += 1
        base = int(src.offsets[record])
        remote = src.remote
        assert remote is not None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tilestream-blocks")
        future = self._pool.submit(remote.read_range, base, total)
        cur.covered = cur.pos + k
        self._held += total
        self._unstarted += 1
        return _Block(f, record, base, total, future, k)

    def _pull(self) -> bool:
        """Take the next position into the read-ahead (fetching its block on first need)."""
        nxt = next(self._positions, None)
        if nxt is None:
            self._done = True
            return False
        f, record = nxt
        cur = self._cursor(f)
        if cur.pos >= cur.covered or cur.block is None:
            cur.block = self._new_block(f, cur, record)
        block = cur.block
        self._ahead.append((f, record, block))
        cur.pos += 1
        if cur.pos == len(cur.seq):  # the next position of f starts its next cycle
            cur.cycle += 1
            cur.pos = cur.covered = 0
            cur.seq = self._sequence(f, cur.cycle)
            cur.block = None
        return True

    def _fill(self) -> None:
        while not self._done and (
            not self._ahead or (self._held < self._budget and self._unstarted < self.ahead_blocks)
        ):
            if not self._pull():
                return

    def __iter__(self) -> Iterator[tuple[int, int, int, bytes | BaseException]]:
        """``(file, record, offset, payload or the error reading it)`` in stream order."""
        try:
            while True:
                self._fill()
                if not self._ahead:
                    return
                f, record, block = self._ahead.popleft()
                src = self.sources[f]
                offset = int(src.offsets[record])
                block.pending -= 1
                if not block.started:
                    block.started = True
                    self._unstarted -= 1
                data = block.future.result()  # a storage error is raised, not skipped
                if block.pending == 0:
                    self._held -= block.size
                yield f, record, offset, self._payload(src, data, block, record, offset)
        finally:
            self.close()

    def _payload(
        self, src: RecordSource, data: bytes, block: _Block, record: int, offset: int
    ) -> bytes | BaseException:
        pos = offset - block.base
        size = int(src.sizes[record])
        try:
            with memoryview(data) as view:
                return bytes(
                    payload_of(
                        cast(bytes, view[pos : pos + size]),
                        path=src.path,
                        record=record,
                        offset=offset,
                        verify=self._verify,
                    )
                )
        except Exception as exc:  # the stream decides: raise or skip
            return exc

    def close(self) -> None:
        """Cancel what is still queued and let the threads go."""
        pool, self._pool = self._pool, None
        for _, _, block in self._ahead:
            block.future.cancel()
        self._ahead.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
