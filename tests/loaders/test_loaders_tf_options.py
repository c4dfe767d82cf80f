"""``tile_dataset``'s normalizer, stain augmentation, on_error, verify and epoch_length.

Each checked against :class:`tilestream.torch.TileDataset` on the same real
tiles: the same records, and the same pixels wherever the result is determined. Each
test runs once per ``storage`` kind (``local``; ``s3`` and ``http`` from SeaweedFS).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import numpy as np
import pytest

from _remote import storage_kinds
from tilestream.errors import ConfigError

pytestmark = [pytest.mark.tensorflow, pytest.mark.torch]

SPEC = [("good", 4), ("mid", 5), ("first", 4), ("cut", 6)]


def _flip(path: str, record: int, at: int) -> None:
    """Flip one byte of ``record`` at ``at`` past its start (mtime kept: the index stays valid)."""
    from tilestream.tfrecord import load_index

    offset = int(load_index(path).offsets[record])
    stat = os.stat(path)
    data = bytearray(Path(path).read_bytes())
    data[offset + at] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _tf_items(ds) -> dict[tuple[str, int], np.ndarray]:
    return {(e["slide"].numpy().decode(), int(e["loc_x"].numpy())): e["image"].numpy() for e in ds}


def _torch_items(ds) -> dict[tuple[str, int], np.ndarray]:
    return {(e["slide"], e["loc_x"]): e["image"].permute(1, 2, 0).numpy() for e in ds}


def test_normalizer_gives_the_same_pixels_as_torch(storage, tf, torch, write_tfrecords):
    from tilestream.tf import tile_dataset
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 5), ("b", 3)]))
    got = _tf_items(tile_dataset(paths, as_dict=True, normalizer="reinhard", seed=2, **storage.kw))
    want = _torch_items(
        TileDataset(paths, as_dict=True, normalizer="reinhard", seed=2, **storage.kw)
    )
    plain = _tf_items(tile_dataset(paths, as_dict=True, seed=2, **storage.kw))
    assert sorted(got) == sorted(want) == sorted(plain)
    for key, img in got.items():
        assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
        assert np.array_equal(img, want[key]), key
    assert any(not np.array_equal(got[k], plain[k]) for k in got)  # it did normalise
    calls = []

    def invert(img: np.ndarray) -> np.ndarray:
        calls.append(img.shape)
        return 255 - img

    inverted = _tf_items(tile_dataset(paths, as_dict=True, normalizer=invert, **storage.kw))
    assert all(np.array_equal(inverted[k], 255 - plain[k]) for k in plain)
    assert len(calls) == len(plain)


def test_stain_augmentation_is_seeded_and_needs_a_stain_normalizer(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("a", 6)]))

    def images(seed, augment):
        ds = tile_dataset(
            paths,
            shuffle=False,
            normalizer="reinhard",
            augment=augment,
            seed=seed,
            batch_size=6,
            **storage.kw,
        )
        return next(iter(ds))[0].numpy()

    a = images(0, "n")
    assert np.array_equal(a, images(0, "n"))
    assert not np.array_equal(a, images(1, "n"))
    assert not np.array_equal(a, images(0, False))
    assert images(0, "xyn").shape == a.shape
    with pytest.raises(ConfigError, match="needs a stain normalizer"):
        tile_dataset(paths, augment="n", **storage.kw)
    with pytest.raises(ConfigError, match="needs a stain normalizer"):
        tile_dataset(paths, augment="n", normalizer=lambda img: img, **storage.kw)


@pytest.fixture
def damaged(storage, write_tfrecords) -> list[str]:
    """The damaged files, placed in ``storage`` (after the damage)."""
    paths = write_tfrecords(SPEC)
    _flip(paths[1], 2, 12 + 40)  # bit rot in the middle of "mid"
    _flip(paths[2], 0, 12 + 40)  # and in the first record of "first"
    cut = Path(paths[3])
    cut.write_bytes(cut.read_bytes()[:-100])  # "cut" ends inside its last record
    return storage.put(paths)


def test_skip_matches_torch_records_files_and_count(storage, tf, torch, damaged, caplog):
    from tilestream.tf import tile_dataset
    from tilestream.torch import TileDataset

    with caplog.at_level(logging.WARNING):
        ds = tile_dataset(damaged, as_dict=True, on_error="skip", seed=3, **storage.kw)
    assert list(ds.skipped_files) == [damaged[3]]
    assert int(ds.skipped) == 0
    got = _tf_items(ds)
    ref = TileDataset(damaged, as_dict=True, on_error="skip", seed=3, **storage.kw)
    want = _torch_items(ref)
    assert sorted(got) == sorted(want)
    assert ("mid", 2) not in got and ("first", 0) not in got and len(got) == 4 + 4 + 3
    assert all(np.array_equal(got[k], want[k]) for k in got)
    assert int(ds.skipped) == ref.skipped == 2
    assert "record 2" in caplog.text and damaged[1] in caplog.text
    assert len(_tf_items(ds)) == 11  # a second pass over the dataset
    assert int(ds.skipped) == 4


def test_raise_stops_at_a_corrupt_record(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    paths = write_tfrecords([("a", 4)])
    _flip(paths[0], 2, 12 + 40)
    paths = storage.put(paths)
    ds = tile_dataset(paths, as_dict=True, **storage.kw)
    if storage.local:  # TFRecordDataset's own CRC check
        with pytest.raises(tf.errors.DataLossError):
            _tf_items(ds)
        return
    # URLs are read through tf.data.Dataset.from_generator (tilestream.tf.dataset), and
    # TensorFlow's py_func turns the generator's CorruptRecordError (a ValueError) into
    # InvalidArgumentError: it cannot give DataLossError. The message still says where.
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _tf_items(ds)
    assert "CorruptRecordError" in info.value.message and paths[0] in info.value.message
    assert "record 2" in info.value.message


def test_verify_false_reads_records_whose_crc_is_damaged(storage, tf, torch, write_tfrecords):
    from tilestream.tf import tile_dataset
    from tilestream.torch import TileDataset

    paths = write_tfrecords([("a", 4), ("b", 2)])
    from tilestream.tfrecord import load_index

    offsets = load_index(paths[0]).offsets
    footer = int(offsets[2]) - 1  # the last byte of record 1: its data CRC
    _flip(paths[0], 1, footer - int(offsets[1]))
    paths = storage.put(paths)
    got = _tf_items(tile_dataset(paths, as_dict=True, verify=False, seed=1, **storage.kw))
    want = _torch_items(TileDataset(paths, as_dict=True, verify=False, seed=1, **storage.kw))
    assert sorted(got) == sorted(want) and len(got) == 6
    assert all(np.array_equal(got[k], want[k]) for k in got)
    skipping = tile_dataset(paths, as_dict=True, on_error="skip", **storage.kw)
    assert ("a", 1) not in _tf_items(skipping)
    assert int(skipping.skipped) == 1


@pytest.mark.parametrize("storage", storage_kinds(), indirect=True)
def test_epoch_length_bounds_each_pass_of_an_infinite_dataset(storage, tf, torch, write_tfrecords):
    from tilestream.tf import tile_dataset
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 3), ("b", 2)]))
    ds = tile_dataset(paths, infinite=True, epoch_length=12, as_dict=True, **storage.kw)
    assert len(list(ds)) == 12
    assert len(list(ds)) == 12
    batched = tile_dataset(paths, infinite=True, epoch_length=12, batch_size=5, **storage.kw)
    assert [int(b[0].shape[0]) for b in batched] == [5, 5, 2]
    assert len(list(TileDataset(paths, infinite=True, epoch_length=12, **storage.kw))) == 12
    with pytest.raises(ConfigError, match="infinite=True only"):
        tile_dataset(paths, epoch_length=3, **storage.kw)
    with pytest.raises(ConfigError, match="positive integer"):
        tile_dataset(paths, infinite=True, epoch_length=0, **storage.kw)
    with pytest.raises(ConfigError, match="on_error"):
        tile_dataset(paths, on_error="ignore", **storage.kw)


@pytest.mark.parametrize("shard", [None, (0, 2), (1, 3)])
def test_tilestreams_reader_gives_the_native_stream_in_the_same_order(
    storage, tf, write_tfrecords, shard
):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("a", 5), ("b", 1), ("c", 7)]))

    def ids(**kw):
        ds = tile_dataset(paths, as_dict=True, seed=5, shard=shard, **kw, **storage.kw)
        return [(e["slide"].numpy().decode(), int(e["loc_x"].numpy())) for e in ds]

    native = ids()
    assert ids(on_error="skip") == native
    assert ids(verify=False) == native
    assert ids(on_error="skip", shuffle=False) == ids(shuffle=False)


@pytest.mark.parametrize("storage", storage_kinds(), indirect=True)
def test_skip_does_not_loop_forever_when_every_record_goes_bad(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    (local,) = write_tfrecords([("a", 3)])
    # Its own key: the object is replaced below.
    (path,) = storage.put([local], prefix=f"rot-{secrets.token_hex(4)}")
    ds = tile_dataset([path], infinite=True, on_error="skip", num_parallel_calls=1, **storage.kw)
    for j in range(3):  # the file rots after the dataset was made
        _flip(local, j, 12 + 40)
    if not storage.local:
        storage.put_bytes(path.split(f"/{storage.bucket}/", 1)[1], Path(local).read_bytes())
    with pytest.raises(tf.errors.OpError, match="every record read failed"):
        list(ds.take(10))
    assert int(ds.skipped) > 3
