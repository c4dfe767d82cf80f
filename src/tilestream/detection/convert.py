"""Convert a parsed detection data set to TF Object Detection API TFRecords.

The conversion streams: annotations are light, pixels are read, checked,
hashed and serialised a chunk of images at a time on a thread pool (file
reads, SHA-256, CRC32C and writes release the GIL), each worker reading the
images straight into its own reused record buffer and writing its chunk
itself as soon as every earlier chunk is written. So memory stays bounded (a
few chunks in flight) and the output is the same for the same inputs and
seed, whatever the number of workers.

Output in ``out_dir``: one TFRecord per split (``train.tfrecord``), or
``shards`` files per split named as the OD API and Beam do
(``train.tfrecord-00000-of-00004``; records go round-robin), the
``label_map.pbtxt`` used, ``summary.json`` and a short ``README.md`` with
counts per split and class. Every file is written atomically; when the
conversion fails (a problem under ``on_error="fail"``, a bad file, an
interruption) no output file appears.

Examples
--------
>>> import tempfile, pathlib, io
>>> from PIL import Image
>>> from tilestream.detection.csv_format import read_csv
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> Image.new("RGB", (8, 6)).save(d / "a.jpg")
>>> _ = (d / "l.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\\n"
...                              "a.jpg,8,6,cat,0,0,4,3\\n")
>>> summary = convert(read_csv(d / "l.csv"), d / "out")
>>> sorted(p.name for p in (d / "out").iterdir())
['README.md', 'label_map.pbtxt', 'summary.json', 'train.tfrecord']
>>> summary.splits["train"].images, dict(summary.splits["train"].classes)
(1, {'cat': 1})
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from tilestream._util.atomic import atomic_write, is_temp_file, write_json_atomic
from tilestream.detection._pipeline import (
    Chunk,
    ProgressCallback,
    _chunks,
    _Context,
    _Output,
    _run_chunks,
)
from tilestream.detection.annotations import AnnotationSet, ImageAnnotation, Problem
from tilestream.detection.labelmap import (
    LabelMap,
    LabelMapItem,
    read_label_map,
    write_label_map,
)
from tilestream.detection.splits import assign_splits, parse_split, shard_names
from tilestream.detection.summary import ConversionSummary, SplitSummary
from tilestream.detection.validate import OnError, check_on_error, raise_problems
from tilestream.errors import ConfigError
from tilestream.tfrecord import TFRecordWriter

__all__ = [
    "ConversionSummary",
    "ConvertOptions",
    "SplitSummary",
    "assign_splits",
    "check_option_names",
    "convert",
    "parse_split",
    "resolve_label_map",
    "shard_names",
]

log = logging.getLogger(__name__)


# Images per job: large enough that handing results between threads is rare.
_CHUNK = 32
# Default thread count cap: beyond this the GIL-held share of the work dominates.
_MAX_THREADS = 8


# --------------------------------------------------------------------------- label map


def resolve_label_map(
    source: AnnotationSet,
    label_map: LabelMap | str | os.PathLike[str] | None,
    *,
    add_unknown: bool = False,
    keep_category_ids: bool = False,
) -> LabelMap:
    """The label map a conversion uses.

    A given map is used as is (with unseen classes appended when
    ``add_unknown``). Without one: YOLO keeps the classes file's order (class
    ``k`` gets id ``k + 1``); COCO takes its declared categories, sorted by
    name, ids 1..n (or their own ids with ``keep_category_ids``); VOC and CSV
    take the classes seen, sorted, ids 1..n.
    """
    if isinstance(label_map, (str, os.PathLike)):
        label_map = read_label_map(label_map)
    if label_map is not None:
        return label_map.with_names(source.class_names()) if add_unknown else label_map
    if source.format == "yolo" and source.categories:
        return LabelMap(LabelMapItem(i + 1, name) for i, name in source.categories if name)
    if source.format == "coco" and source.categories:
        if keep_category_ids:
            return LabelMap(LabelMapItem(cid, name) for cid, name in source.categories)
        return LabelMap.from_names(name for _, name in source.categories if name)
    return LabelMap.from_names(source.class_names())


# --------------------------------------------------------------------------- convert


class ConvertOptions(TypedDict, total=False):
    """The options of :func:`convert`, which the ``convert_<format>`` calls pass on.

    Every key is one of :func:`convert` 's keyword parameters; a name not
    listed here is a type error, and a :class:`ConfigError` at run time.

    Attributes
    ----------
    label_map
        A :class:`LabelMap` or a ``label_map.pbtxt`` path; see
        :func:`resolve_label_map` for the default.
    add_unknown
        Append classes missing from a given label map instead of reporting them.
    keep_category_ids
        COCO without a label map: use the category ids as label ids.
    split
        Fractions per split, see :func:`parse_split`; default all in ``train``.
    shards
        Files per split (``train.tfrecord-00000-of-0000N``), records round-robin.
    seed
        Seed of the split assignment and record order.
    shuffle
        Write each split's records in shuffled order (else annotation order).
    on_error
        ``"fail"`` (default), ``"skip"`` or ``"clip"``; see
        :mod:`tilestream.detection.validate`.
    skip_empty
        Leave out images with no objects (kept as negatives by default).
    include_masks
        COCO only: add ``image/object/mask`` PNG masks from the segmentations.
    jpeg_format
        The ``image/format`` written for JPEG images: ``"jpeg"`` (the OD API's
        value) or ``"jpg"`` (what the tutorial ``generate_tfrecord.py`` writes).
    decode_images
        Fully decode every image to check it (default: a header and
        end-marker check).
    workers
        Threads (or processes) reading, hashing and serialising images
        (default: the CPU count, at most 8).
    executor
        ``"thread"`` (default) or ``"process"``.
    overwrite
        Replace existing output files (else an existing output is an error).
    progress
        Called with ``(images done, images total)`` after each image, in order,
        from the thread that writes it (a worker thread).
    """

    label_map: LabelMap | str | os.PathLike[str] | None
    add_unknown: bool
    keep_category_ids: bool
    split: str | Sequence[float] | Mapping[str, float] | None
    shards: int
    seed: int
    shuffle: bool
    on_error: str
    skip_empty: bool
    include_masks: bool
    jpeg_format: str
    decode_images: bool
    workers: int | None
    executor: str
    overwrite: bool
    progress: ProgressCallback | None


def check_option_names(options: Mapping[str, object]) -> None:
    """Raise :class:`ConfigError` naming any key of ``options`` that is not a :class:`ConvertOptions`.

    Examples
    --------
    >>> check_option_names({"shards": 2})
    >>> check_option_names({"shard": 2})
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: unknown conversion option 'shard' (did you mean 'shards'?)
    """
    known = ConvertOptions.__annotations__
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; options: {', '.join(known)}"
            raise ConfigError(f"unknown conversion option {name!r}{hint}")


def _check_options(
    source: AnnotationSet,
    on_error: str,
    shards: int,
    jpeg_format: str,
    include_masks: bool,
    executor: str,
) -> OnError:
    """Validate the options that need no file; return the error policy."""
    policy = check_on_error(on_error)
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, not {shards}")
    if jpeg_format not in ("jpeg", "jpg"):
        raise ConfigError(f"jpeg_format must be 'jpeg' or 'jpg', not {jpeg_format!r}")
    if include_masks and source.format != "coco":
        raise ConfigError("masks (include_masks) come from COCO segmentations only")
    if executor not in ("thread", "process"):
        raise ConfigError(f"executor must be 'thread' or 'process', not {executor!r}")
    return policy


def _claim_out_dir(out: Path, names: Mapping[str, list[str]], *, overwrite: bool) -> None:
    """Create ``out``; unless ``overwrite``, refuse one holding any output or other records."""
    targets = [n for files in names.values() for n in files]
    targets += ["label_map.pbtxt", "summary.json", "README.md"]
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        return
    existing = [n for n in targets if (out / n).exists()]
    existing += sorted(
        p.name
        for p in out.glob("*.tfrecord*")
        if p.name not in targets and p.is_file() and not is_temp_file(p)
    )
    if existing:
        raise ConfigError(
            f"{out} already holds {', '.join(existing[:5])}"
            f"{' ...' if len(existing) > 5 else ''}; choose another folder or overwrite"
        )


def _duplicates(source: AnnotationSet) -> tuple[list[int], list[Problem]]:
    """The numbers of the images to convert (the first of each file) and the duplicates' problems."""
    seen: dict[str, ImageAnnotation] = {}
    keep: list[int] = []
    problems: list[Problem] = []
    for i, image in enumerate(source.images):
        key = os.path.normcase(os.path.abspath(image.image_path))
        first = seen.get(key)
        if first is not None:
            problems.append(
                Problem(
                    "duplicate_file",
                    image.source,
                    f"image {image.filename} is also annotated by {first.source}"
                    if first.source != image.source
                    else f"image {image.filename} appears twice",
                    image=image.filename,
                )
            )
            continue
        seen[key] = image
        keep.append(i)
    return keep, problems


