"""TileOptions: one checked set of options for the planner and every tile dataset.

The same dataset through keyword arguments and through ``options=``; a
conflict between the two is a ConfigError naming the option; the object is
frozen; a map-style dataset refuses streaming options it cannot honour. The tests that
read files run once per ``storage`` kind (``local``; ``s3`` and ``http`` from SeaweedFS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from _remote import Remote
from tilestream.errors import ConfigError
from tilestream.loaders.options import TileOptions, resolve_options
from tilestream.loaders.tiles import plan_tiles

LABELS = {"s1": 0, "s2": 1}


def test_options_are_frozen() -> None:
    opts = TileOptions(seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.seed = 2  # type: ignore[misc]
    assert dataclasses.replace(opts, seed=2).seed == 2
    assert opts.seed == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": True}, "seed must be a non-negative integer"),
        ({"on_error": "ignore"}, "on_error must be 'raise' or 'skip'"),
        ({"epoch_length": 5}, "epoch_length applies to infinite=True only"),
        ({"epoch_length": 0, "infinite": True}, "epoch_length must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"weights": [1.0], "balance": "tile"}, "give weights= or balance=, not both"),
        ({"augment": "xq"}, "augment"),
    ],
)
def test_bad_options_are_refused_on_creation(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TileOptions(**fields)


def test_a_keyword_may_fill_a_default_or_repeat_a_value() -> None:
    opts = TileOptions(seed=3, labels=LABELS)
    assert resolve_options(opts, {"seed": 3, "labels": dict(LABELS)}, where="f") is opts
    assert resolve_options(opts, {"shuffle": False}, where="f") == dataclasses.replace(
        opts, shuffle=False
    )
    assert resolve_options(None, {"seed": 3, "labels": LABELS}, where="f") == opts


def test_conflicting_both_ways_is_a_config_error_naming_each_option() -> None:
    opts = TileOptions(seed=3, augment="xy")
    with pytest.raises(ConfigError, match=r"f: seed=4 conflicts with options.seed=3") as info:
        resolve_options(opts, {"seed": 4, "augment": False, "verify": True}, where="f")
    assert "augment=False conflicts with options.augment='xy'" in str(info.value)
    assert "verify" not in str(info.value)  # the same value both ways is no conflict
    weights = np.array([1.0, 2.0])
    with pytest.raises(ConfigError, match="weights"):
        resolve_options(TileOptions(weights=weights), {"weights": weights.copy()}, where="f")


def test_options_must_be_tile_options_and_keywords_must_exist() -> None:
    with pytest.raises(ConfigError, match="options must be a TileOptions, got dict"):
        resolve_options({"seed": 1}, {}, where="f")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="f\\(\\) got an unexpected keyword argument 'sed'"):
        resolve_options(None, {"sed": 1}, where="f")


def test_the_planner_gives_the_same_plan_both_ways(
    storage: Remote,
    write_tfrecords: Callable[..., list[str]],
) -> None:
    paths = storage.put(write_tfrecords([("s1", 4), ("s2", 2)]))
    by_kwargs = plan_tiles(paths, labels=LABELS, balance="slide", clip=3, **storage.kw)
    # Remote: the storage options travel in the options too (a keyword would make new options).
    opts = TileOptions(labels=LABELS, balance="slide", clip=3, augment="xy", **storage.kw)
    by_options = plan_tiles(paths, options=opts)
    assert by_options.lengths == by_kwargs.lengths == [3, 2]
    assert by_options.labels == by_kwargs.labels
    assert by_options.weights is not None and by_kwargs.weights is not None
    np.testing.assert_allclose(by_options.weights, by_kwargs.weights)
    assert by_options.options is opts  # fields the planner does not use are kept
    with pytest.raises(ConfigError, match=r"clip=2 conflicts with options\.clip=3"):
        plan_tiles(paths, options=opts, clip=2, **storage.kw)
    with pytest.raises(TypeError, match="plan_tiles\\(\\) got an unexpected keyword argument"):
        plan_tiles(paths, augment="xy", **storage.kw)  # type: ignore[call-arg]


def _items(ds: object) -> list[tuple[int, str, int]]:
    import torch

    out = []
    for image, label, slide, loc_x, _ in torch.utils.data.DataLoader(ds, batch_size=None):
        out.append((int(label), slide, int(loc_x), int(image.float().sum())))
    return out


def test_torch_datasets_are_the_same_both_ways(
    storage: Remote, write_tfrecords: Callable[..., list[str]]
) -> None:
    pytest.importorskip("torch")
    from tilestream.torch import IndexedTileDataset, TileDataset

    paths = storage.put(write_tfrecords([("s1", 5), ("s2", 3)]))
    fields = {"labels": LABELS, "seed": 7, "augment": "xyr", "incl_slidenames": True}
    by_kwargs = TileDataset(paths, incl_loc=True, **fields, **storage.kw)
    by_options = TileDataset(paths, options=TileOptions(incl_loc=True, **fields), **storage.kw)
    assert by_options.options == by_kwargs.options
    got = _items(by_options)
    assert got == _items(by_kwargs)
    assert len(got) == 8
    mixed = TileDataset(paths, options=TileOptions(**fields), incl_loc=True, **storage.kw)
    assert _items(mixed) == got
    with pytest.raises(ConfigError, match=r"seed=8 conflicts with options\.seed=7"):
        TileDataset(paths, options=TileOptions(**fields), seed=8, **storage.kw)

    indexed = IndexedTileDataset(
        paths, options=TileOptions(labels=LABELS, incl_loc=True), **storage.kw
    )
    assert [indexed[i][1:] for i in range(8)] == [
        IndexedTileDataset(paths, labels=LABELS, incl_loc=True, **storage.kw)[i][1:]
        for i in range(8)
    ]


def test_a_map_style_dataset_refuses_streaming_options(
    storage: Remote,
    write_tfrecords: Callable[..., list[str]],
) -> None:
    pytest.importorskip("torch")
    from tilestream.torch import IndexedTileDataset

    paths = storage.put(write_tfrecords([("s1", 2)]))
    with pytest.raises(ConfigError, match="IndexedTileDataset does not take shuffle, batch_size"):
        IndexedTileDataset(paths, options=TileOptions(shuffle=False, batch_size=2), **storage.kw)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weights'"):
        IndexedTileDataset(paths, weights=[1.0], **storage.kw)  # type: ignore[call-arg]


def test_tf_dataset_is_the_same_both_ways(
    storage: Remote, write_tfrecords: Callable[..., list[str]], tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    from tilestream.tf import tile_dataset

    paths = storage.put(write_tfrecords([("s1", 5), ("s2", 3)]))
    fields = {"labels": LABELS, "seed": 2, "augment": "xy", "shuffle": True}

    def items(ds: object) -> list[tuple[int, int]]:
        return sorted((int(lab), int(img.numpy().sum())) for img, lab in ds)  # type: ignore[attr-defined]

    by_kwargs = items(tile_dataset(paths, **fields, **storage.kw))
    assert items(tile_dataset(paths, options=TileOptions(**fields), **storage.kw)) == by_kwargs
    assert len(by_kwargs) == 8
    with pytest.raises(ConfigError, match=r"seed=3 conflicts with options\.seed=2"):
        tile_dataset(paths, options=TileOptions(**fields), seed=3, **storage.kw)
