"""Masks to polygons and back: tissue, pen and artifact outlines as QuPath GeoJSON.

A low-resolution mask is traced along the edges of its pixels (marching
squares on the pixel grid, no smoothing, collinear points dropped): every
4-connected region becomes one polygon, its enclosed background regions its
holes. Rings follow RFC 7946: the exterior counter-clockwise (positive
shoelace area in the coordinates as written), holes clockwise; coordinates are
level-0 pixels (mask pixel edges times the mask's downsample).

:func:`rasterize_polygons` samples each pixel at its centre, so tracing a mask
and rasterising its polygons gives back exactly the same mask: a tissue
outline exported by an extraction and given back unchanged as the slide's ROI
selects exactly the same tiles.

Examples
--------
>>> m = np.zeros((4, 5), bool); m[1:3, 1:4] = True; m[2, 2] = False
>>> polys = trace_polygons(m)
>>> len(polys), len(polys[0])
(1, 1)
>>> polys[0][0].tolist()
[[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [3.0, 3.0], [3.0, 2.0], [2.0, 2.0], [2.0, 3.0], [1.0, 3.0]]
>>> bool((rasterize_polygons(polys, m.shape) == m).all())
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tilestream._util.atomic import atomic_write

__all__ = [
    "CLASS_COLORS",
    "EXCLUDED_CLASSES",
    "TISSUE_CLASS",
    "class_name",
    "outline_areas_mm2",
    "outlines_geojson",
    "rasterize_polygons",
    "ring_area",
    "trace_polygons",
    "write_outlines",
]

#: The QuPath classification of the final tissue outline.
TISSUE_CLASS = "Tissue"
#: Colours (RGB) of the classes written; other classes get :data:`OTHER_COLOR`.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Tissue": (40, 90, 255),
    "Pen": (0, 170, 170),
    "Fold": (150, 60, 0),
    "Blur": (200, 0, 200),
    "Bubble": (255, 140, 0),
}
OTHER_COLOR = (255, 80, 80)
#: Classes a re-imported outline file subtracts from the tissue (pen and artifact regions).
#: :func:`tilestream.extract.select.outline_excluded_classes` adds one per reject reason.
EXCLUDED_CLASSES = (
    "Pen", "Ink", "Marker", "Fold", "Dark", "Thick", "Blur", "Focus", "Out_of_focus",
    "Bubble", "Air", "Edge", "Coverslip", "Debris", "Artifact",
)  # fmt: skip

#: A polygon: its exterior ring, then its holes; each ``(n, 2)`` ``x, y`` without repeating
#: the first point.
Polygon = list[NDArray[np.float64]]

#: Rows of a mask rasterised at once (bounds the memory of the span counts).
_BAND = 512

# direction codes of boundary edges: +x, +y, -x, -y (x = column, y = row)
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def class_name(key: str) -> str:
    """The QuPath class name of a QC mask key: ``"pen" -> "Pen"``, ``"tissue" -> "Tissue"``."""
    return key[:1].upper() + key[1:]


def ring_area(ring: NDArray[np.float64]) -> float:
    """Signed shoelace area: positive for counter-clockwise in ``x`` right, ``y`` up."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _nonzero(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.nonzero`` of a 2-D mask (row-major order), several times faster for sparse masks."""
    flat = np.flatnonzero(mask)
    return np.divmod(flat, mask.shape[1])


def _edges(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], ...]:
    """Directed boundary edges, foreground on the right when looking along them (y down)."""
    m = np.pad(np.asarray(mask, bool), 1)
    # horizontal edges at y = r between rows r-1 and r (padded rows r and r+1)
    above, below = m[:-1, 1:-1], m[1:, 1:-1]
    r_dn, c_dn = _nonzero(below & ~above)  # foreground below: +x from (c, r)
    r_up, c_up = _nonzero(above & ~below)  # foreground above: -x from (c+1, r)
    # vertical edges at x = c between columns c-1 and c
    left, right = m[1:-1, :-1], m[1:-1, 1:]
    r_l, c_l = _nonzero(left & ~right)  # foreground left: +y from (c, r)
    r_r, c_r = _nonzero(right & ~left)  # foreground right: -y from (c, r+1)
    x = np.concatenate([c_dn, c_up + 1, c_l, c_r])
    y = np.concatenate([r_dn, r_up, r_l, r_r + 1])
    d = np.concatenate(
        [np.full(len(c_dn), 0), np.full(len(c_up), 2), np.full(len(c_l), 1), np.full(len(c_r), 3)]
    )
    return x.astype(np.int64), y.astype(np.int64), d.astype(np.int64)


