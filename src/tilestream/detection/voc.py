"""PASCAL VOC XML annotations (one XML per image, as written by VOC and LabelImg).

Layouts found: a VOC year folder (``Annotations/`` + ``JPEGImages/``, optional
``ImageSets/Main/<set>.txt``), a folder with ``annotations/`` + ``images/``,
or a flat folder with the XML files beside the images.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.xml").write_text(
...     "<annotation><filename>a.jpg</filename><size><width>4</width><height>3</height>"
...     "</size><object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin>"
...     "<ymin>0</ymin><xmax>3</xmax><ymax>2</ymax></bndbox></object></annotation>")
>>> s = read_voc(d)
>>> img = s.images[0]
>>> img.filename, img.width, img.objects[0].label, img.objects[0].difficult
('a.jpg', 4, 'cat', True)
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from tilestream.detection._parse import IMAGE_EXTS, positive_int_text
from tilestream.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
)
from tilestream.errors import AnnotationError

__all__ = ["parse_voc_xml", "read_voc"]


def _text(node: ET.Element | None, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _flag(node: ET.Element, tag: str) -> bool:
    value = _text(node, tag)
    if value is None or value == "":
        return False
    try:
        return float(value) != 0
    except ValueError:
        return value.lower() in {"true", "yes"}


def parse_voc_xml(
    path: str | os.PathLike[str], images_dir: str | os.PathLike[str]
) -> tuple[ImageAnnotation | None, list[Problem]]:
    """Parse one VOC XML file.

    Returns the image's annotation (``None`` when the file is unusable) and the
    problems found: an empty or malformed file, objects with no class or with
    missing or non-numeric box coordinates.
    """
    spath = os.fspath(path)
    problems: list[Problem] = []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, [Problem("malformed_annotation", spath, f"cannot read: {exc}")]
    if not data.strip():
        return None, [Problem("empty_annotation", spath, "the annotation file is empty")]
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return None, [Problem("malformed_annotation", spath, f"malformed XML: {exc}")]
    if root.tag != "annotation":
        msg = f"root element is <{root.tag}>, not <annotation>"
        return None, [Problem("malformed_annotation", spath, msg)]
    filename = _text(root, "filename") or ""
    if not filename:
        filename = Path(spath).stem
        candidates = list(Path(images_dir).glob(f"{filename}.*"))
        candidates = [p for p in candidates if p.suffix.lower() in IMAGE_EXTS]
        if candidates:
            filename = candidates[0].name
    image_path = Path(images_dir) / filename
    if not image_path.exists() and not Path(filename).suffix:
        for ext in IMAGE_EXTS:
            if (Path(images_dir) / (filename + ext)).exists():
                image_path = Path(images_dir) / (filename + ext)
                break
    size = root.find("size")
    width = positive_int_text(_text(size, "width"))
    height = positive_int_text(_text(size, "height"))
    objects: list[ObjectAnnotation] = []
    for number, obj in enumerate(root.iter("object")):
        name = _text(obj, "name") or ""
        box = obj.find("bndbox")
        coords: list[float] = []
        bad = None
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = _text(box, tag)
            try:
                if value is None:
                    raise ValueError
                coords.append(float(value))
            except ValueError:
                bad = f"<bndbox> {tag} is {'missing' if value is None else repr(value)}"
                break
        if bad is not None:
            problems.append(
                Problem("bad_box", spath, bad, image=filename, object=number, label=name or None)
            )
            coords = [math.nan] * 4
        objects.append(
            ObjectAnnotation(
                coords[0],
                coords[1],
                coords[2],
                coords[3],
                name,
                difficult=_flag(obj, "difficult"),
                truncated=_flag(obj, "truncated"),
                view=_text(obj, "pose") or "",
            )
        )
    image = ImageAnnotation(
        filename, os.fspath(image_path), source=spath, width=width, height=height, objects=objects
    )
    return image, problems


def _find_dirs(data_dir: Path) -> tuple[Path, Path]:
    # a VOCdevkit folder holding one year folder (VOC2007/) is entered
    years = [p for p in data_dir.iterdir() if p.is_dir() and (p / "Annotations").is_dir()]
    if not (data_dir / "Annotations").is_dir() and len(years) == 1:
        data_dir = years[0]
    for ann, img in (("Annotations", "JPEGImages"), ("annotations", "images")):
        if (data_dir / ann).is_dir():
            images = data_dir / img
            return data_dir / ann, images if images.is_dir() else data_dir / ann
    return data_dir, data_dir


def read_voc(
    data_dir: str | os.PathLike[str],
    *,
    annotations_dir: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    image_set: str | None = None,
) -> AnnotationSet:
    """Read a PASCAL VOC folder.

    Parameters
    ----------
    data_dir
        A VOC year folder (``Annotations/``, ``JPEGImages/``), a folder with
        ``annotations/`` and ``images/``, or a flat folder of XML and images.
    annotations_dir, images_dir
        Override where the XML files and the images are.
    image_set
        Read only the ids listed in ``ImageSets/Main/<image_set>.txt``
        (e.g. ``"trainval"``), as VOC's own tools do.

    Raises
    ------
    AnnotationError
        When the folder does not exist, the image set file is missing, or
        there are no XML files.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise AnnotationError("VOC data folder not found", path=root)
    ann_dir, img_dir = _find_dirs(root)
    root = ann_dir.parent if ann_dir != root else root
    ann_dir = Path(annotations_dir) if annotations_dir is not None else ann_dir
    img_dir = Path(images_dir) if images_dir is not None else img_dir
    if image_set is not None:
        list_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
        try:
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise AnnotationError("cannot read the image set list", path=list_file) from exc
        xml_files = [ann_dir / f"{i}.xml" for i in ids]
    else:
        xml_files = sorted(p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml")
    if not xml_files:
        raise AnnotationError("no VOC .xml annotation files found", path=ann_dir)
    images: list[ImageAnnotation] = []
    problems: list[Problem] = []
    for xml in xml_files:
        if not xml.exists():
            problems.append(Problem("malformed_annotation", str(xml), "annotation file not found"))
            continue
        image, found = parse_voc_xml(xml, img_dir)
        problems.extend(found)
        if image is not None:
            images.append(image)
    return AnnotationSet("voc", images, problems, source=os.fspath(root))
