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
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["CSV_COLUMNS", "read_csv"]

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def _size(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0 or number != int(number):
        return None
    return int(number)


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
    spath = os.fspath(path)
    header_row = next(reader, None)
    if header_row is None or not any(h.strip() for h in header_row):
        raise AnnotationError("the CSV file is empty", path=path)
    header = [h.strip().lower() for h in header_row]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(
            f"CSV header lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}",
            path=path,
        )
    col = {name: header.index(name) for name in CSV_COLUMNS}
    images: dict[str, ImageAnnotation] = {}
    sizes: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{spath}:{line_no}"
        if len(row) < len(header):
            problems.append(
                Problem(
                    "malformed_annotation",
                    where,
                    f"row has {len(row)} fields, the header has {len(header)}",
                )
            )
            continue
        value = {name: row[i].strip() for name, i in col.items()}
        filename = value["filename"]
        if not filename:
            problems.append(Problem("malformed_annotation", where, "empty filename"))
            continue
        image = images.get(filename)
        if image is None:
            image = ImageAnnotation(
                filename,
                os.path.join(img_dir, filename),
                source=spath,
                width=_size(value["width"]),
                height=_size(value["height"]),
            )
            images[filename] = image
            sizes[filename] = (value["width"], value["height"])
            if image.width is None or image.height is None:
                problems.append(
                    Problem(
                        "malformed_annotation",
                        where,
                        f"width/height {value['width']!r}/{value['height']!r} are not positive "
                        "integers",
                        image=filename,
                    )
                )
        elif sizes[filename] != (value["width"], value["height"]):
            problems.append(
                Problem(
                    "size_mismatch",
                    where,
                    f"size {value['width']}x{value['height']} differs from "
                    f"{sizes[filename][0]}x{sizes[filename][1]} on an earlier row",
                    image=filename,
                )
            )
        coords_text = [value[k] for k in ("xmin", "ymin", "xmax", "ymax")]
        if not value["class"] and not any(coords_text):
            continue  # a negative example
        number = len(image.objects)
        try:
            coords = [float(c) for c in coords_text]
        except ValueError:
            problems.append(
                Problem(
                    "bad_box",
                    where,
                    f"coordinates {coords_text} are not all numbers",
                    image=filename,
                    object=number,
                    label=value["class"] or None,
                )
            )
            coords = [math.nan] * 4
        image.objects.append(
            ObjectAnnotation(coords[0], coords[1], coords[2], coords[3], sys.intern(value["class"]))
        )
    return AnnotationSet("csv", list(images.values()), problems, source=spath)