def _successors(
    x: NDArray[np.int64], y: NDArray[np.int64], d: NDArray[np.int64], width: int
) -> NDArray[np.int64]:
    """The next edge of each edge; at a saddle turn right, keeping diagonal pixels apart."""
    stride = width + 1
    key = (y * stride + x) * 4 + d
    order = np.argsort(key, kind="stable")
    skey = key[order]
    ex, ey = x + _DX[d], y + _DY[d]
    vertex = (ey * stride + ex) * 4
    nxt = np.full(len(x), -1, np.int64)
    # preference: turn right (d+1) first (saddles), then straight, then left (d+3)
    for turn in (3, 0, 1):
        want = vertex + (d + turn) % 4
        pos = np.clip(np.searchsorted(skey, want), 0, max(0, len(skey) - 1))
        hit = (skey[pos] == want) if len(skey) else np.zeros(0, bool)
        nxt = np.where(hit, order[pos], nxt)
    return nxt


def trace_polygons(mask: NDArray[np.bool_]) -> list[Polygon]:
    """Trace a boolean mask into polygons with holes, in mask pixel-edge coordinates.

    Returns
    -------
    list of Polygon
        One per 4-connected foreground region: ``[exterior, *holes]``, each an
        ``(n, 2)`` float array of ``(x, y)`` vertices (``x`` the column edge,
        ``y`` the row edge), exterior counter-clockwise and holes clockwise by
        :func:`ring_area`.
    """
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not rows.size:
        return []
    # traced in the mask's bounding box (the edges' order and rings do not change when
    # translated), then moved back: a small mask on a large image costs little
    y0, x0 = int(rows[0]), int(cols[0])
    polygons = _trace(m[y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1])
    if y0 or x0:
        offset = np.array([x0, y0], np.float64)
        for poly in polygons:
            for ring in poly:
                ring += offset
    return polygons


def _trace(m: NDArray[np.bool_]) -> list[Polygon]:
    """:func:`trace_polygons` of a 2-D mask with at least one foreground pixel."""
    x, y, d = _edges(m)
    nxt = _successors(x, y, d, m.shape[1])
    ring_of, rank = _cycles(nxt)
    # edges in ring order, each ring starting at its lowest-numbered edge
    order = np.lexsort((rank, ring_of))
    _, ring_of = np.unique(ring_of, return_inverse=True)
    ring_of = ring_of.reshape(-1)
    ords = ring_of[order]
    first = np.r_[0, np.flatnonzero(np.diff(ords)) + 1]
    prev_dir = np.roll(d[order], 1)
    prev_dir[first] = d[order][np.r_[first[1:], len(order)] - 1]  # each ring's last edge
    corner = d[order] != prev_dir  # a vertex where the direction changes
    sel = order[corner]
    sel_ring = ords[corner]
    bounds = np.r_[0, np.flatnonzero(np.diff(sel_ring)) + 1, len(sel)]
    xs, ys = x[sel].astype(np.float64), y[sel].astype(np.float64)
    # signed shoelace area of every ring at once
    nxt_pt = np.arange(len(sel)) + 1
    nxt_pt[bounds[1:] - 1] = bounds[:-1]
    cross = xs * ys[nxt_pt] - xs[nxt_pt] * ys
    areas = 0.5 * np.add.reduceat(cross, bounds[:-1])
    owner = _hole_owners(x, y, d, ring_of, areas)
    pts = np.stack([xs, ys], axis=1)
    coords = np.split(pts, bounds[1:-1])
    polygons: dict[int, Polygon] = {int(i): [coords[i]] for i in np.flatnonzero(areas > 0)}
    for hole, own in zip(np.flatnonzero(areas < 0).tolist(), owner.tolist(), strict=True):
        polygons[own].append(coords[hole])
    return [polygons[i] for i in sorted(polygons)]


