"""PyTorch datasets: :class:`TileDataset` (streaming) and :class:`IndexedTileDataset`.

Both hold paths and offsets, never open files, so they pickle cheaply into
DataLoader workers; files are opened lazily in each worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tilestream._util.optional import require
from tilestream.errors import AnnotationError, ConfigError
from tilestream.loaders.augment import (
    augment_image,
    normalize_image,
    parse_augment,
    resolve_normalizer,
)
from tilestream.loaders.labels import slide_name_of
from tilestream.loaders.options import (
    IndexedTileKwargs,
    OnError,
    TileKwargs,
    TileOptions,
    reject_inapplicable,
    resolve_options,
)
from tilestream.loaders.parser import decode_rgb
from tilestream.loaders.records import FileHandles
from tilestream.loaders.remote import IOStats, io_stats
from tilestream.loaders.sharding import distributed_context, global_shard, split_count
from tilestream.loaders.stream import ReadPlan, RecordStream, multi_tfrecord_loader
from tilestream.loaders.tiles import TilePlan, plan_tiles, read_source_record
from tilestream.torch._shared import SkipCounter, shared_uint8

if TYPE_CHECKING:
    from typing_extensions import Unpack

torch = require("torch", extra="torch", purpose="tilestream.torch datasets")

__all__ = ["IndexedTileDataset", "TileDataset", "TileOptions"]

_IO_ROWS = 256  # rows of the shared I/O counters: one per DataLoader worker (modulo)

_IterableDataset: Any = torch.utils.data.IterableDataset
_MapDataset: Any = torch.utils.data.Dataset


class _TileParser:
    """Payload -> (image tensor, slide, loc_x, loc_y), with augmentation."""

    def __init__(
        self,
        *,
        augment: str,
        standardize: bool,
        normalizer: Callable[[np.ndarray], np.ndarray] | None,
        img_size: int | None,
    ) -> None:
        self.augment = augment
        self.standardize = standardize
        self.normalizer = normalizer
        self.img_size = img_size
        self.rng = np.random.default_rng(0)
        #: Where to decode the next image (a batch slot), when set.
        self.target: np.ndarray | None = None

    def __call__(self, data: bytes) -> tuple[np.ndarray, str | None, int, int]:
        from tilestream.tfrecord import decode_example

        ex = decode_example(data)
        raw = ex.get("image_raw")
        if raw is None or raw.kind != "bytes_list" or not raw.value:
            from tilestream.errors import CorruptRecordError

            raise CorruptRecordError("record has no image_raw bytes feature")
        target = self.target
        direct = target is not None and not self.augment and self.normalizer is None
        img = decode_rgb(raw.value[0], out=target if direct else None)
        if self.img_size is not None and img.shape[:2] != (self.img_size, self.img_size):
            raise ConfigError(
                f"a tile is {img.shape[1]}x{img.shape[0]} px, expected img_size={self.img_size}"
            )
        if self.augment:
            img = augment_image(img, self.augment, self.rng)
        img = normalize_image(img, self.normalizer, self.augment, self.rng)
        if target is not None and img is not target:
            if img.shape != target.shape:
                raise ConfigError(
                    f"tiles of {img.shape[1]}x{img.shape[0]} and {target.shape[1]}x"
                    f"{target.shape[0]} px cannot share a batch"
                )
            target[...] = img
            img = target
        slide = ex.get("slide")
        name = slide.value[0] if slide is not None and slide.kind == "bytes_list" else None
        x = ex.get("loc_x")
        y = ex.get("loc_y")
        loc_x = int(x.value[0]) if x is not None and len(x.value) else 0
        loc_y = int(y.value[0]) if y is not None and len(y.value) else 0
        return img, (name.decode("utf-8", "replace") if name is not None else None), loc_x, loc_y

    def tensor(self, img: np.ndarray) -> Any:
        """One HWC uint8 image as a CHW tensor (uint8, or standardised float32)."""
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return t.float().div_(127.5).sub_(1.0) if self.standardize else t


class _Common:
    """Options and output formatting shared by both datasets."""

    plan: TilePlan

    def _setup(self, tfrecords: Any, options: TileOptions) -> None:
        self.options = options
        self.plan = plan_tiles(tfrecords, options=options)
        self.seed = int(options.seed)
        letters = parse_augment(options.augment)
        self.parser = _TileParser(
            augment=letters,
            standardize=options.standardize,
            normalizer=resolve_normalizer(options.normalizer, letters),
            img_size=options.img_size,
        )
        self.incl_slidenames = options.incl_slidenames
        self.incl_loc = options.incl_loc
        self.as_dict = options.as_dict
        self.on_error: OnError = options.on_error
        self.verify = options.verify
        # A shared-memory epoch counter: set_epoch() reaches persistent workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # Remote reads of every worker (a row each): requests, bytes read, retries.
        remote = any(src.remote is not None for src in self.plan.sources)
        self._io = torch.zeros((_IO_ROWS if remote else 1, 3), dtype=torch.int64).share_memory_()
        planned = io_stats(self.plan.sources)
        self._plan_io = (planned.requests, planned.bytes_read, planned.retries)

    @property
    def plan_io(self) -> IOStats:
        """Requests and bytes that opened TFRecords given by URL (stats and indexes)."""
        out = IOStats()
        out.add(requests=self._plan_io[0], read=self._plan_io[1], retries=self._plan_io[2])
        return out

    def io_stats(self) -> IOStats:
        """Requests, bytes read and retries of reading TFRecords by URL, over every worker.

        Counted by each DataLoader worker (and the main process) while it
        iterates, added up when its iterator ends (an epoch's end, or when it
        is closed); the requests that opened the files and fetched their
        indexes are in :attr:`plan_io`. Local files count nothing.
        """
        total = self._io.sum(dim=0).tolist()
        out = IOStats()
        out.add(requests=int(total[0]), read=int(total[1]), retries=int(total[2]))
        return out

    def _count_io(self, row: int, before: IOStats) -> None:
        if len(self._io) == 1:  # local files only
            return
        after = io_stats(self.plan.sources)
        self._io[row % _IO_ROWS] += torch.tensor(
            [
                after.requests - before.requests,
                after.bytes_read - before.bytes_read,
                after.retries - before.retries,
            ],
            dtype=torch.int64,
        )

    @property
    def tfrecords(self) -> list[str]:
        """The TFRecord files."""
        return self.plan.paths

    @property
    def skipped_files(self) -> dict[str, str]:
        """``{file: reason}`` of the files left out as unreadable (``on_error="skip"``)."""
        return self.plan.skipped_files

    @property
    def left_out(self) -> list[str]:
        """Files given but left out: TFRecords of stale slides of a run folder (warned)."""
        return self.plan.left_out

    @property
    def labels(self) -> dict[str, Any] | None:
        """Label by slide name."""
        return self.plan.labels

    @property
    def label_names(self) -> list[str] | None:
        """Category names, when the labels were text (label ``i`` is ``label_names[i]``)."""
        return self.plan.label_names

    @property
    def num_records(self) -> int:
        """Records per epoch over all ranks and workers (finite mode, after clipping)."""
        return self.plan.num_records

    @property
    def epoch(self) -> int:
        """The current epoch (see :meth:`set_epoch`)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: a new, deterministic shuffle (call before each epoch)."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch.fill_(int(epoch))

    def _label(self, slide: str | None, path: str) -> tuple[str, Any]:
        name = slide if slide is not None else slide_name_of(None, path)
        if self.plan.labels is None:
            return name, 0
        try:
            return name, self.plan.labels[name]
        except KeyError:
            raise AnnotationError(f"no label for slide {name!r}", path=path) from None

    def _format(self, parsed: tuple[Any, str | None, int, int], path: str) -> Any:
        img, slide, loc_x, loc_y = parsed
        image = self.parser.tensor(img)
        name, label = self._label(slide, path)
        if self.as_dict:
            return {"image": image, "label": label, "slide": name, "loc_x": loc_x, "loc_y": loc_y}
        out: tuple[Any, ...] = (image, label)
        if self.incl_slidenames:
            out += (name,)
        if self.incl_loc:
            out += (loc_x, loc_y)
        return out


