"""Regions of interest: QuPath CSV and GeoJSON polygons, and tile selection.

A CSV as exported from QuPath has one vertex per row with columns
``ROI_name, X_base, Y_base`` (and optionally ``label``); consecutive rows with
the same name form one polygon. GeoJSON may be a ``FeatureCollection``, a
``Feature`` or a bare geometry, with ``Polygon`` and ``MultiPolygon`` (holes
included). Coordinates are level-0 pixels.

Classified GeoJSON features (QuPath ``classification``) that describe tissue
rather than a region of interest are told apart by :func:`split_outlines`:
``Tissue`` features replace the detected tissue mask, and pen and artifact
classes (:data:`~tilestream.extract.outlines.EXCLUDED_CLASSES`) are removed
from the tissue, so the outline file an extraction writes (``<slide>.geojson``)
can be corrected in QuPath and given back through the same ROI options. All
other features are ROIs as before.

Examples
--------
>>> import numpy as np
>>> square = ROI(name="a", exterior=np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float))
>>> rois_contain([square], np.array([[5, 5], [15, 5]], float)).tolist()
[True, False]
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ROIError, StorageError, StorageNotFoundError
from tilestream.extract.outlines import EXCLUDED_CLASSES, TISSUE_CLASS, rasterize_polygons
from tilestream.storage import is_url, redact_url, store_for

__all__ = [
    "ROI",
    "load_rois",
    "outline_mask",
    "rasterize_rois",
    "roi_feature",
    "rois_contain",
    "split_outlines",
]


@dataclass(frozen=True)
class ROI:
    """One polygon with optional holes, in level-0 pixel coordinates."""

    name: str
    exterior: NDArray[np.float64]
    holes: tuple[NDArray[np.float64], ...] = ()
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the exterior."""
        xs, ys = self.exterior[:, 0], self.exterior[:, 1]
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _read_url(url: str, storage_options: Mapping[str, Any] | None) -> tuple[str, PurePath]:
    """The text of an ROI file at ``url`` and the name its messages use (no credentials)."""
    name = PurePosixPath(redact_url(url))
    try:
        store, key = store_for(url, storage_options)
        return store.read(key).decode("utf-8-sig"), name
    except StorageNotFoundError:
        raise ROIError("ROI file not found", path=redact_url(url)) from None
    except (StorageError, UnicodeDecodeError) as exc:
        raise ROIError(f"cannot read ROI file: {exc}", path=redact_url(url)) from None


