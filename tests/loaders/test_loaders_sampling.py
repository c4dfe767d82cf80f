"""Weighted choice between files: distribution, removal, validation."""

from __future__ import annotations

import numpy as np
import pytest

from tilestream.errors import ConfigError
from tilestream.loaders.sampling import WeightedSampler, normalize_weights


def _frequencies(sampler: WeightedSampler, n: int, size: int) -> np.ndarray:
    counts = np.bincount([sampler.sample() for _ in range(n)], minlength=size)
    return counts / n


def test_draws_follow_the_weights():
    w = [1.0, 2.0, 0.0, 7.0]
    freq = _frequencies(WeightedSampler(w, np.random.default_rng(3)), 50_000, 4)
    np.testing.assert_allclose(freq, np.array(w) / 10, atol=0.01)
    assert freq[2] == 0


def test_removal_renormalises_the_rest():
    s = WeightedSampler([5.0, 1.0, 3.0, 1.0], np.random.default_rng(4))
    s.remove(0)
    s.remove(0)  # removing twice is harmless
    assert len(s) == 3
    freq = _frequencies(s, 40_000, 4)
    np.testing.assert_allclose(freq, [0, 0.2, 0.6, 0.2], atol=0.01)
    for i in (1, 2, 3):
        s.remove(i)
    with pytest.raises(IndexError):
        s.sample()


def test_many_files_and_tiny_weights():
    # 100,000 files; one holds almost all the weight, one a weight of 1e-12.
    w = np.ones(100_000)
    w[123] = 1e7
    w[7] = 1e-12
    s = WeightedSampler(w, np.random.default_rng(5))
    draws = [s.sample() for _ in range(2000)]
    assert np.mean(np.array(draws) == 123) > 0.95
    s.remove(123)
    draws = [s.sample() for _ in range(2000)]
    assert 123 not in draws
    assert len(set(draws)) > 1900  # now nearly uniform over the rest


def test_exhausting_everything_one_by_one_never_draws_a_removed_file():
    rng = np.random.default_rng(6)
    w = rng.random(37) + 1e-9
    s = WeightedSampler(w, rng)
    removed: set[int] = set()
    while len(s):
        i = s.sample()
        assert i not in removed
        if rng.random() < 0.2:
            s.remove(i)
            removed.add(i)
    assert removed == set(range(37))


def test_same_seed_same_draws():
    a = WeightedSampler([1, 2, 3], np.random.default_rng(9))
    b = WeightedSampler([1, 2, 3], np.random.default_rng(9))
    assert [a.sample() for _ in range(500)] == [b.sample() for _ in range(500)]


def test_normalize_weights_list_and_dict():
    paths = ["d/a.tfrecords", "d/b.tfrecords", "d/c.tfrecords"]
    assert normalize_weights([2, 1, 1], paths).tolist() == [0.5, 0.25, 0.25]
    by_name = normalize_weights({"a": 1, "b.tfrecords": 1, "d/c.tfrecords": 2}, paths)
    assert by_name.tolist() == [0.25, 0.25, 0.5]
    assert normalize_weights(None, paths).tolist() == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1, -1, 1], "must not be negative: d/b.tfrecords=-1.0"),
        ([0, 0, 0], "all zero"),
        ([1, 2], "2 weights given for 3 files"),
        ([1, float("nan"), 1], "finite"),
        ({"a": 1, "b": 1, "c": 1, "zzz": 1}, "unknown files: 'zzz'"),
        ({"a": 1, "b": 1}, "no weights given for files: 'd/c.tfrecords'"),
        (["x", 1, 1], "must be numbers"),
    ],
)
def test_bad_weights_are_refused_clearly(weights, message):
    paths = ["d/a.tfrecords", "d/b.tfrecords", "d/c.tfrecords"]
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        normalize_weights(weights, paths)
