"""The sampling weights of a dataset's TFRecords by balancing strategy (Slideflow's ``balance``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from tilestream.errors import ConfigError

__all__ = ["BalanceStrategy", "tfrecord_weights"]

BalanceStrategy = Literal["tile", "slide", "patient", "category"]


def tfrecord_weights(
    strategy: BalanceStrategy,
    tiles: Mapping[str, float],
    slide_of: Mapping[str, str],
    *,
    patients: Mapping[str, str] | None = None,
    categories: Mapping[str, Any] | None = None,
) -> dict[str, float] | None:
    """``{tfrecord: weight}`` summing to 1 (``None`` when every weight is 0).

    ``"tile"``: each tile equally likely; ``"slide"``: each slide;
    ``"patient"``: each patient (``patients``: slide -> patient, shared
    among its slides); ``"category"``: each category (``categories``: slide ->
    category) equally, tiles equally within it.

    Examples
    --------
    >>> tiles, slide_of = {"a.tfr": 30.0, "b.tfr": 10.0}, {"a.tfr": "a", "b.tfr": "b"}
    >>> tfrecord_weights("tile", tiles, slide_of), tfrecord_weights("slide", tiles, slide_of)
    ({'a.tfr': 0.75, 'b.tfr': 0.25}, {'a.tfr': 0.5, 'b.tfr': 0.5})
    >>> tfrecord_weights("patient", tiles, slide_of, patients={"a": "p", "b": "p"})
    {'a.tfr': 0.5, 'b.tfr': 0.5}
    """
    if strategy == "tile":
        raw = dict(tiles)
    elif strategy == "slide":
        raw = dict.fromkeys(tiles, 1.0)
    elif strategy == "patient" and patients is not None:
        pat = {p: patients[slide_of[p]] for p in tiles}
        per: dict[str, int] = {}
        for patient in pat.values():
            per[patient] = per.get(patient, 0) + 1
        raw = {p: 1.0 / per[pat[p]] for p in tiles}
    elif strategy == "category" and categories is not None:
        cat = {p: categories[slide_of[p]] for p in tiles}
        cat_tiles: dict[Any, float] = {}
        for p, c in cat.items():
            cat_tiles[c] = cat_tiles.get(c, 0.0) + tiles[p]
        raw = {p: tiles[p] / cat_tiles[cat[p]] if cat_tiles[cat[p]] else 0.0 for p in tiles}
    elif strategy in ("patient", "category"):
        raise ConfigError(f"balance strategy {strategy!r} needs the {strategy} of each slide")
    else:
        raise ConfigError(f"unknown balance strategy {strategy!r}")
    total = sum(raw.values())
    return {p: w / total for p, w in raw.items()} if total else None