def load_rois(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> list[ROI]:
    """Read ROIs from a QuPath CSV or a GeoJSON file (a path or a URL: ``s3://``, ``https://``).

    Raises
    ------
    ROIError
        When the file is missing, malformed, or holds a polygon with fewer than three points.
    """
    if is_url(path):
        text, p = _read_url(str(path), storage_options)
    else:
        p = Path(path)
        if not p.is_file():
            raise ROIError("ROI file not found", path=p)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ROIError(f"cannot read ROI file: {exc}", path=p) from exc
    if p.suffix.lower() in (".json", ".geojson") or text.lstrip().startswith("{"):
        rois = _from_geojson(text, p)
    else:
        rois = _from_csv(text, p)
    if not rois:
        raise ROIError("no ROI polygons in file", path=p)
    return rois


def _polygon(points: Any, p: PurePath, where: str) -> NDArray[np.float64]:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ROIError(f"{where}: coordinates are not numbers", path=p) from exc
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ROIError(f"{where}: coordinates must be a list of [x, y] points", path=p)
    arr = arr[:, :2]
    if len(arr) >= 2 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(arr) < 3:
        raise ROIError(f"{where}: a polygon needs at least 3 points, got {len(arr)}", path=p)
    if not np.isfinite(arr).all():
        raise ROIError(f"{where}: coordinates must be finite", path=p)
    return arr


def _from_csv(text: str, p: PurePath) -> list[ROI]:
    reader = csv.DictReader(text.splitlines())
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    missing = [c for c in ("roi_name", "x_base", "y_base") if c not in cols]
    if missing:
        raise ROIError(
            f"ROI CSV needs columns ROI_name, X_base, Y_base; missing {', '.join(missing)}", path=p
        )
    groups: dict[str, list[tuple[float, float]]] = {}
    labels: dict[str, str | None] = {}
    for lineno, row in enumerate(reader, start=2):
        name = (row[cols["roi_name"]] or "").strip()
        try:
            x, y = float(row[cols["x_base"]]), float(row[cols["y_base"]])
        except (TypeError, ValueError) as exc:
            raise ROIError(f"line {lineno}: X_base/Y_base are not numbers", path=p) from exc
        groups.setdefault(name, []).append((x, y))
        if "label" in cols:
            labels[name] = (row[cols["label"]] or "").strip() or None
    return [
        ROI(name=name, exterior=_polygon(pts, p, f"ROI {name!r}"), label=labels.get(name))
        for name, pts in groups.items()
    ]


def _from_geojson(text: str, p: PurePath) -> list[ROI]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ROIError(f"not valid JSON: {exc}", path=p) from exc
    if not isinstance(data, dict):
        raise ROIError("GeoJSON must be an object", path=p)
    if data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise ROIError("FeatureCollection without a 'features' list", path=p)
    elif data.get("type") == "Feature":
        features = [data]
    else:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    rois: list[ROI] = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            raise ROIError(f"feature {i} is not an object", path=p)
        props = feat.get("properties") or {}
        name = str(props.get("name") or feat.get("id") or f"roi_{i}")
        label = _label(props)
        geom = feat.get("geometry")
        if not isinstance(geom, dict):
            raise ROIError(f"feature {i} ({name}) has no geometry", path=p)
        gtype, coords = geom.get("type"), geom.get("coordinates")
        polys: Any
        if gtype == "Polygon":
            polys = [coords]
        elif gtype == "MultiPolygon":
            polys = coords if isinstance(coords, list) else None
        elif gtype in ("Point", "MultiPoint", "LineString", "MultiLineString"):
            continue  # annotations that are not areas select no tiles
        else:
            raise ROIError(f"feature {i} ({name}): unsupported geometry type {gtype!r}", path=p)
        if not isinstance(polys, list):
            raise ROIError(f"feature {i} ({name}): coordinates missing", path=p)
        for j, rings in enumerate(polys):
            if not isinstance(rings, list) or not rings:
                raise ROIError(f"feature {i} ({name}) polygon {j}: no rings", path=p)
            where = f"feature {i} ({name}) polygon {j}"
            ext = _polygon(rings[0], p, where)
            holes = tuple(_polygon(r, p, f"{where} hole {k}") for k, r in enumerate(rings[1:]))
            rois.append(ROI(name=name, exterior=ext, holes=holes, label=label, extra=dict(props)))
    return rois


def _label(props: dict[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, str):
        return cls
    return str(props["label"]) if props.get("label") else None


def _points_in_polygon(poly: NDArray[np.float64], pts: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Even-odd ray casting, vectorised over points (loop over edges only)."""
    x, y = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), bool)
    xj, yj = poly[-1]
    for xi, yi in poly:
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < xint)
        xj, yj = xi, yi
    return inside


def rois_contain(rois: Sequence[ROI], points: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Whether each ``(x, y)`` point lies inside any ROI (outside its holes)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    result = np.zeros(len(pts), bool)
    for roi in rois:
        xmin, ymin, xmax, ymax = roi.bounds
        cand = (pts[:, 0] >= xmin) & (pts[:, 0] <= xmax) & (pts[:, 1] >= ymin) & (pts[:, 1] <= ymax)
        if not cand.any():
            continue
        sub = pts[cand]
        inside = _points_in_polygon(roi.exterior, sub)
        for hole in roi.holes:
            inside &= ~_points_in_polygon(hole, sub)
        result[cand] |= inside
    return result


def rasterize_rois(
    rois: Sequence[ROI], shape: tuple[int, int], downsample: float
) -> NDArray[np.bool_]:
    """A boolean mask of ``shape`` (rows, cols) where each pixel is ``downsample`` level-0 pixels.

    A pixel is inside when its centre is inside an ROI and outside its holes
    (:func:`tilestream.extract.outlines.rasterize_polygons`), so a mask traced
    into polygons and rasterised again is the same mask.
    """
    return rasterize_polygons([(r.exterior, *r.holes) for r in rois], shape, downsample)


def split_outlines(
    rois: Sequence[ROI], excluded_classes: Iterable[str] = EXCLUDED_CLASSES
) -> tuple[list[ROI], list[ROI], list[ROI]]:
    """``(regions of interest, tissue outlines, excluded regions)`` by classification.

    ``Tissue`` (any case) is a tissue outline; the pen and artifact classes
    ``excluded_classes`` (any case) are excluded regions; everything else
    (unclassified included) is a region of interest.
    """
    excluded = {c.lower() for c in excluded_classes}
    plain: list[ROI] = []
    tissue: list[ROI] = []
    drop: list[ROI] = []
    for roi in rois:
        label = (roi.label or "").strip().lower()
        if label == TISSUE_CLASS.lower():
            tissue.append(roi)
        elif label in excluded:
            drop.append(roi)
        else:
            plain.append(roi)
    return plain, tissue, drop


def outline_mask(
    tissue: Sequence[ROI],
    excluded: Sequence[ROI],
    detected: NDArray[np.bool_],
    downsample: float,
) -> NDArray[np.bool_]:
    """The tissue mask an outline file gives: its ``Tissue`` outlines (else ``detected``)
    without its excluded regions, on the grid of ``detected``."""
    shape = (int(detected.shape[0]), int(detected.shape[1]))
    mask = rasterize_rois(tissue, shape, downsample) if tissue else detected.copy()
    if excluded:
        mask &= ~rasterize_rois(excluded, shape, downsample)
    return mask


def roi_feature(roi: ROI) -> dict[str, Any]:
    """``roi`` as a GeoJSON ``Feature`` (its properties kept), to be read back by :func:`load_rois`."""
    rings = [[*pts, pts[0]] for pts in (r.tolist() for r in (roi.exterior, *roi.holes))]
    props: dict[str, Any] = {"objectType": "annotation", **roi.extra, "name": roi.name}
    if roi.label is not None and "classification" not in props:
        props["classification"] = {"name": roi.label}
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": rings},
        "properties": props,
    }
