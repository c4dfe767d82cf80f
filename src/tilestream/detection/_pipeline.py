"""The per-image work of a conversion and the pipeline that writes it in order.

:func:`_process` turns one annotated image into its record in named steps
(:func:`_load` the bytes into a reused buffer, :func:`_frame` the size the
boxes are in, :func:`check_objects`, :func:`_format_features` and
:func:`_mask_feature`, then :func:`_assemble` the record around the image
bytes). :func:`_run_chunks` runs chunks of images on a pool and writes their
results in order; the pool is a stage: :class:`_ThreadStage` (each worker
writes its own chunk when its turn comes) or :class:`_ProcessStage` (the
calling thread writes). Private to :mod:`tilestream.detection.convert`.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tilestream.detection.annotations import ImageAnnotation, ObjectAnnotation, Problem
from tilestream.detection.images import ImageBytes, ImageReadError, header_size, load_image_bytes
from tilestream.detection.labelmap import LabelMap
from tilestream.detection.masks import annotation_mask, mask_to_png
from tilestream.detection.schema import MASK_KEY, record_parts
from tilestream.detection.validate import OnError, check_objects
from tilestream.tfrecord import Feature, TFRecordWriter

if TYPE_CHECKING:
    from tilestream.detection.summary import ConversionSummary

ProgressCallback = Callable[[int, int], None]
#: One chunk: its split and its ``(image number, image)`` pairs.
Chunk = tuple[str, list[tuple[int, ImageAnnotation]]]


# --------------------------------------------------------------------------- per image


@dataclass
class _Context:
    label_map: LabelMap
    on_error: OnError
    format: str
    include_masks: bool
    jpeg_format: str
    decode: bool
    reported: dict[int, set[int]]  # image number -> objects already reported
    image_problems: set[int]  # image numbers with a parse problem


@dataclass
class _Result:
    record: bytes | memoryview | None  # a view of a worker's _RecordBuffer
    problems: list[Problem]
    texts: list[str] = field(default_factory=list)
    dropped: int = 0
    clipped: int = 0
    reencoded: bool = False


class _RecordBuffer:
    """One worker's reused memory for the records of a chunk.

    Each image is read straight into its record's place, the record's few
    other bytes are put around it, and the writer takes a view of the result:
    no fresh allocation and no copy per image. (Fresh allocations on worker
    threads cost page faults: glibc gives each thread an arena and trims it
    as the images are freed.) :meth:`reset` once the chunk is written.
    """

    def __init__(self, size: int = 1 << 21) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0

    def read(self, f: io.FileIO, headroom: int, tailroom: int) -> tuple[memoryview | bytes, int]:
        """Read the whole file into the buffer, ``headroom`` bytes after the last record.

        Returns the image's bytes and where they start in :attr:`view` (-1
        when they are not in it: a file that grew while read).
        """
        n = os.fstat(f.fileno()).st_size
        need = headroom + n + 1 + tailroom
        if self.pos + need > len(self.buf):
            # earlier records of the chunk keep the old buffer alive through their views
            self.buf = bytearray(max(2 * len(self.buf), 2 * need))
            self.view = memoryview(self.buf)
            self.pos = 0
        start = self.pos + headroom
        # Ask for one byte more than the size: getting exactly the size is the end of a
        # regular file, so one read call usually does (readall makes two).
        got = 0
        while True:
            k = f.readinto(self.view[start + got : start + n + 1])
            if not k:
                break
            got += k
            if got >= n:
                break
        if got > n:  # more than fstat said: a pipe, or a file that grew
            return bytes(self.view[start : start + got]) + f.read(), -1
        self.pos = start + got + tailroom
        return self.view[start : start + got], start


def _load(
    image: ImageAnnotation,
    decode: bool,
    buffer: _RecordBuffer | None,
    headroom: int,
    tailroom: int,
) -> tuple[ImageBytes, int] | Problem:
    """The image's bytes and size, and where they start in ``buffer`` (-1: not there).

    Returns the :class:`Problem` instead when the file is missing, unreadable,
    or not an image.
    """
    spath = image.image_path
    try:
        with open(spath, "rb", buffering=0) as f:
            if buffer is None:
                data: bytes | memoryview = f.readall()
                start = -1
            else:
                data, start = buffer.read(f, headroom, tailroom)
    except FileNotFoundError:
        msg = f"image file {spath} not found"
        return Problem("missing_image", image.source, msg, image=image.filename)
    except OSError as exc:
        msg = f"cannot read image {spath}: {exc}"
        return Problem("unreadable_image", image.source, msg, image=image.filename)
    try:
        found = None if decode else header_size(data)
        if found is not None:
            return ImageBytes(data, *found, reencoded=False), start
        # decode, or not a JPEG or PNG with a size in its header: Pillow looks
        return load_image_bytes(bytes(data), decode=decode), -1
    except ImageReadError as exc:
        msg = f"image {spath}: {exc}"
        return Problem("unreadable_image", image.source, msg, image=image.filename)


def _frame(image: ImageAnnotation, img: ImageBytes) -> tuple[float, float, list[Problem]]:
    """The frame the boxes are in: the stated size (else the real one), 1 x 1 when normalised.

    The problem list holds a ``size_mismatch`` when the stated size is not the real one.
    """
    problems: list[Problem] = []
    width, height = float(img.width), float(img.height)
    if image.width is not None and image.height is not None:
        if (image.width, image.height) != (img.width, img.height):
            problems.append(
                Problem(
                    "size_mismatch",
                    image.source,
                    f"the annotation says {image.width}x{image.height}, the image "
                    f"{image.image_path} is {img.width}x{img.height}",
                    image=image.filename,
                )
            )
        width, height = float(image.width), float(image.height)
    if image.normalized:
        width = height = 1.0
    return width, height, problems


#: The source formats with keys of their own.
_EXTRA_FORMATS = frozenset({"voc", "coco"})


def _format_features(fmt: str, objects: list[ObjectAnnotation]) -> dict[str, Feature]:
    """The keys only one source format fills (VOC flags, COCO crowd and area)."""
    extra: dict[str, Feature] = {}
    if fmt == "voc":
        extra["image/object/difficult"] = Feature.int64_list([int(o.difficult) for o in objects])
        extra["image/object/truncated"] = Feature.int64_list([int(o.truncated) for o in objects])
        extra["image/object/view"] = Feature.bytes_list([o.view for o in objects])
    elif fmt == "coco":
        extra["image/object/is_crowd"] = Feature.int64_list([int(o.is_crowd) for o in objects])
        areas = [
            o.area if o.area is not None else (o.xmax - o.xmin) * (o.ymax - o.ymin) for o in objects
        ]
        extra["image/object/area"] = Feature.float_list(np.asarray(areas, dtype=np.float32))
    return extra


def _mask_feature(image: ImageAnnotation, kept: list[int], img: ImageBytes) -> Feature | Problem:
    """One PNG mask per kept object, from its segmentation; or the first that cannot be made."""
    pngs: list[bytes] = []
    for i in kept:
        obj = image.objects[i]
        try:
            if obj.segmentation is None:
                raise ValueError("the object has no segmentation")
            mask = annotation_mask(obj.segmentation, height=img.height, width=img.width)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return Problem(
                "malformed_annotation",
                image.source,
                f"cannot make a mask: {exc}",
                image=image.filename,
                object=i,
                label=obj.label,
            )
        pngs.append(mask_to_png(mask))
    return Feature.bytes_list(pngs)


def _assemble(
    buffer: _RecordBuffer | None,
    start: int,
    data: bytes | memoryview,
    head: bytes,
    tail: bytes,
    headroom: int,
    tailroom: int,
) -> bytes | memoryview:
    """The record ``head + data + tail``: in place around ``data`` when it is in ``buffer``.

    ``headroom`` and ``tailroom`` are the room :meth:`_RecordBuffer.read` left.
    """
    if buffer is not None and start >= 0 and len(head) <= headroom and len(tail) <= tailroom:
        end = start + len(data)
        buf = buffer.view
        buf[start - len(head) : start] = head
        buf[end : end + len(tail)] = tail
        return buf[start - len(head) : end + len(tail)]
    return b"".join([head, data, tail])


def _process(
    number: int, image: ImageAnnotation, ctx: _Context, buffer: _RecordBuffer | None = None
) -> _Result:
    """Image ``number`` as its record, or ``None`` and the problems that keep it out."""
    headroom = 320 + 4 * (len(image.filename) + len(image.source_id))  # room for the head
    tailroom = 512 + 128 * len(image.objects)  # and the tail, but for masks: else one join
    loaded = _load(image, ctx.decode, buffer, headroom, tailroom)
    if isinstance(loaded, Problem):
        return _Result(None, [loaded])
    img, start = loaded
    width, height, problems = _frame(image, img)
    check = check_objects(
        image,
        width,
        height,
        ctx.label_map,
        on_error=ctx.on_error,
        reported=ctx.reported.get(number, ()),
    )
    problems.extend(check.problems)
    if (problems and ctx.on_error != "clip") or (
        ctx.on_error == "skip" and number in ctx.image_problems
    ):
        return _Result(None, problems)
    objects = image.objects  # usually every object is kept
    if len(check.kept) != len(objects):
        objects = [objects[i] for i in check.kept]
    extra = _format_features(ctx.format, objects) if ctx.format in _EXTRA_FORMATS else {}
    if ctx.include_masks:
        masks = _mask_feature(image, check.kept, img)
        if isinstance(masks, Problem):
            problems.append(masks)
            return _Result(None, problems)
        extra[MASK_KEY] = masks
    texts = [o.label for o in objects]
    head, tail = record_parts(
        filename=image.filename,
        source_id=image.source_id,
        size=len(img.data),
        image_format=ctx.jpeg_format if img.format == "jpeg" else img.format,
        width=img.width,
        height=img.height,
        boxes=check.boxes,
        texts=texts,
        labels=check.labels,
        extra=extra,
        sha256=hashlib.sha256(img.data).hexdigest(),
    )
    record = _assemble(buffer, start, img.data, head, tail, headroom, tailroom)
    return _Result(record, problems, texts, check.dropped, check.clipped, img.reencoded)


def _process_chunk(
    items: list[tuple[int, ImageAnnotation]], ctx: _Context, buffer: _RecordBuffer | None = None
) -> list[_Result]:
    if buffer is not None:
        buffer.reset()
    return [_process(number, image, ctx, buffer) for number, image in items]


def _chunks(
    assignment: Mapping[str, list[int]],
    numbers: list[int],
    images: list[ImageAnnotation],
    size: int,
) -> Iterator[Chunk]:
    for split_name, members in assignment.items():
        for start in range(0, len(members), size):
            part = members[start : start + size]
            yield split_name, [(numbers[j], images[j]) for j in part]


# --------------------------------------------------------------------------- in order


@dataclass
class _Output:
    """The open writers and the running summary: takes each chunk's results in order."""

    writers: dict[str, list[TFRecordWriter]]
    summary: ConversionSummary
    problems: list[Problem]
    skip_empty: bool
    total: int
    progress: ProgressCallback | None
    done: int = 0
    written: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.written = dict.fromkeys(self.writers, 0)

    def add(self, split_name: str, results: list[_Result]) -> None:
        summary = self.summary
        split = summary.splits[split_name]
        writers = self.writers[split_name]
        shards = len(writers)
        progress = self.progress
        done, k = self.done, self.written[split_name]  # as locals in the loop
        try:
            for res in results:
                done += 1
                if res.problems:
                    self.problems.extend(res.problems)
                if res.record is None:
                    summary.skipped_images += 1
                elif self.skip_empty and not res.texts:
                    summary.skipped_empty += 1
                else:
                    writers[k % shards].write(res.record)  # a buffer: written without a copy
                    k += 1
                    split.images += 1
                    split.objects += len(res.texts)
                    split.negatives += not res.texts
                    split.classes.update(res.texts)
                    summary.dropped_objects += res.dropped
                    summary.clipped_boxes += res.clipped
                    summary.reencoded_images += res.reencoded
                if progress is not None:
                    progress(done, self.total)
        finally:
            self.done, self.written[split_name] = done, k


