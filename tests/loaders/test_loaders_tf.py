"""tf.data interop: the same records, the same pixels, the same sharding rules.

Each test runs once per ``storage`` kind (``local``; ``s3`` and ``http`` from SeaweedFS).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from _remote import storage_kinds
from tilestream.errors import AnnotationError, ConfigError

pytestmark = pytest.mark.tensorflow

SPEC = [("a", 5), ("b", 1), ("c", 9)]


def expected(spec):
    return sorted((s, j) for s, n in spec for j in range(n))


def ids(ds):
    return [(e["slide"].numpy().decode(), int(e["loc_x"].numpy())) for e in ds]


def test_same_records_same_pixels_as_torch(storage, tf, torch, write_tfrecords):
    from tilestream.tf import tile_dataset
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    labels = {"a": 0, "b": 1, "c": 2}
    tf_items = {
        (e["slide"].numpy().decode(), int(e["loc_x"].numpy())): (e["image"].numpy(), e["label"])
        for e in tile_dataset(paths, labels=labels, as_dict=True, seed=1, **storage.kw)
    }
    torch_items = {
        (e["slide"], e["loc_x"]): (e["image"].permute(1, 2, 0).numpy(), e["label"])
        for e in TileDataset(paths, labels=labels, as_dict=True, seed=1, **storage.kw)
    }
    assert sorted(tf_items) == sorted(torch_items) == expected(SPEC)
    for key, (img, label) in tf_items.items():
        want, want_label = torch_items[key]
        assert img.dtype == np.uint8
        assert np.array_equal(img, want), key
        assert int(label) == want_label


def test_standardize_matches_per_image_standardization(storage, tf, write_tfrecords):
    from tilestream.loaders import per_image_standardization
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("a", 2)]))
    raw = [e[0].numpy() for e in tile_dataset(paths, shuffle=False, **storage.kw)]
    std = [e[0].numpy() for e in tile_dataset(paths, shuffle=False, standardize=True, **storage.kw)]
    for r, s in zip(raw, std, strict=True):
        np.testing.assert_allclose(s, per_image_standardization(r), atol=1e-5)


@pytest.mark.parametrize("shards", [1, 2, 4, 20])
def test_shards_are_disjoint_and_complete(storage, tf, write_tfrecords, shards):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords(SPEC))
    seen = []
    for i in range(shards):
        seen += ids(tile_dataset(paths, shard=(i, shards), as_dict=True, seed=2, **storage.kw))
    assert sorted(seen) == expected(SPEC)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)  # infinite
def test_weights_batches_and_infinite(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("a", 3), ("b", 3)]))
    ds = tile_dataset(
        paths, weights=[1, 3], infinite=True, batch_size=50, as_dict=True, **storage.kw
    )
    slides = [s.decode() for b in ds.take(40) for s in b["slide"].numpy()]
    assert len(slides) == 2000
    assert collections.Counter(slides)["b"] / 2000 == pytest.approx(0.75, abs=0.04)
    finite = tile_dataset(paths, weights=[1, 3], batch_size=4, drop_last=True, **storage.kw)
    assert [b[0].shape[0] for b in finite] == [4]


def test_seeded_augmentation_is_reproducible(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("a", 8)]))

    def images(seed, augment):
        ds = tile_dataset(
            paths, shuffle=False, augment=augment, seed=seed, batch_size=8, **storage.kw
        )
        return next(iter(ds))[0].numpy()

    plain = images(0, False)
    a = images(0, "xyr")
    assert np.array_equal(a, images(0, "xyr"))
    assert not np.array_equal(a, plain)
    assert np.array_equal(np.sort(a.reshape(8, -1), axis=1), np.sort(plain.reshape(8, -1), axis=1))
    full = images(0, True)
    assert full.shape == plain.shape


def test_construction_errors(storage, tf, write_tfrecords):
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords(SPEC))
    with pytest.raises(AnnotationError, match="no label for slide 'b'"):
        tile_dataset(paths, labels={"a": 0, "c": 1}, **storage.kw)
    with pytest.raises(ConfigError, match="stain augmentation"):
        tile_dataset(paths, augment="n", **storage.kw)
    with pytest.raises(ConfigError, match="unknown files"):
        tile_dataset(paths, weights={"x": 1}, **storage.kw)
