"""The in-memory form every detection format is parsed into, and validation problems.

Parsers (:mod:`~tilestream.detection.voc`, :mod:`~tilestream.detection.coco`,
:mod:`~tilestream.detection.csv_format`, :mod:`~tilestream.detection.yolo`)
produce an :class:`AnnotationSet`: one light :class:`ImageAnnotation` per image
(paths and numbers, never pixels) plus the :class:`Problem` s found while
parsing. The converter reads the pixels later, a few images at a time.

Examples
--------
>>> obj = ObjectAnnotation(10, 20, 30, 40, "cat")
>>> img = ImageAnnotation("a.jpg", "/data/a.jpg", source="a.xml", width=64, height=48,
...                       objects=[obj])
>>> img.source_id, len(img.objects)
('a.jpg', 1)
>>> print(Problem("box_outside", "a.xml", "box exceeds the image", image="a.jpg", object=0,
...               label="cat"))
a.xml: image a.jpg: object 0 (cat): box exceeds the image [box_outside]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PROBLEM_KINDS",
    "AnnotationSet",
    "ImageAnnotation",
    "ObjectAnnotation",
    "Problem",
    "SourceFormat",
]

SourceFormat = Literal["voc", "coco", "csv", "yolo"]

#: Every kind of validation problem, with what it means.
PROBLEM_KINDS: dict[str, str] = {
    "box_outside": "a box extends beyond the image",
    "degenerate_box": "a box has xmax <= xmin or ymax <= ymin",
    "bad_box": "a box coordinate is missing, not a number, or not finite",
    "empty_class": "an object has an empty class name",
    "unknown_class": "an object's class is not in the label map",
    "missing_image": "the image file does not exist",
    "unreadable_image": "the image file cannot be read or decoded",
    "size_mismatch": "the image size in the annotation differs from the real image",
    "duplicate_file": "two annotations name the same image file",
    "empty_annotation": "an annotation file is empty",
    "malformed_annotation": "an annotation file or entry cannot be parsed",
}


@dataclass(slots=True)
class ObjectAnnotation:
    """One object: a box in the annotation's coordinates, and its attributes.

    Coordinates are absolute pixels, or fractions of the image size when the
    owning :class:`ImageAnnotation` has ``normalized=True`` (YOLO).
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str
    difficult: bool = False
    truncated: bool = False
    view: str = ""
    is_crowd: bool = False
    area: float | None = None
    #: COCO ``segmentation`` (polygons or RLE), used for masks.
    segmentation: Any = None


@dataclass(slots=True)
class ImageAnnotation:
    """One image: where it is, what the annotation says about it, its objects.

    Parameters
    ----------
    filename
        The name the annotation gives (``image/filename``).
    image_path
        The image file to read (any path-like; stored as ``str``).
    source
        The annotation file this came from (named in problems).
    width, height
        The size the annotation states, or ``None`` when it states none.
    objects
        The objects, in annotation order.
    source_id
        ``image/source_id``; defaults to ``filename``.
    normalized
        Whether the boxes are fractions of the image size.
    """

    filename: str
    image_path: str
    source: str
    width: int | None = None
    height: int | None = None
    objects: list[ObjectAnnotation] = field(default_factory=list)
    source_id: str = ""
    normalized: bool = False

    def __post_init__(self) -> None:
        if not self.source_id:
            self.source_id = self.filename
        # a plain str: a Path per image costs memory that adds up at 100,000 images
        self.image_path = os.fspath(self.image_path)


@dataclass(frozen=True)
class Problem:
    """One validation problem, naming the file and, where there is one, the object.

    Parameters
    ----------
    kind
        One of :data:`PROBLEM_KINDS`.
    file
        The annotation (or image) file concerned.
    message
        What is wrong.
    image
        The image's file name, when the problem concerns one image.
    object
        Zero-based number of the object within its image's annotation.
    label
        The object's class name.
    """

    kind: str
    file: str
    message: str
    image: str | None = None
    object: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.image is not None and self.image != self.file:
            where.append(f"image {self.image}")
        if self.object is not None:
            where.append(f"object {self.object}" + (f" ({self.label})" if self.label else ""))
        return f"{': '.join(where)}: {self.message} [{self.kind}]"


@dataclass
class AnnotationSet:
    """A parsed detection data set: its images and the problems met while parsing.

    Parameters
    ----------
    format
        Which format it was read from (decides the format-specific keys).
    images
        One entry per image, in a stable order.
    problems
        Problems found while parsing (file-level ones and malformed entries).
    source
        The annotation file or folder, for messages and the summary.
    categories
        Class names the source declares (COCO categories, YOLO classes) in
        declaration order, with their own ids where the format has ids.
    """

    format: SourceFormat
    images: list[ImageAnnotation]
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    categories: list[tuple[int, str]] = field(default_factory=list)

    def class_names(self) -> set[str]:
        """Every non-empty class name used by an object."""
        return {o.label for img in self.images for o in img.objects if o.label}
