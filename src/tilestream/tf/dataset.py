"""``tile_dataset``: TFRecords of tiles as a native ``tf.data`` pipeline."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tilestream._util.optional import require
from tilestream.errors import ConfigError, CorruptRecordError
from tilestream.loaders.augment import normalize_image, parse_augment, resolve_normalizer
from tilestream.loaders.options import TileKwargs, TileOptions, resolve_options
from tilestream.loaders.records import FileHandles
from tilestream.loaders.sharding import shard_ranges, validate_shard
from tilestream.loaders.stream import ReadPlan, multi_tfrecord_loader
from tilestream.loaders.tiles import TilePlan, plan_tiles, read_source_record

if TYPE_CHECKING:
    from typing_extensions import Unpack

tf = require("tensorflow", extra="tf", purpose="tilestream.tf datasets")

__all__ = ["SkipCount", "TFTileKwargs", "TileOptions", "tile_dataset"]

log = logging.getLogger(__name__)


class SkipCount:
    """A running count of the records a dataset skipped as corrupt (``on_error="skip"``).

    ``int(count)`` reads it; it grows with every pass over the dataset.

    Examples
    --------
    >>> count = SkipCount()
    >>> count.add()
    >>> int(count), count
    (1, SkipCount(1))
    """

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        """Count one skipped record."""
        with self._lock:
            self.value += 1

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"SkipCount({self.value})"


_FEATURES = {
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "slide": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "loc_x": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "loc_y": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def _seed_pair(*parts: int) -> list[int]:
    state = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return [int(state[0] >> 1), int(state[1] >> 1)]


def _gaussian_blur(img: Any, sigma: Any) -> Any:
    radius = 6  # covers sigma up to 2.0 (3 sigma)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-(x**2) / (2.0 * sigma**2))
    k = k / tf.reduce_sum(k)
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    f = tf.cast(img, tf.float32)[tf.newaxis]
    f = tf.pad(f, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    f = tf.nn.depthwise_conv2d(f, kx, [1, 1, 1, 1], "VALID")
    f = tf.nn.depthwise_conv2d(f, ky, [1, 1, 1, 1], "VALID")
    return tf.cast(tf.clip_by_value(tf.round(f[0]), 0, 255), tf.uint8)


def _augment(img: Any, letters: str, seed: Any) -> Any:
    """The augmentation letters as stateless TensorFlow ops seeded per record."""

    def draw(i: int) -> Any:
        return tf.random.stateless_uniform(
            [], seed=tf.random.experimental.stateless_fold_in(seed, i)
        )

    if "x" in letters:
        img = tf.cond(draw(1) < 0.5, lambda: tf.image.flip_left_right(img), lambda: img)
    if "y" in letters:
        img = tf.cond(draw(2) < 0.5, lambda: tf.image.flip_up_down(img), lambda: img)
    if "r" in letters:
        k = tf.cast(tf.floor(draw(3) * 4.0), tf.int32)
        img = tf.image.rot90(img, k=k)
    if "j" in letters:
        jpeg_seed = tf.random.experimental.stateless_fold_in(seed, 5)
        img = tf.cond(
            draw(4) < 0.5,
            lambda: tf.cast(
                tf.image.stateless_random_jpeg_quality(img, 50, 100, jpeg_seed), tf.uint8
            ),
            lambda: img,
        )
    if "b" in letters:
        sigma = 0.5 + 1.5 * draw(7)
        img = tf.cond(draw(6) < 0.1, lambda: _gaussian_blur(img, sigma), lambda: img)
    return img


class _RecordReader:
    """``(file, record number) -> (payload, ok)`` through tilestream's reader.

    Used instead of ``TFRecordDataset`` for ``on_error="skip"`` (a corrupt
    record is passed over, logged and counted, where ``TFRecordDataset`` drops
    the rest of its file) and ``verify=False`` (which it cannot do): the same
    reads, checks and errors as :class:`tilestream.torch.TileDataset`.
    """

    def __init__(self, plan: TilePlan, *, verify: bool, skip: bool, count: SkipCount) -> None:
        self.plan = plan
        self.verify = verify
        self.skip = skip
        self.count = count
        # One set of file handles per tf.data thread, by thread id: TensorFlow gives each
        # numpy_function call a fresh Python thread state, so a threading.local would open
        # the file again for every record.
        self._handles: dict[int, FileHandles] = {}
        self._lock = threading.Lock()
        self._in_a_row = 0  # skips since the last good record: bounded, so no endless loop
        self._limit = plan.num_records + 1

    def __call__(self, f: Any, record: Any) -> tuple[Any, Any]:
        src = self.plan.sources[int(f)]
        r = int(record)
        handles = self._handles.get(threading.get_ident())
        if handles is None:
            with self._lock:
                handles = self._handles.setdefault(threading.get_ident(), FileHandles())
        try:
            data = read_source_record(src, handles, r, verify=self.verify)
        except CorruptRecordError as exc:
            if not self.skip:
                raise
            self.count.add()
            self._in_a_row += 1
            log.warning("skipping record (%d skipped so far): %s", self.count.value, exc)
            if self._in_a_row > self._limit:
                raise CorruptRecordError(
                    f"every record read failed ({self.count.value} skipped); last: {exc}",
                    path=src.path,
                ) from exc
            return np.asarray(b"", dtype=object), np.asarray(False)
        self._in_a_row = 0
        return np.asarray(data, dtype=object), np.asarray(True)

    def op(self, f: Any, record: Any) -> tuple[Any, Any]:
        data, ok = tf.numpy_function(self, [f, record], [tf.string, tf.bool])
        return tf.ensure_shape(data, []), tf.ensure_shape(ok, [])


def _is_read(data: Any, ok: Any) -> Any:
    return ok


def _payload(data: Any, ok: Any) -> Any:
    return data


def _normalize_op(
    normalizer: Callable[[np.ndarray], np.ndarray], letters: str, seed: int
) -> Callable[[Any, Any], Any]:
    """The stain normaliser (or stain augmentation ``n``) as an op, seeded per record."""

    def run(img: np.ndarray, index: Any) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(index), 0x57A1]))
        out = np.asarray(normalize_image(img, normalizer, letters, rng))
        if out.shape != img.shape or out.dtype != np.uint8:
            raise ConfigError(
                f"the normalizer returned a {out.dtype} array of shape {out.shape} for a uint8 "
                f"tile of shape {img.shape}"
            )
        return np.ascontiguousarray(out)

    def op(img: Any, index: Any) -> Any:
        out = tf.numpy_function(run, [img, index], tf.uint8)
        return tf.ensure_shape(out, img.shape)

    return op


def _label_table(plan: TilePlan) -> tuple[Any, Any]:
    """A slide-name -> label lookup table (or None) and the label dtype."""
    if plan.labels is None:
        return None, tf.int64
    label_dtype = tf.int64
    values = [plan.labels[s] for s in plan.slides]
    keys = list(plan.labels.keys())
    vals = [plan.labels[k] for k in keys]
    if any(isinstance(v, float) for v in values):
        label_dtype = tf.float32
        vals = [float(v) for v in vals]
    elif not all(isinstance(v, int | np.integer) for v in vals):
        raise ConfigError("tile_dataset supports integer or float labels per slide")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(vals, label_dtype)
        ),
        default_value=tf.constant(-1, label_dtype),
    )
    return table, label_dtype


def _records(
    plan: TilePlan,
    shard: tuple[int, int] | None,
    *,
    infinite: bool,
    shuffle: bool,
    seed: int,
    reader: _RecordReader | None,
) -> Any:
    """The shard's serialized records, files interleaved by weight.

    Without ``reader``, each file is a ``TFRecordDataset``; with it, a dataset
    of record numbers (shuffled the same way) read through ``reader``.
    """
    lengths = plan.lengths
    ranges = shard_ranges(lengths, shard)
    if infinite and not any(len(r) for r in ranges):
        # More shards than records: an infinite shard reads everything rather than nothing.
        shard, ranges = None, shard_ranges(lengths, None)
    files = [f for f, r in enumerate(ranges) if len(r)]

    def one_file(f: int, take: int | None = None) -> Any:
        if reader is not None:
            numbers = np.asarray(ranges[f] if take is None else ranges[f][:take], dtype=np.int64)
            ds = tf.data.Dataset.from_tensor_slices(numbers).map(
                lambda r: (tf.constant(f, tf.int64), r)
            )
        else:
            ds = tf.data.TFRecordDataset(plan.sources[f].path)
            ds = ds.take(lengths[f] if take is None else take)
            if shard is not None:
                ds = ds.skip(ranges[f].start).shard(shard[1], 0)
        if shuffle and take is None:
            ds = ds.shuffle(len(ranges[f]), seed=_seed_pair(seed, f, 1)[0])
        if infinite and take is None:
            ds = ds.repeat()
        return ds

    per_file = [one_file(f) for f in files]
    if not per_file:  # a finite shard with no records: an empty dataset of the right structure
        per_file, files = [one_file(0, take=0)], [0]
    if shuffle or plan.weights is not None:
        w = (
            np.asarray([plan.weights[f] for f in files])
            if plan.weights is not None
            else np.ones(len(files))
        )
        if w.sum() <= 0:
            raise ConfigError(f"every file of shard {shard} has weight zero")
        ds = tf.data.Dataset.sample_from_datasets(
            per_file,
            weights=(w / w.sum()).tolist(),
            seed=_seed_pair(seed, 0 if shard is None else shard[0] + 1, 2)[0],
            stop_on_empty_dataset=False,
        )
    else:
        ds = functools.reduce(lambda a, b: a.concatenate(b), per_file)
        if infinite:
            ds = ds.repeat()
    return ds


def _remote_records(
    plan: TilePlan, shard: tuple[int, int] | None, opts: TileOptions, count: SkipCount
) -> Any:
    """The shard's serialized records of remote TFRecords, read by tilestream's block reader.

    Each pass over the dataset is a new epoch (a new shuffle); records are
    read in blocks ahead of the pipeline as in the PyTorch dataset
    (:mod:`tilestream.loaders.remote`).
    """
    passes = itertools.count()
    read_plan = ReadPlan(opts.block_records, opts.read_ahead, opts.shuffle_buffer)

    def records() -> Any:
        yield from multi_tfrecord_loader(
            plan.sources, weights=plan.weights, infinite=opts.infinite, shard=shard,
            shuffle=opts.shuffle, seed=opts.seed, epoch=next(passes),
            interleave=opts.shuffle or plan.weights is not None, parser=bytes,
            on_error=opts.on_error, verify=opts.verify, on_skip=lambda _: count.add(),
            read_plan=read_plan,
        )  # fmt: skip

    return tf.data.Dataset.from_generator(
        records, output_signature=tf.TensorSpec(shape=(), dtype=tf.string)
    )


def _payloads(
    plan: TilePlan,
    shard: tuple[int, int] | None,
    opts: TileOptions,
    reader: _RecordReader | None,
    *,
    calls: int,
    deterministic: bool | None,
    count: SkipCount | None = None,
) -> Any:
    """The serialized records of one pass (``epoch_length`` of them in infinite mode)."""
    if any(src.remote is not None for src in plan.sources):
        ds = _remote_records(plan, shard, opts, count or SkipCount())
        return ds.take(opts.epoch_length) if opts.epoch_length is not None else ds
    ds = _records(
        plan, shard, infinite=opts.infinite, shuffle=opts.shuffle, seed=opts.seed, reader=reader
    )
    if reader is not None:
        ds = ds.map(reader.op, num_parallel_calls=calls, deterministic=deterministic)
        ds = ds.filter(_is_read).map(_payload)
    if opts.epoch_length is not None:
        ds = ds.take(opts.epoch_length)
    return ds


def _decode(raw: Any, img_size: int | None) -> Any:
    """A tile's bytes as a uint8 HWC image (checked against ``img_size``)."""
    # Accurate integer DCT: TensorFlow's default (fast DCT) differs in the last bits
    # from libjpeg-turbo's accurate decode that the PyTorch path uses.
    img = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(raw, channels=3, expand_animations=False),
    )
    if img_size is not None:
        tf.debugging.assert_equal(
            tf.shape(img)[:2], [img_size, img_size], message="tile is not img_size px"
        )
        img = tf.ensure_shape(img, [img_size, img_size, 3])
    return img


