"""YOLO / Darknet annotations: one ``.txt`` per image, ``class cx cy w h`` normalised.

Layouts found: ``images/`` + ``labels/`` (YOLOv5 and later; a label file's path
is its image's path with ``images`` replaced by ``labels`` and the extension by
``.txt``), or the Darknet form with each ``.txt`` beside its image. An image
with no label file, or an empty one, has no objects (a negative example).
Class indices are 0-based lines of ``classes.txt`` (or ``obj.names``).

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.jpg").write_bytes(b"")
>>> _ = (d / "a.txt").write_text("1 0.5 0.5 0.2 0.4\\n")
>>> s = read_yolo(d, classes=["cat", "dog"])
>>> o = s.images[0].objects[0]
>>> o.label, round(o.xmin, 3), round(o.ymax, 3), s.images[0].normalized
('dog', 0.4, 0.7, True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from tilestream.detection._parse import IMAGE_EXTS, read_utf8
from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["read_yolo", "read_yolo_classes"]


def read_yolo_classes(path: str | os.PathLike[str]) -> list[str]:
    """Read a ``classes.txt`` / ``obj.names`` file: one class name per line."""
    text = read_utf8(path, missing="classes file not found", unreadable="cannot read classes file")
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise AnnotationError("the classes file is empty", path=path)
    return names


def _label_path(image: Path, root: Path) -> Path:
    rel = image.relative_to(root)
    parts = list(rel.parts)
    if "images" in parts[:-1]:
        i = len(parts) - 2 - parts[-2::-1].index("images")
        parts[i] = "labels"
        candidate = (root.joinpath(*parts)).with_suffix(".txt")
        if candidate.exists():
            return candidate
    return image.with_suffix(".txt")


def _parse_label_file(
    label: Path, image: ImageAnnotation, classes: Sequence[str], problems: list[Problem]
) -> None:
    spath = os.fspath(label)
    try:
        text = label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(
            Problem("malformed_annotation", spath, f"cannot read: {exc}", image=image.filename)
        )
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        number = len(image.objects)
        where = f"{spath}:{line_no}"
        if len(fields) < 5:
            problems.append(
                Problem(
                    "malformed_annotation",
                    where,
                    f"expected 'class cx cy w h', found {line.strip()!r}",
                    image=image.filename,
                )
            )
            continue
        if len(fields) > 5 and len(fields) % 2 == 0:  # not a polygon (YOLOv8 seg)
            problems.append(
                Problem(
                    "malformed_annotation",
                    where,
                    f"expected 5 fields (or a polygon), found {len(fields)}",
                    image=image.filename,
                )
            )
            continue
        try:
            cls = int(fields[0])
        except ValueError:
            cls = -1
        if not 0 <= cls < len(classes) or not classes[cls]:
            problems.append(
                Problem(
                    "unknown_class" if cls >= 0 else "malformed_annotation",
                    where,
                    f"class index {fields[0]!r} is not a line of the classes file "
                    f"({len(classes)} classes)",
                    image=image.filename,
                )
            )
            continue
        name = classes[cls]
        try:
            if len(fields) == 5:
                cx, cy, w, h = (float(v) for v in fields[1:5])
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            else:  # polygon: its bounding box
                xy = [float(v) for v in fields[1:]]
                box = (min(xy[0::2]), min(xy[1::2]), max(xy[0::2]), max(xy[1::2]))
        except ValueError:
            problems.append(
                Problem(
                    "bad_box",
                    where,
                    f"coordinates {fields[1:]} are not all numbers",
                    image=image.filename,
                    object=number,
                    label=name,
                )
            )
            box = (math.nan,) * 4
        image.objects.append(ObjectAnnotation(*box, name))


def read_yolo(
    data_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> AnnotationSet:
    """Read a YOLO / Darknet folder.

    Parameters
    ----------
    data_dir
        The folder; images are found recursively (under ``images/`` when it
        exists).
    classes
        The class names in index order, or a ``classes.txt`` path; by default
        ``classes.txt`` or ``obj.names`` in ``data_dir``.

    Raises
    ------
    AnnotationError
        When the folder or the classes file is missing, or it has no images.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise AnnotationError("YOLO data folder not found", path=root)
    if classes is None:
        for name in ("classes.txt", "obj.names", "classes.names"):
            if (root / name).exists():
                classes = root / name
                break
        else:
            raise AnnotationError("no classes.txt or obj.names; pass classes=", path=root)
    names = read_yolo_classes(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)
    search = root / "images" if (root / "images").is_dir() else root
    image_files = sorted(
        p for p in search.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
    )
    if not image_files:
        raise AnnotationError("no images found", path=search)
    images: list[ImageAnnotation] = []
    problems: list[Problem] = []
    for path in image_files:
        label = _label_path(path, root)
        rel = path.relative_to(search).as_posix()
        image = ImageAnnotation(rel, os.fspath(path), source=os.fspath(label), normalized=True)
        if label.exists():
            _parse_label_file(label, image, names, problems)
        images.append(image)
    return AnnotationSet(
        "yolo",
        images,
        problems,
        source=os.fspath(root),
        categories=list(enumerate(names)),
    )