def _cycles(nxt: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For a permutation made of cycles: each element's cycle (its lowest member) and its
    distance from that member along the cycle; by pointer doubling (numpy only)."""
    n = len(nxt)
    idx = np.arange(n)
    label = idx.copy()
    p = nxt.copy()
    # after k rounds label[i] is the lowest of the 2**k elements from i on; it is the
    # cycle's lowest once every element agrees with its successor
    while not np.array_equal(label, label[nxt]):
        label = np.minimum(label, label[p])
        p = p[p]
    # break every cycle before its lowest member; rank by distance to the end (Wyllie)
    last = nxt == label
    succ = np.where(last, idx, nxt)
    dist = np.where(last, 0, 1)
    while not last[succ].all():
        dist = dist + dist[succ]
        succ = succ[succ]
    length = np.bincount(label, minlength=n)[label]
    return label, length - 1 - dist


def _hole_owners(
    x: NDArray[np.int64],
    y: NDArray[np.int64],
    d: NDArray[np.int64],
    ring_of: NDArray[np.int64],
    areas: NDArray[np.float64],
) -> NDArray[np.int64]:
    """The exterior ring each hole (``areas < 0``, in ring order) belongs to.

    A hole's leftmost vertical edge ends a run of foreground pixels on its
    row; the edge starting that run belongs to the same region: its exterior,
    or another hole of it lying further left (followed to its exterior).
    """
    vert = np.flatnonzero((d == 1) | (d == 3))
    row = np.where(d[vert] == 1, y[vert], y[vert] - 1)
    vert = vert[np.lexsort((x[vert], row))]  # per row, by x: run starts and ends alternate
    run_start = np.empty(len(x), np.int64)
    run_start[vert[1::2]] = vert[0::2]
    ends = vert[1::2]  # run ends: their ring lies to the right
    ends = ends[areas[ring_of[ends]] < 0]
    ends = ends[np.lexsort((x[ends], ring_of[ends]))]
    ring_e = ring_of[ends]
    keep = np.ones(len(ends), bool)
    keep[1:] = ring_e[1:] != ring_e[:-1]  # each hole's leftmost edge
    left_of = np.arange(len(areas))
    left_of[ring_e[keep]] = ring_of[run_start[ends[keep]]]
    owner = left_of.copy()
    while True:
        hole = areas[owner] < 0
        if not hole.any():
            break
        owner = np.where(hole, left_of[owner], owner)
    return owner[areas < 0]


def rasterize_polygons(
    polygons: Sequence[Sequence[NDArray[np.floating]]],
    shape: tuple[int, int],
    scale: float = 1.0,
) -> NDArray[np.bool_]:
    """A mask of ``shape`` where each pixel's centre lies inside a polygon (outside its holes).

    ``polygons`` are ``[exterior, *holes]`` in units of ``scale`` mask pixels
    (level-0 pixels with ``scale`` the mask's downsample). Each polygon is
    filled even-odd over its rings; polygons are united. Pixel-edge polygons
    from :func:`trace_polygons` give back their mask exactly.
    """
    h, w = shape
    out = np.zeros((h, w), bool)
    rings = [np.asarray(r, np.float64) for rings in polygons for r in rings]
    owner = [k for k, rings in enumerate(polygons) for _ in rings]
    valid = np.array([r.ndim == 2 and len(r) >= 3 for r in rings], bool)
    if not valid.any() or h == 0 or w == 0:
        return out
    pts = np.concatenate([r[:, :2] for r, ok in zip(rings, valid, strict=True) if ok]) / scale
    sizes = np.array([len(r) for r in rings], np.int64)[valid]
    poly = np.repeat(np.asarray(owner, np.int64)[valid], sizes)
    following = np.arange(len(pts)) + 1  # each vertex's successor on its ring
    ends = np.cumsum(sizes)
    following[ends - 1] = ends - sizes
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = x0[following], y0[following]
    # rows whose centre line y = r + 0.5 an edge crosses (half-open: ylo <= y < yhi)
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    r_first = np.maximum(np.ceil(ylo - 0.5), 0).astype(np.int64)
    n = np.maximum(np.minimum(np.ceil(yhi - 0.5), h).astype(np.int64) - r_first, 0)
    edge = np.repeat(np.arange(len(n)), n)
    rows = r_first[edge] + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    # pixel c lies right of a crossing when c + 0.5 > xc; per polygon and row the sorted
    # crossings pair up into the spans inside it (even-odd), and spans are united
    col = np.clip(np.floor(xc - 0.5).astype(np.int64) + 1, 0, w)
    order = np.lexsort((col, rows, poly[edge]))
    col, rows = col[order], rows[order]
    starts, stops, span_rows = col[0::2], col[1::2], rows[0::2]
    by_row = np.argsort(span_rows, kind="stable")
    starts, stops, span_rows = starts[by_row], stops[by_row], span_rows[by_row]
    for r0 in range(0, h, _BAND):
        lo, hi = np.searchsorted(span_rows, [r0, r0 + _BAND])
        if lo == hi:
            continue
        band = np.zeros((min(_BAND, h - r0), w + 1), np.int32)
        np.add.at(band, (span_rows[lo:hi] - r0, starts[lo:hi]), 1)
        np.add.at(band, (span_rows[lo:hi] - r0, stops[lo:hi]), -1)
        out[r0 : r0 + len(band)] = np.cumsum(band[:, :w], axis=1) > 0
    return out


def _ring_coords(ring: NDArray[np.float64], scale: float) -> list[list[float]]:
    pts: list[list[float]] = np.round(ring * scale, 3).tolist()
    return [*pts, pts[0]]


def outlines_geojson(
    masks: Mapping[str, NDArray[np.bool_]],
    downsample: float,
    *,
    extra_features: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A QuPath-compatible FeatureCollection of the masks' outlines, level-0 coordinates.

    Parameters
    ----------
    masks
        ``{class name: mask}``, e.g. ``{"Tissue": ..., "Pen": ...}``; a class
        whose mask is empty is left out.
    downsample
        Level-0 pixels per mask pixel.
    extra_features
        Features appended as they are (the slide's regions of interest).

    Returns
    -------
    dict
        One ``Feature`` per class (``Polygon`` or ``MultiPolygon``) with
        ``properties = {"objectType": "annotation", "name": ..., "classification":
        {"name": ..., "color": [r, g, b]}}``.
    """
    features: list[dict[str, Any]] = []
    for name, mask in masks.items():
        polys = trace_polygons(mask)
        if not polys:
            continue
        coords = [[_ring_coords(r, downsample) for r in poly] for poly in polys]
        geometry: dict[str, object] = (
            {"type": "Polygon", "coordinates": coords[0]}
            if len(coords) == 1
            else {"type": "MultiPolygon", "coordinates": coords}
        )
        color = list(CLASS_COLORS.get(name, OTHER_COLOR))
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "objectType": "annotation",
                    "name": name,
                    "classification": {"name": name, "color": color},
                },
            }
        )
    features.extend(extra_features)
    return {"type": "FeatureCollection", "features": features}