def _outputs(img: Any, label: Any, ex: Any, opts: TileOptions) -> Any:
    """What one record yields: a dict, or ``(image, label[, slide][, loc_x, loc_y])``."""
    if opts.as_dict:
        return {
            "image": img,
            "label": label,
            "slide": ex["slide"],
            "loc_x": ex["loc_x"],
            "loc_y": ex["loc_y"],
        }
    out: tuple[Any, ...] = (img, label)
    if opts.incl_slidenames:
        out += (ex["slide"],)
    if opts.incl_loc:
        out += (ex["loc_x"], ex["loc_y"])
    return out


def _record_parser(plan: TilePlan, opts: TileOptions) -> Callable[[Any, Any], Any]:
    """``(record number, record) -> outputs``: parse, decode, augment, normalise, label."""
    letters = parse_augment(opts.augment)
    norm = resolve_normalizer(opts.normalizer, letters)
    table, _ = _label_table(plan)
    base_seed = _seed_pair(opts.seed, 3)
    norm_op = _normalize_op(norm, letters, opts.seed) if norm is not None else None

    def parse(index: Any, record: Any) -> Any:
        ex = tf.io.parse_single_example(record, _FEATURES)
        img = _decode(ex["image_raw"], opts.img_size)
        if letters.replace("n", ""):
            img = _augment(img, letters, tf.stack([tf.constant(base_seed[0], tf.int64), index]))
        if norm_op is not None:
            img = norm_op(img, index)
        if opts.standardize:
            img = tf.image.per_image_standardization(img)
        label = table.lookup(ex["slide"]) if table is not None else tf.constant(0, tf.int64)
        return _outputs(img, label, ex, opts)

    return parse


