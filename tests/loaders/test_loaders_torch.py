"""PyTorch datasets through a real DataLoader, with real workers and simulated ranks.

The tests that read files run once per ``storage`` kind: ``local``, and ``s3`` and ``http``
reading the same files from SeaweedFS, with the same assertions.
"""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from _remote import storage_kinds
from tilestream.errors import AnnotationError, ConfigError, CorruptRecordError, TFRecordError

pytestmark = pytest.mark.torch

SPEC = [("a", 7), ("b", 1), ("c", 12), ("d", 3)]


INFINITE_KINDS = storage_kinds()


def expected(spec):
    return sorted((s, j) for s, n in spec for j in range(n))


def run(loader) -> list[tuple[str, int]]:
    out = []
    for batch in loader:
        out += list(zip(batch["slide"], batch["loc_x"].tolist(), strict=True))
    return out


def loader_for(torch, ds, workers, **kw):
    return torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, **kw)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_record_exactly_once_per_epoch(
    storage, torch, write_tfrecords, monkeypatch, world, workers
):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    ds = TileDataset(paths, as_dict=True, seed=3, **storage.kw)
    by_rank = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        by_rank.append(run(loader_for(torch, ds, workers)))
    seen = [r for records in by_rank for r in records]
    assert sorted(seen) == expected(SPEC), _what_differs(by_rank, expected(SPEC))


def _what_differs(by_rank: list[list[tuple[str, int]]], want: list[tuple[str, int]]) -> str:
    """Records missing, repeated and unexpected, and what each rank gave (a one-off failure
    must say which)."""
    counts = collections.Counter(r for records in by_rank for r in records)
    missing = sorted(set(want) - set(counts))
    repeated = sorted(r for r, n in counts.items() if n > 1)
    unexpected = sorted(set(counts) - set(want))
    ranks = "; ".join(f"rank {i}: {len(rs)} {sorted(rs)}" for i, rs in enumerate(by_rank))
    return f"missing {missing}, repeated {repeated}, unexpected {unexpected}; {ranks}"


def test_more_shards_than_files_and_records(storage, torch, write_tfrecords, monkeypatch):
    from tilestream.torch import TileDataset

    spec = [("a", 2), ("b", 1)]
    ds = TileDataset(storage.put(write_tfrecords(spec)), as_dict=True, seed=0, **storage.kw)
    seen = []
    for rank in range(3):  # 3 ranks x 2 workers = 6 shards for 3 records
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        seen += run(loader_for(torch, ds, 2))
    assert sorted(seen) == expected(spec)