class TileDataset(_Common, _IterableDataset):  # type: ignore[misc]
    """Tiles of many TFRecords as an ``IterableDataset`` of ``(image, label)``.

    Records are split between every DataLoader worker of every distributed
    rank: the global shard is ``rank * num_workers + worker_id`` of
    ``world_size * num_workers``, with rank and world size from
    ``torch.distributed`` when it is initialised, else ``RANK`` and
    ``WORLD_SIZE``. In finite mode each record is read exactly once per epoch
    over all ranks and workers.

    Parameters
    ----------
    tfrecords
        TFRecord files, or a folder (its top-level ``*.tfrecords``); URLs too
        (``s3://``, ``gs://``, ``http(s)://``, ``file://``, a prefix ending in
        ``/`` for its ``*.tfrecords``), with ``storage_options``. Remote files
        are read in blocks of consecutive records ahead of each worker
        (:mod:`tilestream.loaders.remote`: what shuffling randomises then);
        :meth:`io_stats` counts the requests.
    options
        A :class:`~tilestream.loaders.options.TileOptions`; or give its fields
        as keyword arguments (``labels``, ``weights``, ``balance``, ``clip``,
        ``infinite``, ``epoch_length``, ``shuffle``, ``seed``, ``augment``,
        ``standardize``, ``normalizer``, ``img_size``, ``incl_slidenames``,
        ``incl_loc``, ``as_dict``, ``on_error``, ``indices``, ``verify``, ...,
        documented there). An option given both ways with different values
        is a :class:`~tilestream.errors.ConfigError`. Here ``standardize``
        gives float32 images ``img / 127.5 - 1``; with ``on_error="skip"`` a
        corrupt record is counted in :attr:`skipped` over every worker and an
        unreadable file recorded in :attr:`skipped_files`.
    batch_size
        Yield whole batches built in the worker (use ``DataLoader(batch_size=None)``):
        tiles are decoded straight into a shared-memory ``(N, H, W, 3)`` buffer
        and yielded as an ``NCHW`` view in channels-last memory format, with no
        per-tile copy or transpose. Labels and locations become tensors, slide
        names a list. Each worker's last batch may be short.
    drop_last
        With ``batch_size``: drop each worker's short last batch.

    Notes
    -----
    Images are torch uint8 CHW tensors (float32 CHW with ``standardize``).
    Use :meth:`set_epoch` before each epoch; it reaches persistent workers.
    The TFRecords of stale slides of an extraction run folder are left out
    with a warning (:attr:`left_out`, :mod:`tilestream.runfolder`).

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from tilestream.loaders.parser import _demo_tfrecord
    >>> d = tempfile.mkdtemp()
    >>> paths = [_demo_tfrecord(os.path.join(d, f"{s}.tfrecords"), n) for s, n in [("a", 3), ("b", 2)]]
    >>> ds = TileDataset(paths, labels={"a": 0, "b": 1}, seed=0)
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=0)
    >>> images, labels = next(iter(loader))
    >>> images.shape, images.dtype, sorted(labels.tolist())
    (torch.Size([5, 3, 8, 8]), torch.uint8, [0, 0, 0, 1, 1])
    >>> ds.set_epoch(1)  # a new shuffle for the next epoch
    >>> same = TileDataset(paths, options=TileOptions(labels={"a": 0, "b": 1}, seed=0))
    >>> same.options == ds.options
    True
    """

    def __init__(
        self,
        tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        options: TileOptions | None = None,
        **kwargs: Unpack[TileKwargs],
    ) -> None:
        super().__init__()
        opts = resolve_options(options, kwargs, where="TileDataset")
        self.batch_size = opts.batch_size
        self.drop_last = opts.drop_last
        self._setup(tfrecords, opts)
        self.infinite = opts.infinite
        self.epoch_length = opts.epoch_length
        self.shuffle = opts.shuffle
        self._skips = SkipCounter()

    @property
    def skipped(self) -> int:
        """Records skipped as corrupt so far, over every epoch and DataLoader worker."""
        return self._skips.total

    def shard(self) -> tuple[int, int, int, int]:
        """``(shard, num_shards, rank, world_size)`` of the calling worker."""
        info = torch.utils.data.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = distributed_context()
        index, count = global_shard(
            rank=rank, world_size=world, worker_id=worker_id, num_workers=num_workers
        )
        return index, count, rank, world

    def rank_epoch_length(self, world_size: int) -> int:
        """Records each rank yields per epoch in infinite mode."""
        if self.epoch_length is not None:
            return self.epoch_length
        return max(1, self.plan.num_records // world_size)

    def __iter__(self) -> Iterator[Any]:
        index, count, rank, world = self.shard()
        epoch = self.epoch
        num_workers = count // world
        worker_id = index - rank * num_workers
        self.parser.rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, epoch, index, count, 0xA06])
        )
        length = None
        if self.infinite:
            length = split_count(self.rank_epoch_length(world), (worker_id, num_workers))
        weighted = self.plan.weights is not None
        stream: RecordStream = multi_tfrecord_loader(
            self.plan.sources,
            weights=self.plan.weights,
            infinite=self.infinite,
            shard=(index, count),
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            epoch_length=length,
            interleave=self.shuffle or weighted,
            parser=self.parser,
            on_error=self.on_error,
            verify=self.verify,
            with_location=True,
            on_skip=self._skips,
            read_plan=ReadPlan(
                self.options.block_records, self.options.read_ahead, self.options.shuffle_buffer
            ),
        )
        before = io_stats(self.plan.sources)
        try:
            if self.batch_size is None:
                for parsed, path, _ in stream:
                    yield self._format(parsed, path)
            else:
                yield from self._batches(
                    stream, shared=torch.utils.data.get_worker_info() is not None
                )
        finally:
            self.parser.target = None
            self._count_io(worker_id, before)

    def _batches(self, stream: RecordStream, *, shared: bool) -> Iterator[Any]:
        """Decode straight into (shared-memory) batch buffers; yield collated batches."""
        size = self.batch_size or 1
        buf: Any = None
        arr: np.ndarray | None = None
        fields: list[list[Any]] = [[], [], [], []]  # label, slide, loc_x, loc_y
        n = 0

        def new_buffer(shape: tuple[int, ...]) -> tuple[Any, np.ndarray]:
            if shared:  # already shared: sending it to the main process copies nothing
                t = shared_uint8((size, *shape))
            else:
                t = torch.empty((size, *shape), dtype=torch.uint8)
            return t, t.numpy()

        while True:
            self.parser.target = arr[n] if arr is not None else None
            try:
                parsed, path, _ = next(stream)
            except StopIteration:
                break
            img, slide, loc_x, loc_y = parsed
            if arr is None:
                buf, arr = new_buffer(img.shape)
                arr[0] = img
            name, label = self._label(slide, path)
            for column, value in zip(fields, (label, name, loc_x, loc_y), strict=True):
                column.append(value)
            n += 1
            if n == size:
                yield self._collate(buf, fields)
                buf, arr = new_buffer(arr.shape[1:])
                fields = [[], [], [], []]
                n = 0
        if n and not self.drop_last:
            yield self._collate(buf[:n], fields)

    def _collate(self, buf: Any, fields: list[list[Any]]) -> Any:
        images = buf.permute(0, 3, 1, 2)  # NCHW, channels-last in memory: no copy
        if self.parser.standardize:
            images = images.float().div_(127.5).sub_(1.0)
        labels, slides, xs, ys = fields
        label = torch.as_tensor(np.asarray(labels))
        loc_x = torch.as_tensor(xs, dtype=torch.int64)
        loc_y = torch.as_tensor(ys, dtype=torch.int64)
        if self.as_dict:
            return {
                "image": images,
                "label": label,
                "slide": slides,
                "loc_x": loc_x,
                "loc_y": loc_y,
            }
        out: tuple[Any, ...] = (images, label)
        if self.incl_slidenames:
            out += (slides,)
        if self.incl_loc:
            out += (loc_x, loc_y)
        return out


