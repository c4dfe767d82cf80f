"""Splits of a conversion: parsing a split spec, assigning images, naming shard files.

Examples
--------
>>> fractions = parse_split("train=0.5,test=0.5")
>>> {k: len(v) for k, v in assign_splits(5, fractions, seed=1).items()}
{'train': 3, 'test': 2}
>>> shard_names("test", 1)
['test.tfrecord']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tilestream.errors import ConfigError

__all__ = ["assign_splits", "parse_split", "shard_names"]

_SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str | Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
    """Normalise a split spec to ``{name: fraction}``.

    ``"0.8,0.1,0.1"`` or ``[0.8, 0.1, 0.1]`` name the parts train, valid,
    test; ``"train=0.9,val=0.1"`` or a mapping names them explicitly. ``None``
    means everything in ``train``. Fractions are scaled to sum to 1.

    Examples
    --------
    >>> parse_split("0.8,0.1,0.1")
    {'train': 0.8, 'valid': 0.1, 'test': 0.1}
    >>> parse_split("train=3,eval=1")
    {'train': 0.75, 'eval': 0.25}
    """
    if split is None:
        return {"train": 1.0}
    parts: dict[str, float] = {}
    try:
        if isinstance(split, str):
            items = [s.strip() for s in split.split(",") if s.strip()]
            if all("=" in s for s in items):
                for s in items:
                    name, value = s.split("=", 1)
                    parts[name.strip()] = float(value)
            else:
                values = [float(s) for s in items]
                if len(values) > len(_SPLIT_NAMES):
                    raise ValueError("more than three unnamed parts")
                parts = dict(zip(_SPLIT_NAMES, values, strict=False))
        elif isinstance(split, Mapping):
            parts = {str(k): float(v) for k, v in split.items()}
        else:
            values = [float(v) for v in split]
            if len(values) > len(_SPLIT_NAMES):
                raise ValueError("more than three unnamed parts")
            parts = dict(zip(_SPLIT_NAMES, values, strict=False))
    except ValueError as exc:
        raise ConfigError(f"invalid split {split!r}: {exc}") from exc
    total = sum(parts.values())
    bad_name = [n for n in parts if not n or "/" in n or n.startswith(".")]
    if not parts or total <= 0 or any(v < 0 or not math.isfinite(v) for v in parts.values()):
        raise ConfigError(f"invalid split {split!r}: needs non-negative fractions with a sum > 0")
    if bad_name:
        raise ConfigError(f"invalid split names {bad_name}")
    return {k: v / total for k, v in parts.items()}


def assign_splits(n: int, fractions: Mapping[str, float], *, seed: int) -> dict[str, list[int]]:
    """Deterministically assign ``n`` items to splits (shuffled by ``seed``).

    Counts follow the fractions exactly up to rounding (largest remainders).

    Examples
    --------
    >>> parts = assign_splits(10, {"train": 0.8, "valid": 0.2}, seed=0)
    >>> {k: len(v) for k, v in parts.items()}, sorted(parts["train"] + parts["valid"])
    ({'train': 8, 'valid': 2}, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> assign_splits(10, {"train": 0.8, "valid": 0.2}, seed=0) == parts
    True
    """
    order = np.random.default_rng(seed).permutation(n).tolist()
    exact = {k: f * n for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(exact).index(k)))[:left]:
        counts[k] += 1
    out: dict[str, list[int]] = {}
    start = 0
    for k in fractions:
        out[k] = order[start : start + counts[k]]
        start += counts[k]
    return out


def shard_names(split: str, shards: int, *, suffix: str = ".tfrecord") -> list[str]:
    """File names of one split: ``train.tfrecord`` or ``train.tfrecord-00000-of-00004``...

    Examples
    --------
    >>> shard_names("train", 2)
    ['train.tfrecord-00000-of-00002', 'train.tfrecord-00001-of-00002']
    """
    if shards == 1:
        return [f"{split}{suffix}"]
    return [f"{split}{suffix}-{i:05d}-of-{shards:05d}" for i in range(shards)]
