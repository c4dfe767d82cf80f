"""Weighted choice between files in O(log n) per draw, with removal.

:class:`WeightedSampler` keeps the weights in a Fenwick (binary indexed) tree of
integers: a draw is one random number and a descent of the tree, removing an
exhausted file is one update, both ``O(log n)`` whatever the number of files.
Weights are quantised to integers (2**48 units for the whole) so the sums are
exact and no floating-point drift can ever select a removed file.

Examples
--------
>>> import numpy as np
>>> s = WeightedSampler([1.0, 0.0, 3.0], np.random.default_rng(0))
>>> sorted({s.sample() for _ in range(100)})
[0, 2]
>>> s.remove(2)
>>> {s.sample() for _ in range(10)}
{0}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilestream.errors import ConfigError

__all__ = ["WeightSpec", "WeightedSampler", "match_files", "normalize_weights"]

#: Weights given per file: a sequence in file order, or a mapping from file to weight.
WeightSpec = Sequence[float] | Mapping[str | os.PathLike[str], float] | np.ndarray

_SCALE = 1 << 48
_BATCH = 256


def match_files(
    values: Mapping[str | os.PathLike[str], Any],
    paths: Sequence[str],
    *,
    what: str,
    require_all: bool,
) -> list[Any]:
    """Map ``{file: value}`` onto ``paths`` by path, absolute path, file name or stem.

    Returns a list in the order of ``paths``, None where no value was given.

    Raises
    ------
    ConfigError
        A key names no file or several files, or (``require_all``) a file has no value.

    Examples
    --------
    >>> match_files({"b": 2}, ["x/a.tfrecords", "x/b.tfrecords"], what="clip", require_all=False)
    [None, 2]
    """
    lookup: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        path = Path(p)
        keys = {os.fspath(p), os.path.abspath(p), path.name, path.stem}
        for alias in keys:
            lookup.setdefault(alias, []).append(i)
    out: list[Any] = [None] * len(paths)
    unknown = []
    for key, value in values.items():
        k: str = os.fspath(key)
        hits = lookup.get(k) or lookup.get(os.path.abspath(k))
        if not hits:
            unknown.append(k)
            continue
        if len(set(hits)) > 1:
            raise ConfigError(f"{what} key {k!r} matches several files: {[paths[i] for i in hits]}")
        out[hits[0]] = value
    if unknown:
        raise ConfigError(f"{what} given for unknown files: {', '.join(map(repr, unknown))}")
    if require_all:
        missing = [paths[i] for i, v in enumerate(out) if v is None]
        if missing:
            raise ConfigError(f"no {what} given for files: {', '.join(map(repr, missing))}")
    return out


def normalize_weights(weights: WeightSpec | None, paths: Sequence[str]) -> np.ndarray:
    """Validate per-file weights and scale them to sum to 1.

    Parameters
    ----------
    weights
        None (uniform), a sequence in the order of ``paths``, or a mapping from
        file (path, file name or stem) to weight. Weights need not sum to 1.
    paths
        The files.

    Returns
    -------
    numpy.ndarray
        float64 weights summing to 1.

    Raises
    ------
    ConfigError
        Wrong length, unknown or missing files, negative, non-finite or
        all-zero weights.

    Examples
    --------
    >>> normalize_weights([1, 3], ["a.tfrecords", "b.tfrecords"]).tolist()
    [0.25, 0.75]
    >>> normalize_weights({"b": 1, "a.tfrecords": 1}, ["x/a.tfrecords", "x/b.tfrecords"]).tolist()
    [0.5, 0.5]
    >>> normalize_weights([0, 0], ["a", "b"])
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: weights are all zero: nothing can be sampled
    """
    n = len(paths)
    if n == 0:
        raise ConfigError("no files to weight")
    if weights is None:
        return np.full(n, 1.0 / n)
    if isinstance(weights, Mapping):
        matched = match_files(weights, paths, what="weights", require_all=True)
        try:
            arr = np.asarray(matched, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"weights must be numbers, got {weights!r}") from exc
    else:
        try:
            arr = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"weights must be numbers, got {weights!r}") from exc
        if arr.shape != (n,):
            raise ConfigError(f"{arr.size} weights given for {n} files")
    if not np.all(np.isfinite(arr)):
        bad = [paths[int(i)] for i in np.flatnonzero(~np.isfinite(arr))]
        raise ConfigError(f"weights must be finite; not for {bad}")
    if np.any(arr < 0):
        bad = [f"{paths[int(i)]}={arr[i]}" for i in np.flatnonzero(arr < 0)]
        raise ConfigError(f"weights must not be negative: {', '.join(bad)}")
    total = float(arr.sum())
    if total <= 0:
        raise ConfigError("weights are all zero: nothing can be sampled")
    return arr / total


class WeightedSampler:
    """Draw indices in proportion to weights; remove indices as they run out.

    Parameters
    ----------
    weights
        Non-negative weights, at least one positive (any scale).
    rng
        The random generator the draws come from.

    Notes
    -----
    A draw and a removal each cost ``O(log n)``. Removing an index renormalises
    the remaining weights implicitly.
    """

    def __init__(self, weights: Sequence[float] | np.ndarray, rng: np.random.Generator) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ConfigError("weights must be a 1-D array of finite, non-negative numbers")
        total = float(w.sum())
        self._n = len(w)
        self._rng = rng
        if total > 0:
            units = np.where(w > 0, np.maximum(1, np.rint(w / total * _SCALE)), 0)
        else:
            units = np.zeros(self._n)
        self._w: list[int] = [int(u) for u in units]
        tree = [0] * (self._n + 1)
        for i, u in enumerate(self._w, start=1):
            tree[i] += u
            parent = i + (i & -i)
            if parent <= self._n:
                tree[parent] += tree[i]
        self._tree = tree
        self._total = sum(self._w)
        self._active = sum(1 for u in self._w if u > 0)
        self._top = 1 << (self._n.bit_length() - 1) if self._n else 0
        self._uniform: list[float] = []

    def __len__(self) -> int:
        """Number of indices that can still be drawn."""
        return self._active

    def weight(self, index: int) -> float:
        """The current share of ``index`` (0 once removed)."""
        return self._w[index] / self._total if self._total else 0.0

    def _add(self, index: int, delta: int) -> None:
        i = index + 1
        while i <= self._n:
            self._tree[i] += delta
            i += i & -i
        self._total += delta

    def remove(self, index: int) -> None:
        """Never draw ``index`` again (e.g. its file is exhausted)."""
        units = self._w[index]
        if units:
            self._w[index] = 0
            self._active -= 1
            self._add(index, -units)

    def sample(self) -> int:
        """Draw one index.

        Raises
        ------
        IndexError
            When every index has been removed.
        """
        if self._total <= 0:
            raise IndexError("every index has been removed")
        if not self._uniform:
            self._uniform = self._rng.random(_BATCH).tolist()
        target = math.floor(self._uniform.pop() * self._total)
        pos = 0
        step = self._top
        tree = self._tree
        n = self._n
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= target:
                pos = nxt
                target -= tree[nxt]
            step >>= 1
        return pos
