"""Dataset.torch / Dataset.tensorflow pass options through: keywords or a TileOptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilestream.dataset import Dataset
from tilestream.errors import ConfigError
from tilestream.loaders.options import TileOptions
from tilestream.tfrecord import TFRecordWriter, serialized_record


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    for name, n in [("s1", 5), ("s2", 3)]:
        with TFRecordWriter(tmp_path / f"{name}.tfrecords") as w:
            for i in range(n):
                w.write(serialized_record(name, b"\xff\xd8img", i, 0), location=(i, 0))
    ann = [{"slide": "s1", "label": "a"}, {"slide": "s2", "label": "b"}]
    return Dataset(tfrecords=tmp_path, annotations=ann).clip(4)


def test_torch_takes_options_and_the_dataset_fills_what_they_leave(dataset: Dataset) -> None:
    pytest.importorskip("torch")
    by_kwargs = dataset.torch("label", seed=5)
    by_options = dataset.torch("label", options=TileOptions(seed=5))
    assert by_kwargs.options == by_options.options
    assert by_options.labels == {"s1": 0, "s2": 1}
    assert by_options.plan.lengths == [4, 3]  # the dataset's clip
    own_clip = dataset.torch("label", options=TileOptions(clip=2))
    assert own_clip.plan.lengths == [2, 2]  # the options' clip, not the dataset's
    with pytest.raises(ConfigError, match=r"labels=.* conflicts with options\.labels"):
        dataset.torch(options=TileOptions(labels={"s1": 1, "s2": 0}), labels={"s1": 0, "s2": 0})


def test_tensorflow_takes_options_and_its_own_keywords(dataset: Dataset) -> None:
    pytest.importorskip("tensorflow")
    ds = dataset.tensorflow("label", options=TileOptions(shuffle=False), shard=(0, 2))
    assert ds.left_out == []
    with pytest.raises(ConfigError, match=r"seed=1 conflicts with options\.seed=2"):
        dataset.tensorflow("label", options=TileOptions(seed=2), seed=1)