def write_outlines(
    path: str | os.PathLike[str],
    masks: Mapping[str, NDArray[np.bool_]],
    downsample: float,
    *,
    extra_features: Iterable[dict[str, Any]] = (),
) -> None:
    """Write :func:`outlines_geojson` to ``path`` atomically."""
    data = outlines_geojson(masks, downsample, extra_features=extra_features)
    # json.dumps (one shot) takes the C encoder, json.dump the pure-Python one: the same
    # text as write_json_atomic(path, data, indent=None), several times faster
    text = json.dumps(data, indent=None, sort_keys=False)
    with atomic_write(path, "w") as f:
        f.write(text)
        f.write("\n")


def _polygon_area(rings: Any) -> float:
    """Area of a GeoJSON polygon's rings (exterior minus holes), in coordinate units squared."""
    if not isinstance(rings, list):
        return 0.0
    total = 0.0
    for k, ring in enumerate(rings):
        try:
            pts = np.asarray(ring, np.float64)[:, :2]
        except (TypeError, ValueError, IndexError):
            return 0.0
        a = abs(ring_area(pts)) if len(pts) >= 3 else 0.0
        total += a if k == 0 else -a
    return total


def outline_areas_mm2(data: Any, mpp: float) -> dict[str, float]:
    """``{"tissue_mm2": ..., "pen_mm2": ...}`` of the classified outlines in a FeatureCollection.

    Only the classes an extraction writes (``Tissue``, pen and artifact
    classes) are counted; regions of interest are not. ``mpp`` is the
    slide's microns per level-0 pixel. Malformed features count as nothing.

    >>> sq = {"type": "Polygon", "coordinates": [[[0, 0], [1000, 0], [1000, 1000], [0, 1000]]]}
    >>> f = {"type": "Feature", "geometry": sq, "properties": {"classification": {"name": "Pen"}}}
    >>> outline_areas_mm2({"type": "FeatureCollection", "features": [f]}, 0.5)
    {'pen_mm2': 0.25}
    """
    known = {c.lower() for c in (TISSUE_CLASS, *CLASS_COLORS, *EXCLUDED_CLASSES)}
    areas: dict[str, float] = {}
    features = data.get("features") if isinstance(data, dict) else None
    for feat in features if isinstance(features, list) else []:
        props = feat.get("properties") if isinstance(feat, dict) else None
        cls = props.get("classification") if isinstance(props, dict) else None
        name = str(cls.get("name", "")).lower() if isinstance(cls, dict) else ""
        geom = feat.get("geometry")
        if name not in known or not isinstance(geom, dict):
            continue
        coords = geom.get("coordinates")
        polys = [coords] if geom.get("type") == "Polygon" else coords
        px2 = sum(_polygon_area(p) for p in polys) if isinstance(polys, list) else 0.0
        key = f"{name}_mm2"
        areas[key] = areas.get(key, 0.0) + px2 * mpp * mpp / 1e6
    return {k: round(v, 4) for k, v in areas.items()}