class IndexedTileDataset(_Common, _MapDataset):  # type: ignore[misc]
    """Map-style random access to every tile: ``dataset[i]`` is ``(image, label)``.

    Tile ``i`` is record ``i - offset[f]`` of file ``f`` in file order (after
    clipping). Use with ``DistributedSampler`` or any sampler; augmentation
    draws from a generator seeded per worker and epoch (:meth:`set_epoch`).
    Options are as for :class:`TileDataset`, less those of streaming and
    sampling (``weights``, ``balance``, ``on_error``, ``infinite``,
    ``epoch_length``, ``shuffle``, ``batch_size``, ``drop_last``): an
    ``options`` object that sets one of them is a ConfigError.

    Examples
    --------
    >>> import os, tempfile
    >>> from tilestream.loaders.parser import _demo_tfrecord
    >>> path = _demo_tfrecord(os.path.join(tempfile.mkdtemp(), "a.tfrecords"), 4)
    >>> ds = IndexedTileDataset([path], incl_loc=True)
    >>> len(ds), ds[2][0].shape, ds[2][2:]
    (4, torch.Size([3, 8, 8]), (2, 0))
    """

    def __init__(
        self,
        tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        options: TileOptions | None = None,
        **kwargs: Unpack[IndexedTileKwargs],
    ) -> None:
        super().__init__()
        where = "IndexedTileDataset"
        opts = resolve_options(options, kwargs, where=where, accepts=IndexedTileKwargs)
        reject_inapplicable(opts, IndexedTileKwargs, where=where)
        self._setup(tfrecords, opts)
        self._starts = np.cumsum([0, *self.plan.lengths])
        self._handles: FileHandles | None = None
        self._rng_key: tuple[int, int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = None
        state["_rng_key"] = None
        return state

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[str, int]:
        """``(file, record)`` of tile ``index``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"tile {index} is out of range for {n} tiles")
        f = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.plan.sources[f].path, index - int(self._starts[f])

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        i = int(index) + (n if index < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"tile {index} is out of range for {n} tiles")
        f = int(np.searchsorted(self._starts, i, side="right")) - 1
        record = i - int(self._starts[f])
        src = self.plan.sources[f]
        if self._handles is None:
            self._handles = FileHandles()
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.id if info is not None else -1, self.epoch)
        if key != self._rng_key:
            self._rng_key = key
            self.parser.rng = np.random.default_rng(
                np.random.SeedSequence([self.seed, self.epoch, key[1] + 1, 0x1DE])
            )
        offset = int(src.offsets[record])
        data = read_source_record(src, self._handles, record, verify=self.verify)
        from tilestream.errors import CorruptRecordError

        try:
            parsed = self.parser(data)
        except CorruptRecordError as exc:
            raise CorruptRecordError(
                exc.message, path=src.path, record=record, offset=offset
            ) from exc
        return self._format(parsed, src.path)
