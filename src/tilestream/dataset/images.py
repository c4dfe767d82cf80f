"""Loose tile images to and from TFRecords: Slideflow's ``write_tfrecords_*`` and ``extract_tiles``.

Part of Slideflow's ``sf.io`` utilities (see :mod:`tilestream.dataset.io`, which
re-exports every name here and documents the differences from Slideflow).
Slideflow's ``extract_tiles`` (a TFRecord's tiles to image files) is
:func:`tfrecord_to_images` here; ``tilestream.dataset.io.extract_tiles`` keeps
Slideflow's name for it. Slides to TFRecords is :func:`tilestream.extract.extract_tiles`.

Examples
--------
>>> import tempfile, pathlib
>>> from PIL import Image
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "tiles").mkdir()
>>> for x in (0, 256):
...     Image.new("RGB", (8, 8), (x // 2, 0, 0)).save(d / "tiles" / f"s1_{x}-512.png")
>>> write_tfrecords_single(d / "tiles", d / "out", "s1.tfrecords", "s1", shuffle=False)
2
>>> tfrecord_to_images(d / "out" / "s1.tfrecords", d / "loose")
2
>>> sorted(p.name for p in (d / "loose" / "s1").iterdir())
['s1_0-512.png', 's1_256-512.png']
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilestream.dataset.outputs import OutputSink
from tilestream.errors import ConfigError, UnsupportedRecordError
from tilestream.storage import is_url
from tilestream.tfrecord import (
    TFRecordWriter,
    detect_image_format,
    iter_records,
    parse_example,
    serialized_record,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "parse_location",
    "tfrecord_to_images",
    "write_tfrecords_merge",
    "write_tfrecords_multi",
    "write_tfrecords_single",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: File extensions converted to TFRecords (Slideflow's list).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
_EXT = {"jpeg": "jpg", "png": "png"}
_LOCATION = re.compile(r"_(\d+)[-_](\d+)\.[^./\\]+$")


def parse_location(name: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(x, y)`` from a tile file name ``..._<x>_<y>.<ext>`` or ``..._<x>-<y>.<ext>``.

    Examples
    --------
    >>> parse_location("slide_1_256-512.jpg"), parse_location("a_3_4.png"), parse_location("t1.jpg")
    ((256, 512), (3, 4), None)
    """
    m = _LOCATION.search(Path(name).name)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------- images -> TFRecords


def _image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ConfigError("not a folder", path=directory)
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )


