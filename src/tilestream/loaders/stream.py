"""Framework-free record streams: one file, or many interleaved by weight.

:func:`tfrecord_loader` reads one TFRecord, :func:`multi_tfrecord_loader`
interleaves many. Both read records by index offsets (one ``pread`` each), so
sharding and shuffling never read a record a shard does not need.

Sharding splits *records*, not files (see :mod:`tilestream.loaders.sharding`):
for ``shard=(i, n)`` the ``n`` shards together read every record exactly once
(in finite mode), whatever the number of files. The per-epoch order of a file's
records depends only on ``(seed, epoch, file)``, so every shard computes the
same order and takes its own positions of it; the interleaving between files
depends on ``(seed, epoch, shard)``.

Examples
--------
>>> import tempfile, os
>>> from tilestream.loaders.stream import _write_demo
>>> d = tempfile.mkdtemp()
>>> paths = [_write_demo(os.path.join(d, f"{s}.tfrecords"), s, n) for s, n in [("a", 3), ("b", 2)]]
>>> [r["loc_x"] for r in tfrecord_loader(paths[0])]
[0, 1, 2]
>>> got = [(r["slide"], r["loc_x"]) for r in multi_tfrecord_loader(paths, infinite=False, seed=1)]
>>> sorted(got)
[(b'a', 0), (b'a', 1), (b'a', 2), (b'b', 0), (b'b', 1)]
>>> shards = [list(multi_tfrecord_loader(paths, infinite=False, shard=(i, 2), seed=1))
...           for i in range(2)]
>>> [len(s) for s in shards]
[3, 2]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilestream.errors import (
    ConfigError,
    CorruptRecordError,
    TFRecordError,
    UnsupportedRecordError,
)
from tilestream.loaders.options import ClipSpec, OnError, check_on_error, check_seed
from tilestream.loaders.records import (
    FileHandles,
    read_record,
)
from tilestream.loaders.remote import BlockPrefetcher, block_order, shuffle_passes
from tilestream.loaders.sampling import (
    WeightedSampler,
    WeightSpec,
)
from tilestream.loaders.sharding import shard_chunks, shard_ranges, validate_shard
from tilestream.loaders.sources import (
    FileSelection,
    RecordSource,
    open_sources,
    select_current,
    sources_and_weights,
)

__all__ = [
    "ClipSpec",
    "FileSelection",
    "ReadPlan",
    "RecordSource",
    "RecordStream",
    "multi_tfrecord_loader",
    "open_sources",
    "select_current",
    "tfrecord_loader",
]

log = logging.getLogger(__name__)

Parser = Callable[[bytes], Any]


class RecordStream(Iterator[Any]):
    """An iterator of parsed records that counts the records it skipped.

    Attributes
    ----------
    skipped
        Records skipped as corrupt (``on_error="skip"`` only).
    """

    def __init__(self, gen_factory: Callable[[RecordStream], Iterator[Any]]) -> None:
        self.skipped = 0
        self._it = gen_factory(self)

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> Any:
        return next(self._it)


def _order_rng(seed: int, epoch: int, file: int, cycle: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, file, cycle]))


def _stream_ranges(
    lengths: list[int], shard: tuple[int, int] | None, infinite: bool, *, runs: bool = False
) -> list[range]:
    """The record positions of each file that the shard reads (contiguous ones with ``runs``)."""
    ranges = shard_chunks(lengths, shard) if runs else shard_ranges(lengths, shard)
    if infinite and not any(len(r) for r in ranges):
        # More shards than records: an infinite shard reads everything rather than nothing.
        ranges = [range(n) for n in lengths]
    return ranges


def _positions(
    ranges: list[range],
    weights: np.ndarray | None,
    rng: np.random.Generator,
    order_of: Callable[[int, int], np.ndarray],
    *,
    infinite: bool,
    interleave: bool,
) -> Iterator[tuple[int, int]]:
    """``(file, record)`` in stream order: files chosen by weight with ``rng`` (or in
    turn), records of a file in ``order_of(file, cycle)``, restarting reshuffled in
    infinite mode."""
    nfiles = len(ranges)
    cursors = [0] * nfiles
    cycles = [0] * nfiles
    orders: list[np.ndarray | None] = [None] * nfiles
    active = np.array([len(r) > 0 for r in ranges])
    w = np.ones(nfiles) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.where(active, w, 0.0)
    if not np.any(w > 0):
        return
    sampler = WeightedSampler(w, rng) if interleave else None
    sequential = [f for f in range(nfiles) if w[f] > 0]
    seq_pos = 0
    while True:
        if sampler is not None:
            if len(sampler) == 0:
                return
            f = sampler.sample()
        else:
            if seq_pos >= len(sequential):
                if not infinite:
                    return
                seq_pos = 0
            f = sequential[seq_pos]
        order = orders[f]
        if order is None:
            order = orders[f] = order_of(f, cycles[f])
        r = ranges[f]
        c = cursors[f]
        record = int(order[r[c]])
        c += 1
        if c == len(r):
            if infinite:
                c = 0
                cycles[f] += 1
                orders[f] = None
            elif sampler is not None:
                sampler.remove(f)
            else:
                seq_pos += 1
        cursors[f] = c
        yield f, record


def _skip_or_raise(
    exc: CorruptRecordError | UnsupportedRecordError,
    stats: RecordStream,
    path: str,
    record: int,
    offset: int,
    *,
    on_error: OnError,
    on_skip: Callable[[TFRecordError], None] | None,
    give_up: bool,
) -> None:
    """Raise the error of a bad record (naming file, record and offset), or count it skipped."""
    if exc.path is None or getattr(exc, "record", None) is None:
        err: TFRecordError = CorruptRecordError(
            getattr(exc, "message", str(exc)), path=path, record=record, offset=offset
        )
        err.__cause__ = exc
    else:
        err = exc
    if on_error == "raise":
        raise err from exc
    stats.skipped += 1
    log.warning("skipping record (%d skipped so far): %s", stats.skipped, err)
    if on_skip is not None:
        on_skip(err)
    if give_up:
        raise CorruptRecordError(
            f"every record read failed ({stats.skipped} skipped); last: {err}",
            path=path,
        ) from exc


@dataclass(frozen=True)
class ReadPlan:
    """How a stream reads remote TFRecords (see :mod:`tilestream.loaders.remote`)."""

    block_records: int = 64
    read_ahead: int = 64 << 20
    shuffle_buffer: int = 1024


def _stream(
    stats: RecordStream,
    sources: list[RecordSource],
    *,
    weights: np.ndarray | None,
    infinite: bool,
    interleave: bool,
    shard: tuple[int, int] | None,
    shuffle: bool,
    seed: int,
    epoch: int,
    epoch_length: int | None,
    parser: Parser | None,
    on_error: OnError,
    verify: bool,
    with_location: bool,
    on_skip: Callable[[TFRecordError], None] | None = None,
    plan: ReadPlan | None = None,
) -> Iterator[Any]:
    lengths = [len(s) for s in sources]
    remote = any(s.remote is not None for s in sources)
    plan = plan or ReadPlan()
    ranges = _stream_ranges(lengths, shard, infinite, runs=remote)
    shard_index = -1 if shard is None else shard[0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, shard_index + 1, 1 << 20]))

    shards = 1 if shard is None else shard[1]

    def order_of(f: int, cycle: int) -> np.ndarray:
        """File ``f``'s record order in a cycle: fixed by ``(seed, epoch, f, cycle)``."""
        n = lengths[f]
        if not shuffle:
            return np.arange(n)
        if remote:  # blocks no longer than a shard's share, so shares change with the order
            block = max(1, min(plan.block_records, n // shards))
            return block_order(n, block, _order_rng(seed, epoch, f, cycle))
        return _order_rng(seed, epoch, f, cycle).permutation(n)

    positions = _positions(ranges, weights, rng, order_of, infinite=infinite, interleave=interleave)
    if remote:
        yield from _remote_stream(
            stats, sources, positions, lambda f, c: order_of(f, c)[ranges[f].start : ranges[f].stop],
            plan=plan, shuffle_rng=np.random.default_rng([seed, epoch, shard_index + 1, 0x5B]) if shuffle else None,
            epoch_length=epoch_length, parser=parser, on_error=on_error, verify=verify,
            with_location=with_location, on_skip=on_skip, per_pass=sum(len(r) for r in ranges),
        )  # fmt: skip
        return
    handles = FileHandles()

    def local_items() -> Iterator[tuple[str, int, int, Callable[[], Any]]]:
        for f, record in positions:
            src = sources[f]
            offset = int(src.offsets[record])

            def load(src: RecordSource = src, record: int = record, offset: int = offset) -> Any:
                data = read_record(
                    handles.get(src.path), src.path, record, offset, int(src.sizes[record]),
                    verify=verify,
                )  # fmt: skip
                return data if parser is None else parser(data)

            yield src.path, record, offset, load

    try:
        yield from _deliver(
            local_items(), stats, epoch_length=epoch_length, on_error=on_error,
            on_skip=on_skip, with_location=with_location, limit=sum(len(r) for r in ranges) + 1,
        )  # fmt: skip
    finally:
        handles.close()


def _deliver(
    items: Iterator[tuple[str, int, int, Callable[[], Any]]],
    stats: RecordStream,
    *,
    epoch_length: int | None,
    on_error: OnError,
    on_skip: Callable[[TFRecordError], None] | None,
    with_location: bool,
    limit: int,
) -> Iterator[Any]:
    """What each ``(path, record, offset, load)`` of ``items`` loads, local or remote alike.

    A record that ``load`` finds corrupt or unsupported is skipped or raised as
    ``on_error`` says; more than ``limit`` failures in a row give up. The stream
    ends after ``epoch_length`` records.
    """
    produced = 0
    failures_in_a_row = 0
    for path, record, offset, load in items:
        if epoch_length is not None and produced >= epoch_length:
            return
        try:
            item = load()
        except (CorruptRecordError, UnsupportedRecordError) as exc:
            failures_in_a_row += 1
            _skip_or_raise(
                exc, stats, path, record, offset, on_error=on_error, on_skip=on_skip,
                give_up=failures_in_a_row > limit,
            )  # fmt: skip
            continue
        failures_in_a_row = 0
        produced += 1
        yield (item, path, record) if with_location else item


def _remote_stream(
    stats: RecordStream,
    sources: list[RecordSource],
    positions: Iterator[tuple[int, int]],
    sequence: Callable[[int, int], np.ndarray],
    *,
    plan: ReadPlan,
    shuffle_rng: np.random.Generator | None,
    epoch_length: int | None,
    parser: Parser | None,
    on_error: OnError,
    verify: bool,
    with_location: bool,
    on_skip: Callable[[TFRecordError], None] | None,
    per_pass: int,
) -> Iterator[Any]:
    """The records of remote sources, read in blocks ahead (then through a shuffle buffer).

    ``per_pass``: the shard's records, given once per pass (an infinite stream repeats passes).
    """
    prefetch = BlockPrefetcher(
        sources, positions, sequence, block_records=plan.block_records,
        read_ahead=plan.read_ahead, verify=verify,
    )  # fmt: skip
    fetched: Iterator[tuple[int, int, int, bytes | BaseException]] = iter(prefetch)
    if shuffle_rng is not None and plan.shuffle_buffer > 1:  # each pass mixed on its own
        fetched = shuffle_passes(fetched, plan.shuffle_buffer, per_pass, shuffle_rng)

    def load(data: bytes | BaseException) -> Any:
        if isinstance(data, BaseException):
            raise data
        return data if parser is None else parser(data)

    items = (
        (sources[f].path, record, offset, lambda data=data: load(data))
        for f, record, offset, data in fetched
    )
    try:
        yield from _deliver(
            items, stats, epoch_length=epoch_length, on_error=on_error, on_skip=on_skip,
            with_location=with_location, limit=per_pass + 1,
        )  # fmt: skip
    finally:
        prefetch.close()


def _check_common(
    on_error: str,
    shuffle: bool,
    shard: tuple[int, int] | None,
    seed: int | None,
    epoch_length: int | None = None,
) -> int:
    check_on_error(on_error)
    if epoch_length is not None and (isinstance(epoch_length, bool) or epoch_length < 0):
        raise ConfigError(f"epoch_length must be a non-negative integer, got {epoch_length!r}")
    if seed is None:
        if shuffle and shard is not None and shard[1] > 1:
            raise ConfigError(
                "shuffling a sharded stream needs a seed shared by every shard (pass seed=)"
            )
        return int(np.random.SeedSequence().generate_state(1)[0])
    return check_seed(seed)


def tfrecord_loader(
    path: str | os.PathLike[str],
    index: Any = None,
    *,
    shard: tuple[int, int] | None = None,
    clip: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    epoch: int = 0,
    parser: Parser | None = None,
    on_error: OnError = "raise",
    verify: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> RecordStream:
    """Stream the records of one TFRecord file, in order or shuffled per epoch.

    Parameters
    ----------
    path
        An uncompressed TFRecord file.
    index
        Offsets, an index file, or None (the index beside the file, or a scan of
        the framing; the shard is honoured either way).
    shard
        ``(i, n)``: read only shard ``i`` of ``n`` disjoint parts of the records.
    clip
        Read at most this many records (the first ones).
    shuffle
        Shuffle the records, with an order fixed by ``(seed, epoch)``.
    seed, epoch
        The shuffle's seed and epoch. Sharded shuffling needs an explicit seed.
    parser
        Called on each record's payload (bytes); default
        :func:`tilestream.tfrecord.parse_example`.
    on_error
        ``"raise"`` (default): a corrupt record raises
        :class:`~tilestream.errors.CorruptRecordError` naming file, record and
        offset. ``"skip"``: log it, count it in ``stream.skipped``, go on.
    verify
        Check the CRCs of every record.
    storage_options
        Options of the store of a file given by URL (see :func:`multi_tfrecord_loader`).

    Returns
    -------
    RecordStream
        An iterator of parsed records.
    """
    return multi_tfrecord_loader(
        [path],
        None if index is None else [index],
        infinite=False,
        shard=shard,
        clip=clip,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        parser=parser,
        on_error=on_error,
        verify=verify,
        storage_options=storage_options,
    )


def _default_parser() -> Parser:
    from tilestream.tfrecord import parse_example

    return parse_example


def multi_tfrecord_loader(
    paths: Sequence[str | os.PathLike[str]] | Sequence[RecordSource],
    indices: Sequence[Any] | None = None,
    *,
    weights: WeightSpec | None = None,
    infinite: bool = True,
    shard: tuple[int, int] | None = None,
    clip: ClipSpec = None,
    shuffle: bool = False,
    seed: int | None = None,
    epoch: int = 0,
    epoch_length: int | None = None,
    interleave: bool = True,
    parser: Parser | None = None,
    on_error: OnError = "raise",
    verify: bool = True,
    with_location: bool = False,
    on_skip: Callable[[TFRecordError], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    read_plan: ReadPlan | None = None,
) -> RecordStream:
    """Interleave the records of many TFRecord files, choosing files by weight.

    Parameters
    ----------
    paths
        Uncompressed TFRecord files (or sources from :func:`open_sources`).
        The TFRecords of stale slides of an extraction run folder are left
        out with a warning (:func:`select_current`).
    indices
        Per file: offsets, an index file or None.
    weights
        Per file, a list in file order or ``{file: weight}`` (path, name or
        stem); any positive scale, normalised. None is uniform. The next file is
        drawn in ``O(log n)``.
    infinite
        Restart each file (reshuffled) when it runs out, forever (or for
        ``epoch_length`` records). In finite mode exhausted files drop out and
        the remaining weights renormalise; every record of the shard is read
        exactly once (files of weight 0 are not read).
    shard, clip, shuffle, seed, epoch, parser, on_error, verify
        As for :func:`tfrecord_loader` (``clip`` may also be ``{file: cap}``);
        the same seed and epoch give the same stream.
    epoch_length
        Stop after this many records (for infinite streams).
    interleave
        Choose files at random by weight (default); False reads files one after
        another in order.
    with_location
        Yield ``(record, path, record_number)`` instead of the record alone.
    on_skip
        Called with the error of each record skipped (``on_error="skip"``).
    storage_options, read_plan
        For files given by URL: the store's options, and blocks, read-ahead and
        shuffle buffer (:class:`ReadPlan`; see :mod:`tilestream.loaders.remote`).

    Returns
    -------
    RecordStream
        An iterator of parsed records.

    Raises
    ------
    ConfigError, TFRecordError
        Bad options, or missing, empty or unreadable files, at call time.
    """
    shard = validate_shard(shard)
    seed_value = _check_common(on_error, shuffle, shard, seed, epoch_length)
    sources, w = sources_and_weights(paths, indices, clip, weights, storage_options)
    parse = parser if parser is not None else _default_parser()

    def records(stats: RecordStream) -> Iterator[Any]:
        return _stream(
            stats, sources, weights=w, infinite=infinite, interleave=interleave, shard=shard,
            shuffle=shuffle, seed=seed_value, epoch=int(epoch), epoch_length=epoch_length,
            parser=parse, on_error=on_error, verify=verify, with_location=with_location,
            on_skip=on_skip, plan=read_plan,
        )  # fmt: skip

    return RecordStream(records)


def _write_demo(path: str, slide: str, n: int) -> str:
    """Write a tiny Slideflow-schema TFRecord (for the examples)."""
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    with TFRecordWriter(path) as w:
        for i in range(n):
            w.write(serialized_record(slide, b"\xff\xd8", i, 0))
    return str(Path(path))
