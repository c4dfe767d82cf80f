"""Checking one image's objects against its size, the label map and the error policy.

The policy (``on_error``) decides what a problem does:

``"fail"``
    Nothing is written; every problem of the whole data set is reported at
    the end in one :class:`~tilestream.errors.AnnotationError`.
``"skip"``
    An image with any problem is left out (so no image is kept with some of
    its objects missing).
``"clip"``
    Repair what can be repaired: boxes beyond the image are clipped to it,
    objects that cannot be repaired (degenerate or unreadable boxes, empty or
    unknown classes) are dropped; images that cannot be used (missing,
    unreadable, duplicated) are left out. An image whose stated size differs
    from the real one is kept, its boxes scaled by the stated size.

Examples
--------
>>> from tilestream.detection.annotations import ImageAnnotation, ObjectAnnotation
>>> from tilestream.detection.labelmap import LabelMap
>>> img = ImageAnnotation("a.jpg", "a.jpg", source="a.xml", width=10, height=10,
...     objects=[ObjectAnnotation(-2, 0, 5, 5, "cat"), ObjectAnnotation(3, 3, 3, 8, "cat")])
>>> res = check_objects(img, 10, 10, LabelMap.from_names(["cat"]), on_error="clip")
>>> [str(p.kind) for p in res.problems], res.kept, res.clipped, res.dropped
(['box_outside', 'degenerate_box'], [0], 1, 1)
>>> res.boxes
[(0.0, 0.0, 0.5, 0.5)]
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from tilestream.detection.annotations import ImageAnnotation, Problem
from tilestream.detection.labelmap import LabelMap
from tilestream.errors import AnnotationError, ConfigError

__all__ = ["ObjectCheck", "OnError", "check_objects", "check_on_error", "raise_problems"]

OnError = Literal["fail", "skip", "clip"]

# Boxes may exceed the image by rounding noise (e.g. normalised 1.0000001).
_EPS = 1e-6

Box = tuple[float, float, float, float]


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` value."""
    if on_error not in ("fail", "skip", "clip"):
        raise ConfigError(f"on_error must be 'fail', 'skip' or 'clip', not {on_error!r}")
    return on_error  # type: ignore[return-value]


@dataclass
class ObjectCheck:
    """What :func:`check_objects` found and kept."""

    problems: list[Problem] = field(default_factory=list)
    #: Indices of the objects kept, in order.
    kept: list[int] = field(default_factory=list)
    #: Their boxes, normalised ``(xmin, ymin, xmax, ymax)``.
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    clipped: int = 0
    dropped: int = 0


def check_objects(
    image: ImageAnnotation,
    width: float,
    height: float,
    label_map: LabelMap,
    *,
    on_error: OnError,
    reported: Collection[int] = (),
) -> ObjectCheck:
    """Check ``image`` 's objects in a ``width x height`` frame (1 x 1 when normalised).

    Parameters
    ----------
    reported
        Objects whose problem the parser already reported (their box is NaN
        or their class unusable): dropped without a second report.
    """
    res = ObjectCheck()
    eps = _EPS * max(width, height, 1.0)
    get = label_map.get
    lo, wmax, hmax = -eps, width + eps, height + eps
    kept, boxes, labels = res.kept, res.boxes, res.labels
    for i, obj in enumerate(image.objects):
        xmin, ymin, xmax, ymax = obj.xmin, obj.ymin, obj.xmax, obj.ymax
        label_id = get(obj.label)
        # The usual case first: a known class and a box inside the image (every
        # comparison with a NaN is false, so NaN and infinite boxes take the full path).
        if (
            label_id is not None
            and lo <= xmin < xmax <= wmax
            and lo <= ymin < ymax <= hmax
            and i not in reported
        ):
            kept.append(i)
            if xmin >= 0.0 and ymin >= 0.0 and xmax <= width and ymax <= height:
                # inside the frame: each quotient is already in [0, 1]
                boxes.append((xmin / width, ymin / height, xmax / width, ymax / height))
            else:  # within rounding noise of an edge
                boxes.append(_normalised((xmin, ymin, xmax, ymax), width, height))
            labels.append(label_id)
            continue
        box = _check_one(res, image, i, label_id, (width, height, eps), on_error, i in reported)
        if box is None or label_id is None:
            res.dropped += 1
            continue
        kept.append(i)
        boxes.append(_normalised(box, width, height))
        labels.append(label_id)
    return res


def _normalised(box: Box, width: float, height: float) -> Box:
    """``box`` as fractions of the frame, each clamped to [0, 1]."""
    xmin, ymin, xmax, ymax = box
    return (
        min(max(xmin / width, 0.0), 1.0),
        min(max(ymin / height, 0.0), 1.0),
        min(max(xmax / width, 0.0), 1.0),
        min(max(ymax / height, 0.0), 1.0),
    )


def _check_one(
    res: ObjectCheck,
    image: ImageAnnotation,
    i: int,
    label_id: int | None,
    frame: tuple[float, float, float],
    on_error: OnError,
    reported: bool,
) -> Box | None:
    """Report object ``i`` 's problems into ``res``; return its usable box (clipped), if any.

    ``frame`` is ``(width, height, tolerance)``. A parser-reported object is
    dropped without a report.
    """
    obj = image.objects[i]
    xmin, ymin, xmax, ymax = obj.xmin, obj.ymin, obj.xmax, obj.ymax
    width, height, eps = frame
    if reported or not math.isfinite(xmin + ymin + xmax + ymax):
        if not reported:
            msg = f"box {(xmin, ymin, xmax, ymax)} is not finite"
            _problem(res, image, i, obj.label, "bad_box", msg)
        return None
    if label_id is None:
        if not obj.label.strip():
            _problem(res, image, i, obj.label, "empty_class", "the class name is empty")
        else:
            msg = f"class {obj.label!r} is not in the label map"
            _problem(res, image, i, obj.label, "unknown_class", msg)
    where = f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
    if xmax <= xmin or ymax <= ymin:
        msg = f"{where} has no area (needs xmax > xmin and ymax > ymin)"
        _problem(res, image, i, obj.label, "degenerate_box", msg)
        return None
    if xmin < -eps or ymin < -eps or xmax > width + eps or ymax > height + eps:
        msg = f"{where} extends beyond the image ({width:g}x{height:g})"
        _problem(res, image, i, obj.label, "box_outside", msg)
        if on_error != "clip":
            return None
        xmin, xmax = min(max(xmin, 0.0), width), min(max(xmax, 0.0), width)
        ymin, ymax = min(max(ymin, 0.0), height), min(max(ymax, 0.0), height)
        if not (xmax > xmin and ymax > ymin):
            return None
        res.clipped += 1
    return (xmin, ymin, xmax, ymax)


def _problem(
    res: ObjectCheck, image: ImageAnnotation, i: int, label: str, kind: str, message: str
) -> None:
    res.problems.append(
        Problem(kind, image.source, message, image=image.filename, object=i, label=label or None)
    )


def raise_problems(problems: list[Problem], *, source: str, limit: int | None = None) -> None:
    """Raise one :class:`~tilestream.errors.AnnotationError` listing ``problems``.

    The exception's ``problems`` attribute holds them all; the message lists
    every one (or the first ``limit``, with a count of the rest).
    """
    shown = problems if limit is None else problems[:limit]
    lines = [f"  {p}" for p in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    err = AnnotationError(
        f"{len(problems)} problem(s) ({counts}); nothing was written "
        "(on_error / --on-error 'skip' or 'clip' converts anyway):\n" + "\n".join(lines),
        path=source,
    )
    err.problems = list(problems)  # type: ignore[attr-defined]
    raise err
