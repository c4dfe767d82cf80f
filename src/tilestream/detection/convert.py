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
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from tilestream._util.atomic import atomic_write, is_temp_file, write_json_atomic
from tilestream.detection._pipeline import (
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

_SPLIT_NAMES = ("train", "valid", "test")

# Images per job: large enough that handing results between threads is rare.
_CHUNK = 32
# Default thread count cap: beyond this the GIL-held share of the work dominates.
_MAX_THREADS = 8


@dataclass
class SplitSummary:
    """Counts for one split."""

    name: str
    files: list[str] = field(default_factory=list)
    images: int = 0
    objects: int = 0
    negatives: int = 0
    classes: Counter[str] = field(default_factory=Counter)


@dataclass
class ConversionSummary:
    """What a conversion wrote, and the problems it tolerated (``skip``/``clip``)."""

    out_dir: str
    source: str
    format: str
    label_map: LabelMap
    splits: dict[str, SplitSummary]
    problems: list[Problem] = field(default_factory=list)
    skipped_images: int = 0
    skipped_empty: int = 0
    dropped_objects: int = 0
    clipped_boxes: int = 0
    reencoded_images: int = 0
    seconds: float = 0.0

    @property
    def images(self) -> int:
        """Images written, over all splits."""
        return sum(s.images for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (as written to ``summary.json``)."""
        return {
            "source": self.source,
            "format": self.format,
            "images": self.images,
            "splits": {
                name: {
                    "files": s.files,
                    "images": s.images,
                    "objects": s.objects,
                    "negatives": s.negatives,
                    "classes": dict(sorted(s.classes.items())),
                }
                for name, s in self.splits.items()
            },
            "label_map": self.label_map.to_dict(),
            "skipped_images": self.skipped_images,
            "skipped_empty": self.skipped_empty,
            "dropped_objects": self.dropped_objects,
            "clipped_boxes": self.clipped_boxes,
            "reencoded_images": self.reencoded_images,
            "problems": [str(p) for p in self.problems],
        }

    def to_markdown(self) -> str:
        """The ``README.md`` written beside the records."""
        splits = list(self.splits.values())
        lines = [
            "# Object-detection TFRecords",
            "",
            f"Converted by tilestream from {self.format} annotations `{self.source}`.",
            "Schema: TF Object Detection API `tf.train.Example`; class ids in `label_map.pbtxt`.",
            "",
            "| split | files | images | negatives | objects |",
            "|---|---|---:|---:|---:|",
        ]
        for s in splits:
            files = (
                ", ".join(s.files) if len(s.files) <= 2 else f"{s.files[0]} ... ({len(s.files)})"
            )
            lines.append(f"| {s.name} | {files} | {s.images} | {s.negatives} | {s.objects} |")
        lines += [
            "",
            "| id | class | " + " | ".join(s.name for s in splits) + " |",
            "|---:|---|" + "---:|" * len(splits),
        ]
        for item in self.label_map:
            counts = " | ".join(str(s.classes.get(item.name, 0)) for s in splits)
            lines.append(f"| {item.id} | {item.name} | {counts} |")
        lines += [
            "",
            f"Skipped images: {self.skipped_images} (problems), {self.skipped_empty} (no objects);"
            f" dropped objects: {self.dropped_objects}; clipped boxes: {self.clipped_boxes};"
            f" images re-encoded to PNG: {self.reencoded_images}.",
        ]
        if self.problems:
            lines += ["", f"## Problems tolerated ({len(self.problems)})", ""]
            lines += [f"- {p}" for p in self.problems[:1000]]
            if len(self.problems) > 1000:
                lines.append(f"- ... and {len(self.problems) - 1000} more (see summary.json)")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- splits


def parse_split(split: str | Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
    """Normalise a split spec to ``{name: fraction}``.

    ``"0.8,0.1,0.1"`` or ``[0.8, 0.1, 0.1]`` name the parts train, valid,
    test; ``"train=0.9,val=0.1"`` or a mapping names them explicitly. ``None``
    means everything in ``train``. Fractions are scaled to sum to 1.

    Examples
    --------
    >>> parse_split("0.8,0.1,0.1")
    {'train': 0.8, 'valid': 0.1, 'test': 0.1}
    >>> parse_split("train=3,eval=1")
    {'train': 0.75, 'eval': 0.25}
    """
    if split is None:
        return {"train": 1.0}
    parts: dict[str, float] = {}
    try:
        if isinstance(split, str):
            items = [s.strip() for s in split.split(",") if s.strip()]
            if all("=" in s for s in items):
                for s in items:
                    name, value = s.split("=", 1)
                    parts[name.strip()] = float(value)
            else:
                values = [float(s) for s in items]
                if len(values) > len(_SPLIT_NAMES):
                    raise ValueError("more than three unnamed parts")
                parts = dict(zip(_SPLIT_NAMES, values, strict=False))
        elif isinstance(split, Mapping):
            parts = {str(k): float(v) for k, v in split.items()}
        else:
            values = [float(v) for v in split]
            if len(values) > len(_SPLIT_NAMES):
                raise ValueError("more than three unnamed parts")
            parts = dict(zip(_SPLIT_NAMES, values, strict=False))
    except ValueError as exc:
        raise ConfigError(f"invalid split {split!r}: {exc}") from exc
    total = sum(parts.values())
    bad_name = [n for n in parts if not n or "/" in n or n.startswith(".")]
    if not parts or total <= 0 or any(v < 0 or not math.isfinite(v) for v in parts.values()):
        raise ConfigError(f"invalid split {split!r}: needs non-negative fractions with a sum > 0")
    if bad_name:
        raise ConfigError(f"invalid split names {bad_name}")
    return {k: v / total for k, v in parts.items()}


def assign_splits(n: int, fractions: Mapping[str, float], *, seed: int) -> dict[str, list[int]]:
    """Deterministically assign ``n`` items to splits (shuffled by ``seed``).

    Counts follow the fractions exactly up to rounding (largest remainders).

    Examples
    --------
    >>> parts = assign_splits(10, {"train": 0.8, "valid": 0.2}, seed=0)
    >>> {k: len(v) for k, v in parts.items()}, sorted(parts["train"] + parts["valid"])
    ({'train': 8, 'valid': 2}, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> assign_splits(10, {"train": 0.8, "valid": 0.2}, seed=0) == parts
    True
    """
    order = np.random.default_rng(seed).permutation(n).tolist()
    exact = {k: f * n for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(exact).index(k)))[:left]:
        counts[k] += 1
    out: dict[str, list[int]] = {}
    start = 0
    for k in fractions:
        out[k] = order[start : start + counts[k]]
        start += counts[k]
    return out


def shard_names(split: str, shards: int, *, suffix: str = ".tfrecord") -> list[str]:
    """File names of one split: ``train.tfrecord`` or ``train.tfrecord-00000-of-00004``...

    Examples
    --------
    >>> shard_names("train", 2)
    ['train.tfrecord-00000-of-00002', 'train.tfrecord-00001-of-00002']
    """
    if shards == 1:
        return [f"{split}{suffix}"]
    return [f"{split}{suffix}-{i:05d}-of-{shards:05d}" for i in range(shards)]


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
    """The options of :func:`convert`, for the ``convert_<format>`` calls that pass them on.

    Every key is one of :func:`convert` 's keyword parameters (see there); a
    name not listed here is a type error, and a :class:`ConfigError` at run time.
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
    *,
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

    Raises
    ------
    AnnotationError
        Under ``on_error="fail"`` when there is any problem; it lists every
        one (``.problems``) and nothing is written.
    ConfigError
        On invalid options or an existing output without ``overwrite``.
    """
    started = time.perf_counter()
    policy = _check_options(
        source,
        on_error=on_error,
        shards=shards,
        jpeg_format=jpeg_format,
        include_masks=include_masks,
        executor=executor,
    )
    fractions = parse_split(split)
    lm = resolve_label_map(
        source, label_map, add_unknown=add_unknown, keep_category_ids=keep_category_ids
    )
    out = Path(out_dir)
    names = {name: shard_names(name, shards) for name in fractions}
    _claim_out_dir(out, names, overwrite=overwrite)

    keep, dup_problems = _duplicates(source)
    problems: list[Problem] = list(source.problems) + dup_problems
    if policy == "fail" and problems:
        log.info("%d problem(s) while parsing; checking the images too", len(problems))
    images = [source.images[i] for i in keep]
    assignment = assign_splits(len(images), fractions, seed=seed)
    if not shuffle:
        assignment = {k: sorted(v) for k, v in assignment.items()}
    ctx = _Context(
        lm,
        policy,
        source.format,
        include_masks,
        jpeg_format,
        decode_images,
        *_parse_problem_index(source),
    )
    summary = ConversionSummary(
        out_dir=os.fspath(out),
        source=source.source,
        format=source.format,
        label_map=lm,
        splits={name: SplitSummary(name, list(names[name])) for name in fractions},
    )
    n_workers = max(1, workers if workers is not None else min(os.cpu_count() or 1, _MAX_THREADS))
    chunk = max(1, min(_CHUNK, -(-len(images) // n_workers)))
    with _open_writers(out, names) as writers:
        output = _Output(
            writers, summary, problems, skip_empty=skip_empty, total=len(images), progress=progress
        )
        chunks = _chunks(assignment, keep, images, chunk)
        _run_chunks(executor, n_workers, output, ctx, chunks)
        _settle_problems(problems, policy, source.source)
    summary.problems = problems
    if policy != "fail":
        summary.skipped_images += len(dup_problems)
    for p in problems:
        log.warning("%s (%s)", p, "skipped" if policy == "skip" else "repaired or skipped")
    summary.seconds = time.perf_counter() - started
    _write_sidecars(out, summary)
    return summary