@dataclass(frozen=True)
class _Plan:
    """The images to convert (one per file), their numbers in the source, and their splits."""

    images: list[ImageAnnotation]
    numbers: list[int]
    #: ``{split: positions in images}``, in the order the records are written.
    assignment: dict[str, list[int]]
    #: The problems of the images left out as another's duplicate.
    duplicates: list[Problem]

    def chunks(self, workers: int) -> Iterator[Chunk]:
        """The work in chunks of up to ``_CHUNK`` images (fewer when there is little)."""
        size = max(1, min(_CHUNK, -(-len(self.images) // workers)))
        return _chunks(self.assignment, self.numbers, self.images, size)


def _select(
    source: AnnotationSet, fractions: Mapping[str, float], *, seed: int, shuffle: bool
) -> _Plan:
    """Which images are converted, into which split, in which order."""
    numbers, duplicates = _duplicates(source)
    assignment = assign_splits(len(numbers), fractions, seed=seed)
    if not shuffle:
        assignment = {k: sorted(v) for k, v in assignment.items()}
    return _Plan([source.images[i] for i in numbers], numbers, assignment, duplicates)


def _context(
    source: AnnotationSet,
    label_map: LabelMap,
    policy: OnError,
    include_masks: bool,
    jpeg_format: str,
    decode_images: bool,
) -> _Context:
    """What the workers need to turn an image into its record."""
    reported, image_problems = _parse_problem_index(source)
    return _Context(
        label_map,
        policy,
        source.format,
        include_masks,
        jpeg_format,
        decode_images,
        reported,
        image_problems,
    )


def _new_summary(
    source: AnnotationSet, out: Path, label_map: LabelMap, names: Mapping[str, list[str]]
) -> ConversionSummary:
    """An empty summary with one entry per split."""
    return ConversionSummary(
        out_dir=os.fspath(out),
        source=source.source,
        format=source.format,
        label_map=label_map,
        splits={name: SplitSummary(name, list(files)) for name, files in names.items()},
    )


def _parse_problem_index(source: AnnotationSet) -> tuple[dict[int, set[int]], set[int]]:
    """Which images (by number) the parser reported problems for, and which of their objects."""
    reported: dict[int, set[int]] = {}
    image_problems: set[int] = set()
    by_filename: dict[str, list[int]] = {}
    for i, img in enumerate(source.images):
        by_filename.setdefault(img.filename, []).append(i)
    for p in source.problems:
        for i in by_filename.get(p.image, []) if p.image is not None else []:
            image_problems.add(i)
            if p.object is not None:
                reported.setdefault(i, set()).add(p.object)
    return reported, image_problems


@contextlib.contextmanager
def _open_writers(
    out: Path, names: Mapping[str, list[str]]
) -> Iterator[dict[str, list[TFRecordWriter]]]:
    """One writer per output file; all are discarded when the block raises."""
    with contextlib.ExitStack() as stack:
        yield {
            split: [stack.enter_context(TFRecordWriter(out / f, index=False)) for f in files]
            for split, files in names.items()
        }


def _settle_problems(problems: list[Problem], policy: OnError, source: str) -> None:
    """Sort ``problems`` by file, image and object; under ``fail`` raise them all."""
    problems.sort(key=lambda p: (p.file, p.image or "", -1 if p.object is None else p.object))
    if policy == "fail" and problems:
        raise_problems(problems, source=source)


def _finish(
    out: Path,
    summary: ConversionSummary,
    problems: list[Problem],
    policy: OnError,
    plan: _Plan,
    started: float,
) -> None:
    """Complete the summary, log the problems tolerated, write the files beside the records."""
    summary.problems = problems
    if policy != "fail":
        summary.skipped_images += len(plan.duplicates)
    for p in problems:
        log.warning("%s (%s)", p, "skipped" if policy == "skip" else "repaired or skipped")
    summary.seconds = time.perf_counter() - started
    _write_sidecars(out, summary)


def _write_sidecars(out: Path, summary: ConversionSummary) -> None:
    """``label_map.pbtxt``, ``summary.json`` and ``README.md`` beside the records."""
    write_label_map(summary.label_map, out / "label_map.pbtxt")
    write_json_atomic(out / "summary.json", summary.to_dict())
    with atomic_write(out / "README.md", "w") as f:
        f.write(summary.to_markdown())


def convert(
    source: AnnotationSet,
    out_dir: str | os.PathLike[str],
    *,
    label_map: LabelMap | str | os.PathLike[str] | None = None,
    add_unknown: bool = False,
    keep_category_ids: bool = False,
    split: str | Sequence[float] | Mapping[str, float] | None = None,
    shards: int = 1,
    seed: int = 0,
    shuffle: bool = True,
    on_error: str = "fail",
    skip_empty: bool = False,
    include_masks: bool = False,
    jpeg_format: str = "jpeg",
    decode_images: bool = False,
    workers: int | None = None,
    executor: str = "thread",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> ConversionSummary:
    """Write ``source`` as OD API TFRecords in ``out_dir``.

    Parameters
    ----------
    source
        A parsed data set (:func:`~tilestream.detection.read_voc` and friends).
    out_dir
        The output folder (created).

    Other Parameters
    ----------------
    label_map, add_unknown, keep_category_ids, split, shards, seed, shuffle, on_error
        See :class:`ConvertOptions`.
    skip_empty, include_masks, jpeg_format, decode_images, workers, executor, overwrite
        See :class:`ConvertOptions`.
    progress
        See :class:`ConvertOptions`.

    Raises
    ------
    AnnotationError
        Under ``on_error="fail"`` when there is any problem; it lists every
        one (``.problems``) and nothing is written.
    ConfigError
        On invalid options or an existing output without ``overwrite``.
    """
    started = time.perf_counter()
    policy = _check_options(source, on_error, shards, jpeg_format, include_masks, executor)
    fractions = parse_split(split)
    lm = resolve_label_map(
        source, label_map, add_unknown=add_unknown, keep_category_ids=keep_category_ids
    )
    out = Path(out_dir)
    names = {name: shard_names(name, shards) for name in fractions}
    _claim_out_dir(out, names, overwrite=overwrite)
    plan = _select(source, fractions, seed=seed, shuffle=shuffle)
    ctx = _context(source, lm, policy, include_masks, jpeg_format, decode_images)
    summary = _new_summary(source, out, lm, names)
    problems = list(source.problems) + plan.duplicates
    if policy == "fail" and problems:
        log.info("%d problem(s) while parsing; checking the images too", len(problems))
    n_workers = max(1, workers if workers is not None else min(os.cpu_count() or 1, _MAX_THREADS))
    with _open_writers(out, names) as writers:
        output = _Output(writers, summary, problems, skip_empty, len(plan.images), progress)
        _run_chunks(executor, n_workers, output, ctx, plan.chunks(n_workers))
        _settle_problems(problems, policy, source.source)
    _finish(out, summary, problems, policy, plan, started)
    return summary
