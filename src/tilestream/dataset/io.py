"""Slideflow's ``sf.io`` TFRecord utilities: loose images to and from TFRecords, split, merge, shuffle.

Same names and semantics as Slideflow's, with these differences, all for
safety and memory:

- every output appears atomically (a temporary file renamed into place), with
  a fresh ``<name>.index.npz``; on any error nothing is left behind (images
  are checked before the first TFRecord is written; loose tiles are written to
  a temporary folder and moved into place at the end);
- inputs and outputs may be URLs (``s3://``, ``gs://``; inputs also
  ``http(s)://``), with ``storage_options``: an input prefix lists its
  ``*.tfrecords``, and each output is written locally as above, then uploaded
  whole, index last (:mod:`tilestream.dataset.outputs`): the same bytes as a
  local run, and no partial object under a final key;
- an existing output is an error unless ``overwrite=True`` (Slideflow overwrites);
- records are streamed (shuffling permutes the index and copies records out of
  a memory map), so memory stays bounded whatever the file size;
- image files named ``..._<x>_<y>.<ext>`` or ``..._<x>-<y>.<ext>`` keep their
  location as ``loc_x``/``loc_y`` (Slideflow writes 0, 0);
- a folder to convert must hold JPEG or PNG images only, all of one format: a
  file that is not an image, or a mix of JPEG and PNG, is an error naming the file;
- loose tiles are written as ``<slide>/<slide>_<x>-<y>.<ext>`` (Slideflow:
  ``tile<i>.<ext>``), so converting them back keeps their locations.

The loose-image functions live in :mod:`tilestream.dataset.images` and are
re-exported here. Slideflow's ``sf.io.extract_tiles`` (a TFRecord's tiles to
image files) is :func:`tfrecord_to_images`; ``extract_tiles`` stays here as its
Slideflow-compatible alias (not to be confused with
:func:`tilestream.extract.extract_tiles`, slides to TFRecords).

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
>>> tfrecord_to_images(d / "out" / "s1.tfrecords", d / "loose")
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
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilestream.dataset.images import (
    IMAGE_EXTENSIONS,
    PathLike,
    _image_of,
    _location_of,
    _safe_name,
    _slide_of,
    parse_location,
    tfrecord_to_images,
    write_tfrecords_merge,
    write_tfrecords_multi,
    write_tfrecords_single,
)
from tilestream.dataset.outputs import OutputSink
from tilestream.dataset.scan import remote_tfrecords
from tilestream.errors import ConfigError, UnsupportedRecordError
from tilestream.extract.publish import scratch_root
from tilestream.runfolder import TFRECORD_SUFFIX, find_tfrecords
from tilestream.storage import is_url
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
)
from tilestream.tfrecord.feature import Feature
from tilestream.tfrecord.framing import HEADER_SIZE, detect_compression, frame
from tilestream.tfrecord.remote import RemoteObject, local_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "extract_tiles",
    "join_tfrecord",
    "merge_tfrecords",
    "parse_location",
    "shuffle_tfrecord",
    "split_tfrecord",
    "tfrecord_files",
    "tfrecord_to_images",
    "transform_tfrecord",
    "write_tfrecords_merge",
    "write_tfrecords_multi",
    "write_tfrecords_single",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- TFRecord -> TFRecord


def _location_from_bytes(data: bytes) -> tuple[int, int] | None:
    try:
        return _location_of(parse_example(data))
    except (ValueError, UnsupportedRecordError):
        return None


def _check_same_format(
    files: Sequence[Path | str], storage_options: Mapping[str, Any] | None = None
) -> None:
    first: tuple[str, Any, Any] | None = None
    for f in files:
        fields, fmt = detect_tfrecord_format(f, storage_options=storage_options)
        if fields is None:
            continue  # an empty file
        if first is None:
            first = (_file_name(f), sorted(fields), fmt)
        elif sorted(fields) != first[1] or fmt != first[2]:
            raise ConfigError(
                f"format {sorted(fields)} / {fmt} differs from {first[0]} "
                f"({first[1]} / {first[2]}): TFRecords merged into one must match",
                path=f,
            )


def _file_name(source: Path | str) -> str:
    return source.name if isinstance(source, Path) else source.rstrip("/").rsplit("/", 1)[-1]


def _source(source: PathLike) -> Path | str:
    """A URL stays a string (``Path`` would fold its ``//``); a path or ``file://`` a ``Path``."""
    text = os.fspath(source)
    return text if is_url(text) else Path(local_path(text))


def tfrecord_files(
    tfrecords: PathLike | Sequence[PathLike], *, storage_options: Mapping[str, Any] | None = None
) -> list[Path | str]:
    """Files as given; a folder gives its top-level ``*.tfrecords`` (not searched further).

    A URL is one object, or a prefix whose ``*.tfrecords`` objects are listed (recursively).
    """
    items = [tfrecords] if isinstance(tfrecords, (str, os.PathLike)) else list(tfrecords)
    out: list[Path | str] = []
    local: list[PathLike] = []
    for item in items:
        if is_url(os.fspath(item)):
            out.extend(remote_tfrecords(os.fspath(item), None, storage_options))
        else:
            local.append(item)
    if local:
        out.extend(find_tfrecords(local, recursive=False, suffixes=(TFRECORD_SUFFIX,)))
    return out


def merge_tfrecords(
    tfrecords: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Concatenate TFRecords (a list, or a folder's ``*.tfrecords``) into ``output``.

    Inputs may be URLs (``s3://...``; a prefix lists its ``*.tfrecords``) and
    ``output`` a path or a URL (uploaded whole with its index, see
    :mod:`tilestream.dataset.outputs`), with ``storage_options``. The inputs
    must share their features and image format. Returns the number of records.
    """
    files = tfrecord_files(tfrecords, storage_options=storage_options)
    if not files:
        raise ConfigError(
            "no TFRecords to merge",
            path=os.fspath(tfrecords) if isinstance(tfrecords, (str, os.PathLike)) else None,
        )
    with OutputSink(output, storage_options=storage_options, overwrite=overwrite) as sink:
        if any(sink.is_source(f) for f in files):
            raise ConfigError("the output is one of the inputs", path=sink.url())
        _check_same_format(files, storage_options)
        with TFRecordWriter(sink.file()) as writer:
            for f in files:
                for data in iter_records(f, storage_options=storage_options):
                    writer.write(data, location=_location_from_bytes(data))
    return writer.count


def _compression_of(source: Path | str, storage_options: Mapping[str, Any] | None) -> str | None:
    if isinstance(source, Path):
        with open(source, "rb") as f:
            return detect_compression(f.read(HEADER_SIZE))
    return detect_compression(RemoteObject.open(source, storage_options).read_range(0, HEADER_SIZE))


def _open_input(
    source: Path | str, storage_options: Mapping[str, Any] | None, stack: contextlib.ExitStack
) -> TFRecord:
    """The input as an open :class:`TFRecord` over a memory map (closed with ``stack``).

    An object (a URL) is first copied record by record into a scratch file
    (under :func:`~tilestream.extract.publish.scratch_root`, removed with
    ``stack``): read in order with large ranged requests read ahead, CRCs
    checked (a bad record is an error naming the URL), decompressed. Reading
    it in a random order then costs no request per record.
    """
    if isinstance(source, str):
        folder = Path(tempfile.mkdtemp(prefix=".tilestream-input.", dir=scratch_root()))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        copy = folder / "records.tfrecords"
        with open(copy, "wb") as f:
            for data in iter_records(source, storage_options=storage_options):
                f.write(frame(data))
        source = copy
    return stack.enter_context(TFRecord(source, create_index=False))


def _permuted(tfr: TFRecord, rng: random.Random) -> Iterator[bytes]:
    """The records of ``tfr`` in a random order (drawn when the first record is taken)."""
    order = list(range(len(tfr)))
    rng.shuffle(order)
    for i in order:
        yield tfr.read_raw(i)


def shuffle_tfrecord(
    target: PathLike,
    *,
    output: PathLike | None = None,
    seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Shuffle the records of a TFRecord (in place unless ``output`` is given).

    Records are copied out of a memory map in a random order: memory stays
    bounded (a GZIP/ZLIB file is decompressed into memory first, and written
    back with the same compression). In place, the shuffled file replaces the
    original atomically (it holds the same records); Slideflow keeps a
    ``.old`` copy instead. ``target`` and ``output`` may be URLs (with
    ``storage_options``): an object is copied to a local scratch file first
    (read in order, in large ranged requests), and an output URL is uploaded
    whole with its index. The same seed gives the same bytes from a file or an
    object. Returns the number of records.
    """
    src = _source(target)
    rng = random.Random(seed)
    comp = _compression_of(src, storage_options)
    dest = output if output is not None else target
    with (
        OutputSink(dest, storage_options=storage_options, overwrite=True) as sink,
        contextlib.ExitStack() as stack,
    ):
        tfr = _open_input(src, storage_options, stack)
        with TFRecordWriter(sink.file(check=False), compression=comp) as writer:
            for data in _permuted(tfr, rng):
                writer.write(data, location=_location_from_bytes(data))
    return writer.count


def join_tfrecord(
    input_folder: PathLike | Sequence[PathLike],
    output_file: PathLike,
    assign_slide: str | None = None,
    *,
    seed: int | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Interleave the ``*.tfrecords`` of a folder at random (each shuffled) into one file.

    ``input_folder`` may also be a list of TFRecords, or URLs (an object, or a
    prefix listing its ``*.tfrecords``) read with ``storage_options`` (each
    object copied to a local scratch file first, as :func:`shuffle_tfrecord`
    does); ``output_file`` a path or a URL. With ``assign_slide`` every record
    gets that slide name. Returns the number of records.
    """
    files = tfrecord_files(input_folder, storage_options=storage_options)
    if not files:
        where = input_folder if isinstance(input_folder, (str, os.PathLike)) else None
        raise ConfigError("no *.tfrecords to join", path=where)
    with OutputSink(output_file, storage_options=storage_options, overwrite=overwrite) as sink:
        _check_same_format(files, storage_options)
        out = sink.file()
        rng = random.Random(seed)
        with contextlib.ExitStack() as stack:
            iters = [_permuted(_open_input(f, storage_options, stack), rng) for f in files]
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
    tfrecord_file: PathLike,
    output_folder: PathLike,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Split a TFRecord (a file or a URL) by slide into ``output_folder/<slide>.tfrecords``.

    Streams the input with one writer per slide; all outputs appear only when
    the whole input was read. ``output_folder`` may be a URL (a prefix; each
    output is uploaded whole with its index). Returns ``{slide: records}``.
    """
    src = _source(tfrecord_file)
    counts: dict[str, int] = {}
    with (
        OutputSink(output_folder, storage_options=storage_options, overwrite=overwrite) as sink,
        contextlib.ExitStack() as stack,
    ):
        sink.folder()
        writers: dict[str, TFRecordWriter] = {}
        for i, data in enumerate(iter_records(src, storage_options=storage_options)):
            rec = parse_example(data, path=os.fspath(src), record=i)
            if not isinstance(rec.get("slide"), bytes):
                raise UnsupportedRecordError(f"record {i} has no 'slide' feature", path=src)
            name = _safe_name(_slide_of(rec, src))
            w = writers.get(name)
            if w is None:
                file = f"{name}.tfrecords"
                out = sink.file(file)
                if sink.is_source(src, file):
                    raise ConfigError("an output would replace the input", path=sink.url(file))
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
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Copy a TFRecord, re-encoding its tiles and/or renaming the slide.

    Parameters
    ----------
    origin, target
        Input and output (they may be the same file: it is replaced atomically,
        keeping its compression). Either may be a URL (``storage_options``
        apply to both); an output URL is uploaded whole with its index.
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
    src = _source(origin)
    if img_format is not None and img_format.lower() not in ("jpeg", "jpg", "png"):
        raise ConfigError(f"img_format must be 'jpeg' or 'png', not {img_format!r}")
    fmt_out = {"jpg": "jpeg"}.get((img_format or "").lower(), (img_format or "").lower()) or None
    reencode = hue_shift is not None or resize is not None or fmt_out is not None
    with OutputSink(target, storage_options=storage_options, overwrite=overwrite) as sink:
        in_place = sink.is_source(src)
        out = sink.file(check=not in_place)
        comp = _compression_of(src, storage_options) if in_place else None
        with TFRecordWriter(out, compression=comp) as writer:
            for i, data in enumerate(iter_records(src, storage_options=storage_options)):
                feats = dict(decode_example(data, path=os.fspath(src), record=i))
                plain = parse_example(data, path=os.fspath(src), record=i)
                if reencode:
                    image = _image_of(plain, src, i)
                    fmt = fmt_out or detect_image_format(image) or "jpeg"
                    image = _reencoded(image, fmt, hue_shift, resize, quality)
                    feats["image_raw"] = Feature.bytes_list([image])
                if assign_slide is not None:
                    old = _slide_of(plain, src)
                    new = assign_slide(old) if callable(assign_slide) else assign_slide
                    feats["slide"] = Feature.bytes_list([new.encode("utf-8")])
                writer.write(encode_example(feats), location=_location_of(plain))
    return writer.count


def _reencoded(
    image: bytes, fmt: str, hue_shift: float | None, resize: int | None, quality: int
) -> bytes:
    from PIL import Image

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
    return buf.getvalue()


#: Slideflow's name (``sf.io.extract_tiles``) for :func:`tfrecord_to_images`.
extract_tiles = tfrecord_to_images