def test_same_seed_same_order_and_epochs_reshuffle(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    a = TileDataset(paths, as_dict=True, seed=7, **storage.kw)
    b = TileDataset(paths, as_dict=True, seed=7, **storage.kw)
    first = run(loader_for(torch, a, 2))
    assert first == run(loader_for(torch, b, 2))
    assert first != expected(SPEC)  # shuffled
    a.set_epoch(1)
    second = run(loader_for(torch, a, 2))
    assert second != first
    assert sorted(second) == sorted(first) == expected(SPEC)
    c = TileDataset(paths, as_dict=True, seed=8, **storage.kw)
    assert run(loader_for(torch, c, 2)) != first


def test_set_epoch_reaches_persistent_workers(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    ds = TileDataset(paths, as_dict=True, seed=1, **storage.kw)
    loader = loader_for(torch, ds, 2, persistent_workers=True)
    epoch0 = run(loader)
    ds.set_epoch(1)
    epoch1 = run(loader)
    fresh = TileDataset(paths, as_dict=True, seed=1, **storage.kw)
    fresh.set_epoch(1)
    assert epoch1 == run(loader_for(torch, fresh, 2))
    assert epoch0 != epoch1


def test_unshuffled_reads_files_in_order(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    ds = TileDataset(storage.put(write_tfrecords(SPEC)), as_dict=True, shuffle=False, **storage.kw)
    assert run(loader_for(torch, ds, 0)) == [(s, j) for s, n in SPEC for j in range(n)]


def test_images_are_the_decoded_tiles(storage, torch, write_tfrecords, real_tiles):
    import simplejpeg

    from tilestream.torch import TileDataset

    ds = TileDataset(
        storage.put(write_tfrecords([("a", 5)])), shuffle=False, incl_loc=True, **storage.kw
    )
    items = list(ds)
    assert len(items) == 5
    for j, (img, label, x, y) in enumerate(items):
        assert (label, x, y) == (0, j, 1000 + j)
        assert img.dtype == torch.uint8
        assert img.shape == (3, 32, 32)
        want = simplejpeg.decode_jpeg(real_tiles[j], colorspace="RGB")
        assert np.array_equal(img.permute(1, 2, 0).numpy(), want)
    std = TileDataset(ds.tfrecords, shuffle=False, standardize=True, **storage.kw)
    img0 = next(iter(std))[0]
    assert img0.dtype == torch.float32
    torch.testing.assert_close(img0, items[0][0].float() / 127.5 - 1)


def test_labels_from_dict_and_csv(storage, torch, write_tfrecords, tmp_path):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    ds = TileDataset(
        paths, labels={"a": 1, "b": 0, "c": 1, "d": 2}, incl_slidenames=True, **storage.kw
    )
    for _img, label, slide in ds:
        assert label == {"a": 1, "b": 0, "c": 1, "d": 2}[slide]
    csv = tmp_path / "annotations.csv"
    csv.write_text("patient,slide,subtype\np1,a,lung\np2,b,colon\np3,c,lung\np4,d,breast\n")
    ds = TileDataset(paths, labels=csv, label_column="subtype", incl_slidenames=True, **storage.kw)
    assert ds.label_names == ["breast", "colon", "lung"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=30)))
    for label, slide in zip(batch[1].tolist(), batch[2], strict=True):
        assert (
            ds.label_names[label] == {"a": "lung", "b": "colon", "c": "lung", "d": "breast"}[slide]
        )


def test_construction_errors(storage, torch, write_tfrecords, tmp_path):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    with pytest.raises(AnnotationError, match=r"no label for slide 'd'"):
        TileDataset(paths, labels={"a": 1, "b": 0, "c": 1}, **storage.kw)
    with pytest.raises(ConfigError, match="unknown files: 'zz'"):
        TileDataset(paths, weights={"a": 1, "b": 1, "c": 1, "d": 1, "zz": 1}, **storage.kw)
    with pytest.raises(TFRecordError, match="does not exist"):
        TileDataset([*paths, str(tmp_path / "gone.tfrecords")], **storage.kw)
    with pytest.raises(ConfigError, match="needs a stain normalizer"):
        TileDataset(paths, augment="xyn", **storage.kw)
    csv = tmp_path / "ann.csv"
    csv.write_text("slide,x\na,1\n")
    with pytest.raises(AnnotationError, match="no column 'outcome'"):
        TileDataset(paths, labels=csv, label_column="outcome", **storage.kw)
    with pytest.raises(ConfigError, match="balance='category' needs labels"):
        TileDataset(paths, balance="category", **storage.kw)


@pytest.mark.parametrize("storage", storage_kinds(), indirect=True)
def test_infinite_mode_keeps_ranks_in_step(storage, torch, write_tfrecords, monkeypatch):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    ds = TileDataset(paths, infinite=True, epoch_length=10, as_dict=True, seed=4, **storage.kw)
    counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        counts.append(len(run(loader_for(torch, ds, 2))))
    assert counts == [10, 10]
    default = TileDataset(paths, infinite=True, as_dict=True, seed=4, **storage.kw)
    monkeypatch.setenv("RANK", "1")
    assert len(run(loader_for(torch, default, 2))) == sum(n for _, n in SPEC) // 2


@pytest.mark.parametrize("storage", INFINITE_KINDS, indirect=True)
def test_balance_weights_steer_sampling(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 2), ("b", 18)]))
    ds = TileDataset(
        paths, balance="slide", infinite=True, epoch_length=2000, as_dict=True, **storage.kw
    )
    counts = collections.Counter(s for s, _ in run(loader_for(torch, ds, 0)))
    assert counts["a"] / 2000 == pytest.approx(0.5, abs=0.05)
    ds = TileDataset(
        paths, balance="tile", infinite=True, epoch_length=2000, as_dict=True, **storage.kw
    )
    counts = collections.Counter(s for s, _ in run(loader_for(torch, ds, 0)))
    assert counts["a"] / 2000 == pytest.approx(0.1, abs=0.03)


def test_augmentation_is_reproducible_per_seed(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 16)]))

    def images(seed, augment):
        ds = TileDataset(paths, shuffle=False, augment=augment, seed=seed, **storage.kw)
        loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
        return torch.cat([b[0] for b in loader])

    plain = images(0, False)
    a = images(0, "xyr")
    assert torch.equal(a, images(0, "xyr"))
    assert not torch.equal(a, plain)
    assert not torch.equal(a, images(1, "xyr"))
    # Flips and rotations only move pixels.
    assert torch.equal(a.sum(dim=(1, 2, 3)), plain.sum(dim=(1, 2, 3)))