class TFTileKwargs(TileKwargs, total=False):
    """The keyword arguments of :func:`tile_dataset`: the options, and its own three."""

    shard: tuple[int, int] | None
    num_parallel_calls: int | None
    deterministic: bool | None


def tile_dataset(
    tfrecords: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    shard: tuple[int, int] | None = None,
    num_parallel_calls: int | None = None,
    deterministic: bool | None = None,
    options: TileOptions | None = None,
    **kwargs: Unpack[TileKwargs],
) -> Any:
    """Tiles of many TFRecords as a ``tf.data.Dataset`` of ``(image, label)``.

    Options are as for :class:`tilestream.torch.TileDataset`: a
    :class:`~tilestream.loaders.options.TileOptions` as ``options``, or its
    fields as keyword arguments. Differences:

    - sharding is explicit: ``shard=(i, n)`` (the same record-level split:
      disjoint, complete, balanced);
    - images are ``tf.uint8`` HWC, or with ``standardize`` float32 through
      ``tf.image.per_image_standardization`` (Slideflow's TensorFlow convention);
    - files are interleaved with ``tf.data.Dataset.sample_from_datasets`` (by
      weight; exhausted files drop out in finite mode), records shuffled within
      each file with a full-file buffer, reshuffled every iteration;
    - augmentation uses stateless TensorFlow ops seeded by ``(seed, record
      number)``, so a run is reproducible; the stain ``normalizer`` (and stain
      augmentation ``n``, seeded the same way) runs as a ``tf.numpy_function``,
      after the other augmentations, as in the PyTorch dataset;
    - ``epoch_length`` (infinite mode only) is the number of records of each
      pass over the dataset (of this shard); without it an infinite dataset
      never ends;
    - TFRecords given by URL are read as in :mod:`tilestream.loaders.remote`;
    - records are read by ``TFRecordDataset`` (CRCs checked by TensorFlow; a corrupt
      record raises ``DataLossError``, by URL ``InvalidArgumentError``), except with
      ``on_error="skip"`` or ``verify=False``: then tilestream's reader reads
      them (the same records, order and checks), and a corrupt record is
      passed over, logged and counted in ``int(dataset.skipped)``
      (a :class:`SkipCount`, a running total over every pass). Files left out
      as unreadable at call time are in ``dataset.skipped_files``;
    - ``batch_size`` batches (dropping a short last batch with ``drop_last``)
      and prefetches.

    Returns
    -------
    tf.data.Dataset
        With the attributes ``skipped`` (:class:`SkipCount`), ``skipped_files``
        (``{file: reason}``) and ``left_out`` (the TFRecords of stale slides of
        a run folder, left out with a warning); mapping or batching it further
        returns a new dataset without them.

    Raises
    ------
    TFRecordError, AnnotationError, ConfigError
        At call time, as for the PyTorch dataset.

    Examples
    --------
    >>> import os, tempfile
    >>> from tilestream.loaders.parser import _demo_tfrecord
    >>> path = _demo_tfrecord(os.path.join(tempfile.mkdtemp(), "a.tfrecords"), 3)
    >>> images, labels = next(iter(tile_dataset([path], labels={"a": 1}, batch_size=3)))
    >>> images.shape.as_list(), images.dtype.name, labels.numpy().tolist()
    ([3, 8, 8, 3], 'uint8', [1, 1, 1])
    """
    shard = validate_shard(shard)
    opts = resolve_options(options, kwargs, where="tile_dataset")
    plan = plan_tiles(tfrecords, options=opts)
    parse = _record_parser(plan, opts)
    count = SkipCount()
    reader = None
    if opts.on_error == "skip" or not opts.verify:
        reader = _RecordReader(plan, verify=opts.verify, skip=opts.on_error == "skip", count=count)
    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = _payloads(plan, shard, opts, reader, calls=calls, deterministic=deterministic, count=count)
    ds = ds.enumerate().map(parse, num_parallel_calls=calls, deterministic=deterministic)
    if opts.batch_size is not None:
        ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_last)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.skipped = count
    ds.skipped_files = dict(plan.skipped_files)
    ds.left_out = list(plan.left_out)
    return ds
