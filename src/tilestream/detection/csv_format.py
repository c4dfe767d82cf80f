"""The "TF Object Detection CSV": one row per box, absolute pixel coordinates.

The header is ``filename,width,height,class,xmin,ymin,xmax,ymax`` (as written
by the tutorial ``xml_to_csv.py``); columns may come in any order and extra
columns are ignored. A row whose class and coordinates are all empty declares
an image with no objects (a negative example).

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "l.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\\n"
...                              "a.jpg,4,3,cat,0,0,2,2\\na.jpg,4,3,dog,1,1,4,3\\n")
>>> s = read_csv(d / "l.csv", images_dir=d)
>>> [o.label for o in s.images[0].objects], s.images[0].width
(['cat', 'dog'], 4)
"""

from __future__ import annotations

import csv
import math
import operator
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tilestream.detection._parse import positive_int_text
from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["CSV_COLUMNS", "read_csv"]

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def read_csv(
    csv_path: str | os.PathLike[str], *, images_dir: str | os.PathLike[str] | None = None
) -> AnnotationSet:
    """Read a TF Object Detection CSV.

    Parameters
    ----------
    csv_path
        The CSV file.
    images_dir
        Where the images are (default: the CSV's folder).

    Raises
    ------
    AnnotationError
        When the file is missing, empty, or lacks a required column.
    """
    path = Path(csv_path)
    img_dir = os.fspath(images_dir if images_dir is not None else path.parent)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _read_rows(csv.reader(f), path, img_dir)
    except FileNotFoundError as exc:
        raise AnnotationError("CSV file not found", path=path) from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"cannot read CSV: {exc}", path=path) from exc


def _read_rows(reader: Iterator[list[str]], path: Path, img_dir: str) -> AnnotationSet:
    """One image per file name, one object per row (none for a negative's row)."""
    spath = os.fspath(path)
    pick, ncols = _columns(next(reader, None), path)
    images: dict[str, ImageAnnotation] = {}
    sizes: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    nan4 = [math.nan] * 4
    for line_no, row in enumerate(reader, start=2):
        values = [cell.strip() for cell in pick(row)] if len(row) >= ncols else None
        if values is None or not values[0]:  # rare: a blank, short or nameless row
            problems += _odd_row(row, values is None, ncols, f"{spath}:{line_no}")
            continue
        filename, width, height, label = values[0], values[1], values[2], values[3]
        image = images.get(filename)
        if image is None:
            w, h = positive_int_text(width), positive_int_text(height)
            image_path = os.path.join(img_dir, filename)
            image = ImageAnnotation(filename, image_path, source=spath, width=w, height=h)
            images[filename] = image
            sizes[filename] = (width, height)
            if w is None or h is None:
                problems.append(_bad_size(filename, width, height, f"{spath}:{line_no}"))
        elif sizes[filename] != (width, height):
            first = sizes[filename]
            problems.append(
                Problem(
                    "size_mismatch",
                    f"{spath}:{line_no}",
                    f"size {width}x{height} differs from {first[0]}x{first[1]} on an earlier row",
                    image=filename,
                )
            )
        coords_text = values[4:]
        if not label and not any(coords_text):
            continue  # a negative example
        try:
            coords = [float(c) for c in coords_text]
        except ValueError:
            msg = f"coordinates {coords_text} are not all numbers"
            number, where = len(image.objects), f"{spath}:{line_no}"
            problems.append(
                Problem("bad_box", where, msg, image=filename, object=number, label=label or None)
            )
            coords = nan4
        image.objects.append(
            ObjectAnnotation(coords[0], coords[1], coords[2], coords[3], sys.intern(label))
        )
    return AnnotationSet("csv", list(images.values()), problems, source=spath)


def _columns(
    header_row: list[str] | None, path: Path
) -> tuple[Callable[[list[str]], tuple[str, ...]], int]:
    """A getter of the :data:`CSV_COLUMNS` of a row, in that order, and the header's length."""
    if header_row is None or not any(h.strip() for h in header_row):
        raise AnnotationError("the CSV file is empty", path=path)
    header = [h.strip().lower() for h in header_row]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(
            f"CSV header lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}",
            path=path,
        )
    return operator.itemgetter(*[header.index(name) for name in CSV_COLUMNS]), len(header)


def _odd_row(row: list[str], short: bool, ncols: int, where: str) -> list[Problem]:
    """The problem of a row with too few fields or no file name; none for a blank row."""
    if not row or all(not cell.strip() for cell in row):
        return []
    if short:
        msg = f"row has {len(row)} fields, the header has {ncols}"
        return [Problem("malformed_annotation", where, msg)]
    return [Problem("malformed_annotation", where, "empty filename")]


def _bad_size(filename: str, width: str, height: str, where: str) -> Problem:
    msg = f"width/height {width!r}/{height!r} are not positive integers"
    return Problem("malformed_annotation", where, msg, image=filename)