def test_corrupt_record_in_a_worker(storage, torch, write_tfrecords):
    from tilestream.tfrecord import load_index
    from tilestream.torch import TileDataset

    (local,) = write_tfrecords([("a", 6)])
    offset = int(load_index(local).offsets[3])
    # Bit rot on disk: one flipped byte, the file's mtime unchanged (the index stays valid).
    stat = os.stat(local)
    data = bytearray(Path(local).read_bytes())
    data[offset + 30] ^= 0xFF
    Path(local).write_bytes(bytes(data))
    os.utime(local, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    path = storage.name(local)
    ds = TileDataset([path], as_dict=True, **storage.kw)
    with pytest.raises(CorruptRecordError, match=rf"record 3 at byte {offset}"):
        run(loader_for(torch, ds, 1))
    ds = TileDataset([path], as_dict=True, on_error="skip", **storage.kw)
    assert sorted(run(loader_for(torch, ds, 1))) == [("a", j) for j in (0, 1, 2, 4, 5)]


def test_dataset_pickles_by_path(storage, torch, write_tfrecords):
    from tilestream.torch import IndexedTileDataset, TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    for ds in (TileDataset(paths, **storage.kw), IndexedTileDataset(paths, **storage.kw)):
        blob = pickle.dumps(ds)
        # Remote datasets add a fixed table of shared I/O counters (256 x 3 int64).
        assert len(blob) < (10_000 if storage.local else 17_000)
        assert pickle.loads(blob).tfrecords == paths


@pytest.mark.parametrize("workers", [0, 2])
def test_indexed_dataset_with_distributed_sampler(storage, torch, write_tfrecords, workers):
    from tilestream.torch import IndexedTileDataset

    paths = storage.put(write_tfrecords(SPEC))
    ds = IndexedTileDataset(paths, as_dict=True, **storage.kw)
    assert len(ds) == 23
    assert ds.locate(7) == (paths[1], 0)
    seen = []
    for rank in range(3):
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=3, rank=rank, shuffle=True, seed=0, drop_last=False
        )
        seen += run(
            torch.utils.data.DataLoader(ds, batch_size=5, sampler=sampler, num_workers=workers)
        )
    # DistributedSampler pads to a multiple of the world size with repeats.
    assert set(seen) == set(expected(SPEC))
    assert len(seen) == 24
    with pytest.raises(IndexError):
        ds[23]
    assert ds[-1]["loc_x"] == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_batches_hold_every_record_once_with_the_same_pixels(
    storage, torch, write_tfrecords, monkeypatch, workers
):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))
    labels = {"a": 3, "b": 1, "c": 2, "d": 0}
    per_tile = {
        (e["slide"], e["loc_x"]): (e["image"], e["label"])
        for e in TileDataset(paths, labels=labels, as_dict=True, seed=5, **storage.kw)
    }
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = TileDataset(paths, labels=labels, as_dict=True, seed=5, batch_size=4, **storage.kw)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        for batch in loader:
            images = batch["image"]
            assert images.dtype == torch.uint8
            assert images.shape[1:] == (3, 32, 32)
            assert images.shape[0] <= 4
            for i, key in enumerate(zip(batch["slide"], batch["loc_x"].tolist(), strict=True)):
                want_image, want_label = per_tile[key]
                assert torch.equal(images[i], want_image)
                assert int(batch["label"][i]) == want_label
                seen.append(key)
    assert sorted(seen) == expected(SPEC)


def test_worker_batches_drop_last_and_standardize(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords(SPEC))  # 23 records
    ds = TileDataset(
        paths, batch_size=5, drop_last=True, standardize=True, incl_loc=True, **storage.kw
    )
    batches = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0))
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 5]
    images, labels, loc_x, loc_y = batches[0]
    assert images.dtype == torch.float32
    assert float(images.min()) >= -1.0
    assert float(images.max()) <= 1.0
    assert labels.tolist() == [0] * 5
    assert torch.equal(loc_y, loc_x + 1000)
    with pytest.raises(ConfigError, match="batch_size"):
        TileDataset(paths, batch_size=0, **storage.kw)


def test_torch_distributed_takes_precedence_over_the_environment(torch, monkeypatch, tmp_path):
    import torch.distributed as dist

    from tilestream.loaders import distributed_context

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_context() == (1, 2)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert distributed_context() == (0, 1)
    finally:
        dist.destroy_process_group()


def test_spawned_workers_unpickle_the_dataset_by_path(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 3), ("b", 4)]))
    ds = TileDataset(paths, as_dict=True, seed=0, **storage.kw)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, num_workers=2, multiprocessing_context="spawn"
    )
    assert sorted(run(loader)) == expected([("a", 3), ("b", 4)])


def test_importing_the_torch_package_does_not_import_tensorflow(torch):
    import subprocess
    import sys

    code = "import sys, tilestream.torch, tilestream.loaders; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_file_clipped_to_nothing_is_read_as_empty(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    paths = storage.put(write_tfrecords([("a", 3), ("b", 2)]))
    ds = TileDataset(
        paths, clip={"a": 0}, labels={"b": 1}, as_dict=True, balance="category", **storage.kw
    )
    assert sorted((e["slide"], e["loc_x"], e["label"]) for e in ds) == [("b", 0, 1), ("b", 1, 1)]
    assert ds.num_records == 2
