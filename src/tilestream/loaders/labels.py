"""Labels per slide, slide names per TFRecord, and balancing weights.

Labels map a *slide name* (the ``slide`` feature of the records, not the file
name) to a label. They come as a mapping, or as an annotations CSV with a
``slide`` column and a column of labels (``label_column``). Text labels become
category indices in sorted order (their names are returned); numbers stay
numbers.

Examples
--------
>>> load_labels({"s1": 0, "s2": 1})
({'s1': 0, 's2': 1}, None)
>>> balance_weights("category", [10, 30, 20], ["a", "a", "b"])
[0.125, 0.375, 0.5]
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tilestream.errors import AnnotationError, ConfigError

__all__ = ["Balance", "balance_weights", "check_labels", "load_labels", "slide_name_of"]

Balance = Literal["tile", "slide", "category"]


def _convert(values: list[str]) -> tuple[list[Any], list[str] | None]:
    try:
        as_int = [int(v) for v in values]
        return as_int, None
    except ValueError:
        pass
    try:
        as_float = [float(v) for v in values]
        if all(math.isfinite(v) for v in as_float):
            return as_float, None
    except ValueError:
        pass
    names = sorted(set(values))
    lookup = {n: i for i, n in enumerate(names)}
    return [lookup[v] for v in values], names


def load_labels(
    labels: Mapping[str, Any] | str | os.PathLike[str] | None,
    label_column: str | None = None,
    *,
    slide_column: str = "slide",
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """Labels by slide name, and the category names when labels were text.

    Parameters
    ----------
    labels
        ``{slide: label}``, a CSV file path, or None.
    label_column
        With a CSV: the column holding the labels (required).
    slide_column
        With a CSV: the column holding slide names.

    Returns
    -------
    (dict or None, list of str or None)

    Raises
    ------
    AnnotationError
        Unreadable CSV, missing columns, a slide listed twice with different
        labels, or an empty label.
    """
    if labels is None:
        return None, None
    if isinstance(labels, Mapping):
        return {str(k): v for k, v in labels.items()}, None
    path = Path(labels)
    if label_column is None:
        raise ConfigError("labels given as a CSV file need label_column= (the column to use)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise AnnotationError("annotations file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"cannot read annotations: {exc}", path=path) from exc
    if not rows:
        raise AnnotationError("annotations file has no rows", path=path)
    for column in (slide_column, label_column):
        if column not in rows[0]:
            raise AnnotationError(
                f"no column {column!r} (columns: {list(rows[0])})",
                path=path,
            )
    slides: list[str] = []
    raw: list[str] = []
    for n, row in enumerate(rows, start=2):
        slide = (row[slide_column] or "").strip()
        value = (row[label_column] or "").strip()
        if not slide:
            continue
        if not value:
            raise AnnotationError(
                f"line {n}: slide {slide!r} has an empty {label_column!r}", path=path
            )
        slides.append(slide)
        raw.append(value)
    converted, names = _convert(raw)
    out: dict[str, Any] = {}
    for slide, value in zip(slides, converted, strict=True):
        if slide in out and out[slide] != value:
            raise AnnotationError(f"slide {slide!r} is listed with two labels", path=path)
        out[slide] = value
    return out, names


def slide_name_of(record_slide: Any, path: str) -> str:
    """The slide name of a record: its ``slide`` feature, else the file's stem."""
    if isinstance(record_slide, bytes):
        return record_slide.decode("utf-8", "replace")
    if isinstance(record_slide, str):
        return record_slide
    name = Path(path).name
    for suffix in (".tfrecords", ".tfrecord"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def check_labels(labels: Mapping[str, Any], slides: Sequence[str], paths: Sequence[str]) -> None:
    """Every slide has a label, or an :class:`~tilestream.errors.AnnotationError` naming them.

    Examples
    --------
    >>> check_labels({"a": 1}, ["a", "b"], ["a.tfrecords", "b.tfrecords"])
    Traceback (most recent call last):
    ...
    tilestream.errors.AnnotationError: no label for slide 'b' (b.tfrecords)
    """
    missing = [(s, p) for s, p in zip(slides, paths, strict=True) if s not in labels]
    if missing:
        shown = ", ".join(f"slide {s!r} ({p})" for s, p in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise AnnotationError(f"no label for {shown}{more}")


def balance_weights(
    balance: Balance,
    lengths: Sequence[int],
    categories: Sequence[Any] | None = None,
) -> list[float]:
    """Per-file sampling weights for Slideflow's balancing modes.

    Parameters
    ----------
    balance
        ``"tile"``: every tile equally likely (weight ∝ tiles in the file);
        ``"slide"``: every slide (file) equally likely;
        ``"category"``: every category equally likely, tiles equally likely within one.
    lengths
        Records per file.
    categories
        The label of each file (needed for ``"category"``).

    Returns
    -------
    list of float
        Weights summing to 1.

    Examples
    --------
    >>> balance_weights("tile", [1, 3])
    [0.25, 0.75]
    >>> balance_weights("slide", [1, 3])
    [0.5, 0.5]
    """
    n = len(lengths)
    if n == 0:
        raise ConfigError("no files to balance")
    total = float(sum(lengths))
    if balance == "tile":
        return [length / total for length in lengths]
    if balance == "slide":
        return [1.0 / n] * n
    if balance == "category":
        if categories is None:
            raise ConfigError("balance='category' needs labels")
        cats = [c if not isinstance(c, list) else tuple(c) for c in categories]
        per_cat: dict[Any, int] = {}
        for c, length in zip(cats, lengths, strict=True):
            per_cat[c] = per_cat.get(c, 0) + length
        k = len(per_cat)
        return [length / per_cat[c] / k for c, length in zip(cats, lengths, strict=True)]
    raise ConfigError(f"balance must be 'tile', 'slide' or 'category', got {balance!r}")
