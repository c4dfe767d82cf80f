"""Slideflow's ``sf.io`` TFRecord utilities: loose images to and from TFRecords, split, merge, shuffle.

Same names and semantics as Slideflow's, with these differences, all for
safety and memory:

- every output appears atomically (a temporary file renamed into place), with
  a fresh ``<name>.index.npz``; on any error nothing is left behind (images
  are checked before the first TFRecord is written; loose tiles are written to
  a temporary folder and moved into place at the end);
- an existing output is an error unless ``overwrite=True`` (Slideflow overwrites);
- records are streamed (shuffling permutes the index and copies records out of
  a memory map), so memory stays bounded whatever the file size;
- image files named ``..._<x>_<y>.<ext>`` or ``..._<x>-<y>.<ext>`` keep their
  location as ``loc_x``/``loc_y`` (Slideflow writes 0, 0);
- a folder to convert must hold JPEG or PNG images only, all of one format: a
  file that is not an image, or a mix of JPEG and PNG, is an error naming the file;
- loose tiles are written as ``<slide>/<slide>_<x>-<y>.<ext>`` (Slideflow:
  ``tile<i>.<ext>``), so converting them back keeps their locations.

Examples
--------
>>> import io as _io, tempfile, pathlib
>>> from PIL import Image
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "tiles").mkdir()
>>> for x in (0, 256):
...     Image.new("RGB", (8, 8), (x // 2, 0, 0)).save(d / "tiles" / f"s1_{x}-512.png")
>>> write_tfrecords_single(d / "tiles", d / "out", "s1.tfrecords", "s1", shuffle=False)
2
>>> from tilestream.tfrecord import get_locations_from_tfrecord
>>> get_locations_from_tfrecord(d / "out" / "s1.tfrecords")
[(0, 512), (256, 512)]
>>> extract_tiles(d / "out" / "s1.tfrecords", d / "loose")
2
>>> sorted(p.name for p in (d / "loose" / "s1").iterdir())
['s1_0-512.png', 's1_256-512.png']
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilestream.errors import ConfigError, UnsupportedRecordError
from tilestream.tfrecord import (
    TFRecord,
    TFRecordWriter,
    decode_example,
    decode_image,
    detect_image_format,
    detect_tfrecord_format,
    encode_example,
    iter_records,
    parse_example,
    read_and_return_record,
    serialized_record,
)
from tilestream.tfrecord.feature import Feature
from tilestream.tfrecord.framing import HEADER_SIZE, detect_compression

__all__ = [
    "IMAGE_EXTENSIONS",
    "extract_tiles",
    "join_tfrecord",
    "merge_tfrecords",
    "parse_location",
    "shuffle_tfrecord",
    "split_tfrecord",
    "transform_tfrecord",
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


def _image_of(record: dict[str, Any], path: Path, i: int) -> bytes:
    image = record.get("image_raw")
    if not isinstance(image, bytes):
        raise UnsupportedRecordError(
            f"record {i} has no image_raw bytes feature (not a tile TFRecord; "
            f"features: {sorted(record)})",
            path=path,
        )
    return image


def _slide_of(record: dict[str, Any], path: Path) -> str:
    slide = record.get("slide")
    if isinstance(slide, bytes):
        return slide.decode("utf-8", errors="replace")
    return path.name.split(".")[0]


def extract_tiles(tfrecord: PathLike, destination: PathLike, *, overwrite: bool = False) -> int:
    """Write each record's image as ``destination/<slide>/<slide>_<x>-<y>.<ext>``.

    A location shared by several records (e.g. records written without
    locations) gets the record number too: ``<slide>_<i>_<x>-<y>.<ext>``.
    The tiles appear only when all were written. Returns the number written.

    Raises
    ------
    ConfigError
        A tile file exists with other content and ``overwrite`` is off.
    UnsupportedRecordError
        A record has no ``image_raw``.
    """
    src = Path(tfrecord)
    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{src.name}.", suffix=".tmp", dir=dest))
    written: list[Path] = []
    try:
        seen: set[tuple[str, int, int]] = set()
        for i, data in enumerate(iter_records(src)):
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
        for rel in written:  # check every final name before moving any tile
            final = dest / rel
            if (
                final.exists()
                and not overwrite
                and final.read_bytes() != (staging / rel).read_bytes()
            ):
                raise ConfigError("exists with other content (pass overwrite=True)", path=final)
        for rel in written:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, dest / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %d tiles from %s to %s", len(written), src, dest)
    return len(written)


# --------------------------------------------------------------------------- TFRecord -> TFRecord


def _location_from_bytes(data: bytes) -> tuple[int, int] | None:
    try:
        return _location_of(parse_example(data))
    except (ValueError, UnsupportedRecordError):
        return None


def _check_same_format(files: Sequence[Path]) -> None:
    first: tuple[Path, Any, Any] | None = None
    for f in files:
        fields, fmt = detect_tfrecord_format(f)
        if fields is None:
            continue  # an empty file
        if first is None:
            first = (f, sorted(fields), fmt)
        elif sorted(fields) != first[1] or fmt != first[2]:
            raise ConfigError(
                f"format {sorted(fields)} / {fmt} differs from {first[0].name} "
                f"({first[1]} / {first[2]}): TFRecords merged into one must match",
                path=f,
            )


def _tfrecord_list(tfrecords: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(tfrecords, (str, os.PathLike)):
        p = Path(tfrecords)
        if p.is_dir():
            return sorted(f for f in p.glob("*.tfrecords") if not f.name.startswith("."))
        return [p]
    return [Path(t) for t in tfrecords]


def merge_tfrecords(
    tfrecords: PathLike | Sequence[PathLike], output: PathLike, *, overwrite: bool = False
) -> int:
    """Concatenate TFRecords (a list, or a folder's ``*.tfrecords``) into ``output``.

    The inputs must share their features and image format. Returns the number of records.
    """
    files = _tfrecord_list(tfrecords)
    if not files:
        raise ConfigError(
            "no TFRecords to merge",
            path=os.fspath(tfrecords) if isinstance(tfrecords, (str, os.PathLike)) else None,
        )
    out = Path(output)
    if any(f.resolve() == out.resolve() for f in files):
        raise ConfigError("the output is one of the inputs", path=out)
    _check_same_format(files)
    _output(out, overwrite)
    with TFRecordWriter(out) as writer:
        for f in files:
            for data in iter_records(f):
                writer.write(data, location=_location_from_bytes(data))
    return writer.count


def _compression_of(path: Path) -> str | None:
    with open(path, "rb") as f:
        return detect_compression(f.read(HEADER_SIZE))


def _permuted(tfr: TFRecord, rng: random.Random) -> Iterator[bytes]:
    order = list(range(len(tfr)))
    rng.shuffle(order)
    for i in order:
        yield tfr.read_raw(i)


def shuffle_tfrecord(
    target: PathLike, *, output: PathLike | None = None, seed: int | None = None
) -> int:
    """Shuffle the records of a TFRecord (in place unless ``output`` is given).

    Records are copied out of a memory map in a random order: memory stays
    bounded (a GZIP/ZLIB file is decompressed into memory first, and written
    back with the same compression). In place, the shuffled file replaces the
    original atomically (it holds the same records); Slideflow keeps a
    ``.old`` copy instead. Returns the number of records.
    """
    src = Path(target)
    out = Path(output) if output is not None else src
    rng = random.Random(seed)
    comp = _compression_of(src)
    with (
        TFRecord(src, create_index=False) as tfr,
        TFRecordWriter(out, compression=comp) as writer,
    ):
        for data in _permuted(tfr, rng):
            writer.write(data, location=_location_from_bytes(data))
    return writer.count


def join_tfrecord(
    input_folder: PathLike,
    output_file: PathLike,
    assign_slide: str | None = None,
    *,
    seed: int | None = None,
    overwrite: bool = False,
) -> int:
    """Interleave the ``*.tfrecords`` of a folder at random (each shuffled) into one file.

    With ``assign_slide`` every record gets that slide name. Returns the number of records.
    """
    files = _tfrecord_list(Path(input_folder))
    if not files:
        raise ConfigError("no *.tfrecords to join", path=input_folder)
    out = Path(output_file)
    _check_same_format(files)
    _output(out, overwrite)
    rng = random.Random(seed)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(TFRecord(f, create_index=False)) for f in files]
        iters = [_permuted(t, rng) for t in sources]
        with TFRecordWriter(out) as writer:
            while iters:
                j = rng.randrange(len(iters))
                data = next(iters[j], None)
                if data is None:
                    del iters[j]
                    continue
                if assign_slide:
                    data = read_and_return_record(data, assign_slide=assign_slide)
                writer.write(data, location=_location_from_bytes(data))
    return writer.count


def split_tfrecord(
    tfrecord_file: PathLike, output_folder: PathLike, *, overwrite: bool = False
) -> dict[str, int]:
    """Split a TFRecord by slide into ``output_folder/<slide>.tfrecords``.

    Streams the input with one writer per slide; all outputs appear only when
    the whole input was read. Returns ``{slide: records}``.
    """
    src = Path(tfrecord_file)
    dest = Path(output_folder)
    dest.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        writers: dict[str, TFRecordWriter] = {}
        for i, data in enumerate(iter_records(src)):
            rec = parse_example(data, path=os.fspath(src), record=i)
            if not isinstance(rec.get("slide"), bytes):
                raise UnsupportedRecordError(f"record {i} has no 'slide' feature", path=src)
            name = _safe_name(_slide_of(rec, src))
            w = writers.get(name)
            if w is None:
                out = _output(dest / f"{name}.tfrecords", overwrite)
                if out.resolve() == src.resolve():
                    raise ConfigError("an output would replace the input", path=out)
                w = writers[name] = stack.enter_context(TFRecordWriter(out))
            w.write(data, location=_location_of(rec))
            counts[name] = counts.get(name, 0) + 1
    return counts


def _hue_shift(img: Any, shift: float) -> Any:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(shift * 255)) % 256
    from PIL import Image

    return Image.fromarray(hsv, "HSV").convert("RGB")


def transform_tfrecord(
    origin: PathLike,
    target: PathLike,
    assign_slide: str | Callable[[str], str] | None = None,
    hue_shift: float | None = None,
    resize: int | None = None,
    *,
    img_format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> int:
    """Copy a TFRecord, re-encoding its tiles and/or renaming the slide.

    Parameters
    ----------
    origin, target
        Input and output (they may be the same file: it is replaced atomically,
        keeping its compression).
    assign_slide
        A new slide name, or a function of the old one.
    hue_shift
        Shift the hue by this fraction of the colour wheel (Slideflow's ``hue_shift``).
    resize
        Resize tiles to ``resize`` x ``resize`` pixels (Lanczos).
    img_format
        Re-encode as ``"jpeg"`` or ``"png"`` (default: the tile's own format).
    quality
        JPEG quality when re-encoding.
    overwrite
        Replace an existing ``target`` (other than ``origin``).

    Returns
    -------
    int
        The number of records.
    """
    from PIL import Image

    src, out = Path(origin), Path(target)
    if img_format is not None and img_format.lower() not in ("jpeg", "jpg", "png"):
        raise ConfigError(f"img_format must be 'jpeg' or 'png', not {img_format!r}")
    fmt_out = {"jpg": "jpeg"}.get((img_format or "").lower(), (img_format or "").lower()) or None
    in_place = src.resolve() == out.resolve()
    if not in_place:
        _output(out, overwrite)
    reencode = hue_shift is not None or resize is not None or fmt_out is not None
    comp = _compression_of(src) if in_place else None
    with TFRecordWriter(out, compression=comp) as writer:
        for i, data in enumerate(iter_records(src)):
            feats = dict(decode_example(data, path=os.fspath(src), record=i))
            plain = parse_example(data, path=os.fspath(src), record=i)
            if reencode:
                image = _image_of(plain, src, i)
                fmt = fmt_out or detect_image_format(image) or "jpeg"
                im = Image.fromarray(decode_image(image))
                if hue_shift is not None:
                    im = _hue_shift(im, hue_shift)
                if resize is not None:
                    im = im.resize((int(resize), int(resize)), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                if fmt == "png":
                    im.save(buf, format="PNG")
                else:
                    im.save(buf, format="JPEG", quality=int(quality))
                feats["image_raw"] = Feature.bytes_list([buf.getvalue()])
            if assign_slide is not None:
                old = _slide_of(plain, src)
                new = assign_slide(old) if callable(assign_slide) else assign_slide
                feats["slide"] = Feature.bytes_list([new.encode("utf-8")])
            writer.write(encode_example(feats), location=_location_of(plain))
    return writer.count