def _check_image(path: Path) -> str:
    """The image format of a loose tile file, after checking it is a readable JPEG or PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            head = f.read(16)
            fmt = detect_image_format(head)
            if fmt not in ("jpeg", "png"):
                raise ConfigError(
                    "not a JPEG or PNG image" + (f" (looks like {fmt})" if fmt else ""), path=path
                )
            f.seek(0)
            with Image.open(f) as im:
                im.size  # noqa: B018 - reads and checks the header
    except UnidentifiedImageError as exc:
        raise ConfigError(f"not a readable image ({exc})", path=path) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read image: {exc}", path=path) from exc
    return fmt


def _check_images(groups: Sequence[tuple[Path, list[Path]]]) -> None:
    """Every image of each group readable, one format per group (one group: one TFRecord)."""
    for _, files in groups:
        first: tuple[Path, str] | None = None
        for f in files:
            fmt = _check_image(f)
            if first is None:
                first = (f, fmt)
            elif fmt != first[1]:
                raise ConfigError(
                    f"is {fmt.upper()} but {first[0].name} is {first[1].upper()}: the images of "
                    "one TFRecord must share a format (convert them first)",
                    path=f,
                )


def _output(path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise ConfigError("output exists (pass overwrite=True to replace it)", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_images(items: Sequence[tuple[Path, str]], out: Path) -> int:
    with TFRecordWriter(out) as writer:
        for f, slide in items:
            loc = parse_location(f) or (0, 0)
            writer.write(serialized_record(slide, f.read_bytes(), loc[0], loc[1]), location=loc)
    log.info("wrote %d images to %s", len(items), out)
    return len(items)


def _order(
    items: list[tuple[Path, str]], shuffle: bool, seed: int | None
) -> list[tuple[Path, str]]:
    if shuffle:
        random.Random(seed).shuffle(items)
    return items


def write_tfrecords_single(
    input_directory: PathLike,
    output_directory: PathLike,
    filename: str,
    slide: str,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    overwrite: bool = False,
) -> int:
    """Write the JPEG/PNG images of a folder to one TFRecord, all under ``slide``.

    Parameters
    ----------
    input_directory
        The images (not searched recursively).
    output_directory
        Created if needed.
    filename
        The TFRecord's file name.
    slide
        The ``slide`` feature of every record.
    shuffle, seed
        Write the images in a random order (Slideflow does), seeded.
    overwrite
        Replace an existing output.

    Returns
    -------
    int
        The number of records written.

    Raises
    ------
    ConfigError
        A file that is not a readable JPEG or PNG image, JPEG mixed with PNG,
        or an existing output without ``overwrite``; nothing is written.
    """
    src = Path(input_directory)
    files = _image_files(src)
    if not files:
        raise ConfigError("no JPEG or PNG images in this folder", path=src)
    _check_images([(src, files)])
    out = _output(Path(output_directory) / filename, overwrite)
    return _write_images(_order([(f, slide) for f in files], shuffle, seed), out)


def _slide_dirs(input_directory: PathLike) -> list[Path]:
    root = Path(input_directory)
    if not root.is_dir():
        raise ConfigError("not a folder", path=root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_tfrecords_multi(
    input_directory: PathLike,
    output_directory: PathLike,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    overwrite: bool = False,
) -> int:
    """One TFRecord per subfolder, named after it (``<subfolder>.tfrecords``, slide = subfolder).

    Every image of every subfolder is checked before the first TFRecord is
    written; subfolders without images are skipped (logged). Returns the total
    number of records written.
    """
    groups = []
    for d in _slide_dirs(input_directory):
        files = _image_files(d)
        if files:
            groups.append((d, files))
        else:
            log.warning("%s: no JPEG or PNG images; no TFRecord written for it", d)
    if not groups:
        raise ConfigError("no subfolder holds JPEG or PNG images", path=input_directory)
    dirs = [d for d, _ in groups]
    _check_images(groups)
    outs = [_output(Path(output_directory) / f"{d.name}.tfrecords", overwrite) for d in dirs]
    total = 0
    for (d, files), out in zip(groups, outs, strict=True):
        total += _write_images(_order([(f, d.name) for f in files], shuffle, seed), out)
    log.info("wrote %d tiles across %d TFRecords in %s", total, len(dirs), output_directory)
    return total


def write_tfrecords_merge(
    input_directory: PathLike,
    output_directory: PathLike,
    filename: str,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    overwrite: bool = False,
) -> int:
    """The images of every subfolder in one TFRecord (slide = subfolder name); returns the count."""
    dirs = _slide_dirs(input_directory)
    groups = [(d, _image_files(d)) for d in dirs]
    if not any(files for _, files in groups):
        raise ConfigError("no subfolder holds JPEG or PNG images", path=input_directory)
    _check_images([(Path(input_directory), [f for _, fs in groups for f in fs])])
    out = _output(Path(output_directory) / filename, overwrite)
    items = [(f, d.name) for d, files in groups for f in files]
    return _write_images(_order(items, shuffle, seed), out)


# --------------------------------------------------------------------------- TFRecords -> images


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[\\/\x00]", "_", name).strip() or "_"
    return "_" if cleaned in (".", "..") else cleaned


def _location_of(record: dict[str, Any]) -> tuple[int, int] | None:
    x, y = record.get("loc_x"), record.get("loc_y")
    if isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)):
        return int(x), int(y)
    return None


def _image_of(record: dict[str, Any], path: Path | str, i: int) -> bytes:
    image = record.get("image_raw")
    if not isinstance(image, bytes):
        raise UnsupportedRecordError(
            f"record {i} has no image_raw bytes feature (not a tile TFRecord; "
            f"features: {sorted(record)})",
            path=path,
        )
    return image


def _slide_of(record: dict[str, Any], path: Path | str) -> str:
    slide = record.get("slide")
    if isinstance(slide, bytes):
        return slide.decode("utf-8", errors="replace")
    name = path.name if isinstance(path, Path) else path.rstrip("/").rsplit("/", 1)[-1]
    return name.split(".")[0]


def tfrecord_to_images(
    tfrecord: PathLike,
    destination: PathLike,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write each record's image as ``destination/<slide>/<slide>_<x>-<y>.<ext>``.

    Slideflow calls this ``sf.io.extract_tiles``; :func:`tilestream.dataset.io.extract_tiles`
    is that name, an alias of this function.

    A location shared by several records (e.g. records written without
    locations) gets the record number too: ``<slide>_<i>_<x>-<y>.<ext>``.
    The tiles appear only when all were written. Returns the number written.
    ``tfrecord`` may be a URL (``s3://...``) and ``destination`` a URL prefix
    (``s3://bucket/tiles``: each tile is uploaded whole once all were written
    and checked, see :mod:`tilestream.dataset.outputs`), with ``storage_options``.

    Raises
    ------
    ConfigError
        A tile file (or object) exists with other content and ``overwrite`` is off.
    UnsupportedRecordError
        A record has no ``image_raw``.
    """
    text = os.fspath(tfrecord)
    src: Path | str = text if is_url(text) else Path(text)
    src_name = text.rstrip("/").rsplit("/", 1)[-1] if isinstance(src, str) else src.name
    with OutputSink(destination, storage_options=storage_options, overwrite=overwrite) as sink:
        dest = sink.folder()  # the destination, or (a URL) the scratch folder uploaded at the end
        staging = Path(tempfile.mkdtemp(prefix=f".{src_name}.", suffix=".tmp", dir=dest))
        written: list[Path] = []
        try:
            seen: set[tuple[str, int, int]] = set()
            for i, data in enumerate(iter_records(src, storage_options=storage_options)):
                rec = parse_example(data, path=os.fspath(src), record=i)
                image = _image_of(rec, src, i)
                slide = _safe_name(_slide_of(rec, src))
                ext = _EXT.get(detect_image_format(image) or "", "img")
                loc = _location_of(rec) or (0, 0)
                key = (slide, loc[0], loc[1])
                name = f"{slide}_{loc[0]}-{loc[1]}.{ext}"
                if key in seen:
                    name = f"{slide}_{i}_{loc[0]}-{loc[1]}.{ext}"
                seen.add(key)
                target = staging / slide / name
                target.parent.mkdir(exist_ok=True)
                target.write_bytes(image)
                written.append(target.relative_to(staging))
            present = [] if overwrite else sink.present([rel.as_posix() for rel in written])
            for name in present:  # check every final name before moving any tile
                if sink.read(name) != (staging / name).read_bytes():
                    raise ConfigError(
                        "exists with other content (pass overwrite=True)", path=sink.url(name)
                    )
            for rel in written:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, dest / rel)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %d tiles from %s to %s", len(written), src, sink.url())
    return len(written)