class _Stage:
    """Where chunks are processed: a pool, how a chunk goes in and how its result is written."""

    def __init__(self, output: _Output, ctx: _Context, pool: Executor) -> None:
        self.output = output
        self.ctx = ctx
        self.pool = pool

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)

    def submit(
        self, seq: int, split_name: str, items: list[tuple[int, ImageAnnotation]]
    ) -> Future[Any]:
        """Start chunk number ``seq``."""
        raise NotImplementedError

    def finish(self, split_name: str, future: Future[Any]) -> None:
        """Wait for a chunk (the oldest in flight); re-raise its error."""
        future.result()

    def stop(self) -> None:
        """Let no chunk still waiting for its turn write (after an error)."""


class _ProcessStage(_Stage):
    """Worker processes process each chunk; the calling thread writes the results."""

    def __init__(self, output: _Output, ctx: _Context, workers: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        super().__init__(output, ctx, ProcessPoolExecutor(workers, mp_context=spawn))

    def submit(
        self, seq: int, split_name: str, items: list[tuple[int, ImageAnnotation]]
    ) -> Future[Any]:
        return self.pool.submit(_process_chunk, items, self.ctx)

    def finish(self, split_name: str, future: Future[Any]) -> None:
        self.output.add(split_name, future.result())


class _ThreadStage(_Stage):
    """Thread-pool jobs that process a chunk, then write it when its turn comes.

    Each worker serialises its own chunk as soon as every earlier chunk is
    written, so results are not handed back to the calling thread (one thread
    fewer competing for the GIL and the cores) and the output order stays the
    order of submission. The pool takes jobs in order, so the job whose turn it
    is has always started: no job waits for one that cannot run.
    """

    def __init__(self, output: _Output, ctx: _Context, workers: int) -> None:
        super().__init__(output, ctx, ThreadPoolExecutor(workers, "tilestream-detection"))
        self.turn = 0
        self.stopped = False
        self.cond = threading.Condition()
        self.local = threading.local()

    def submit(
        self, seq: int, split_name: str, items: list[tuple[int, ImageAnnotation]]
    ) -> Future[Any]:
        return self.pool.submit(self.job, seq, split_name, items)

    def job(self, seq: int, split_name: str, items: list[tuple[int, ImageAnnotation]]) -> None:
        buffer = getattr(self.local, "buffer", None)
        if buffer is None:
            buffer = self.local.buffer = _RecordBuffer()
        try:
            results = _process_chunk(items, self.ctx, buffer)
        except BaseException:
            self.stop()
            raise
        with self.cond:
            while self.turn != seq and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return
            try:
                self.output.add(split_name, results)
            except BaseException:
                self.stopped = True
                raise
            finally:
                self.turn += 1
                self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _in_order(stage: _Stage, chunks: Iterator[Chunk], window: int) -> None:
    """Submit every chunk to ``stage``, at most ``window`` in flight; finish them in order."""
    pending: deque[tuple[str, Future[Any]]] = deque()
    try:
        for seq, (split_name, items) in enumerate(chunks):
            pending.append((split_name, stage.submit(seq, split_name, items)))
            if len(pending) >= window:
                stage.finish(*pending.popleft())
        while pending:
            stage.finish(*pending.popleft())
    finally:
        if pending:
            stage.stop()
            for _, fut in pending:
                fut.cancel()


def _run_chunks(
    executor: str, workers: int, output: _Output, ctx: _Context, chunks: Iterator[Chunk]
) -> None:
    """Process ``chunks`` on ``workers`` threads (or processes) and write them in order.

    Two chunks per worker are in flight at most, so memory stays bounded.
    """
    stage_type = _ProcessStage if executor == "process" and workers > 1 else _ThreadStage
    with stage_type(output, ctx, workers) as stage:
        _in_order(stage, chunks, 2 * workers)
