"""The viewer's ``/api/`` answers: the dataset, a slide's metadata, images and extraction data.

Each endpoint is a function of the viewer's state (:class:`~tilestream.viewer.app.ViewerApp`),
the slide asked for and the query, returning a :class:`Reply` (body, content type,
``ETag``) the HTTP handler sends; the handler owns the transport (status lines,
``HEAD``, ``304``, errors). Bad parameters raise
:class:`~tilestream.viewer.httpio.HTTPError` (400), unknown slides and names 404.

=====================================  ==================================================
``/api/slides``                        the dataset: slides, counts, status, failures
``/api/slide?id=``                     metadata: properties, levels, mpp, associated images
``/api/thumbnail?id=``                 a thumbnail (JPEG)
``/api/associated?id=&name=``          an associated image (label, macro...) as JPEG
``/api/grid?id=``                      kept and rejected tiles
``/api/tile_at?id=&x=&y=``             the tile under a level-0 point, with its values
``/api/record?id=&x=&y=``              the stored tile at a location, from the TFRecord
``/api/mosaic?id=&n=&seed=``           a sample of stored tile locations
``/api/rois?id=``                      ROI polygons
``/api/tissue.png?id=``                the tissue mask's outline (transparent PNG)
``/api/qc?id=``                        QC view: areas in mm², rejected per reason, outlines
=====================================  ==================================================

Examples
--------
>>> import json
>>> from tilestream.extract import demo_slide_path
>>> from tilestream.viewer.catalog import Catalog
>>> app = ViewerApp(Catalog.from_path(demo_slide_path()))
>>> reply = api_reply(app, "slide", {"id": ["CMU-1-Small-Region"]})
>>> reply.content_type, json.loads(reply.body)["dimensions"]
('application/json', [2220, 2967])
>>> api_reply(app, "thumbnail", {"id": ["CMU-1-Small-Region"]}).body[:2]
b'\\xff\\xd8'
>>> app.close()
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from tilestream.errors import TileStreamError
from tilestream.slide import Slide
from tilestream.viewer.access import public_text
from tilestream.viewer.app import ViewerApp
from tilestream.viewer.catalog import SlideEntry
from tilestream.viewer.data import qc_json, rois_json, tissue_outline_png
from tilestream.viewer.httpio import HTTPError, int_param, number_param

__all__ = [
    "ENDPOINTS",
    "MOSAIC_MAX",
    "Reply",
    "api_reply",
    "file_stamp",
    "json_reply",
    "version_etag",
]

#: Most tiles one mosaic request may ask for.
MOSAIC_MAX = 1000

# Level-0 coordinates accepted in queries (far beyond any slide; finite).
_COORD = 2**40

Query = dict[str, list[str]]


@dataclass(frozen=True)
class Reply:
    """A ``200`` answer: its body, content type and (when cacheable by version) ``ETag``."""

    body: bytes
    content_type: str
    etag: str | None = None


def json_reply(value: Any) -> Reply:
    """``value`` as a JSON reply (no NaN; anything else JSON lacks as its ``str``)."""
    return Reply(json.dumps(value, allow_nan=False, default=str).encode(), "application/json")


def version_etag(*parts: object) -> str:
    """A quoted ``ETag`` naming a version by ``parts``.

    >>> version_etag("a.svs", 1) == version_etag("a.svs", 1) != version_etag("a.svs", 2)
    True
    """
    return '"' + hashlib.sha1(repr(parts).encode()).hexdigest()[:20] + '"'


def file_stamp(path: Path | str | None) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file, ``(0, 0)`` when there is none: its version.

    A URL slide (a DICOMweb series, immutable under its UID) is versioned by its URL alone.
    """
    if path is None or isinstance(path, str):
        return (0, 0)
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def api_reply(app: ViewerApp, name: str, query: Query) -> Reply:
    """The answer to ``/api/<name>?<query>``.

    Raises
    ------
    HTTPError
        404 for an unknown API or slide, 400 for bad parameters.
    """
    if name == "slides":
        catalog = app.catalog
        return json_reply(
            {
                "mode": catalog.mode,
                "root": catalog.root.name if catalog.root else catalog.label,
                "slides": [e.summary() for e in catalog.entries],
            }
        )
    endpoint = ENDPOINTS.get(name)
    entry = app.entry(query.get("id", [""])[0])
    if endpoint is None:
        raise HTTPError(404, f"no API {name!r}")
    return endpoint(app, entry, query)


# -- endpoints: (app, entry, query) -> Reply -------------------------------------------
def _slide(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    return json_reply(slide_metadata(app, entry))


def _thumbnail(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    return Reply(app.cached(entry, "thumbnail", lambda: thumbnail(app, entry)), "image/jpeg")


def _associated(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    which = (query.get("name") or [""])[0]
    body = app.cached(entry, "assoc:" + which, lambda: associated(app, entry, which))
    return Reply(body, "image/jpeg")


def _grid(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    return json_reply(app.data(entry).grid())


def _tile_at(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    x, y = (number_param(query, k, low=-_COORD, high=_COORD) for k in ("x", "y"))
    hit = app.data(entry).tile_at(int(x), int(y))
    if hit["status"] == "kept" and entry.tfrecord is not None:
        hit["image"] = _record_url(entry, hit["loc_x"], hit["loc_y"])
    return json_reply(hit)


def _record(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    x, y = (int_param(query, k, low=-_COORD, high=_COORD) for k in ("x", "y"))
    fmt, body = app.data(entry).stored_tile(x, y)
    where = entry.tfrecord
    # an object's version: what its state recorded (size, ETag), judged current at start
    stamp = file_stamp(where) if not isinstance(where, str) else entry.state.get("outputs")
    return Reply(body, f"image/{fmt}", version_etag(str(where), stamp, x, y))


def _mosaic(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    n = int_param(query, "n", low=1, high=MOSAIC_MAX, default=64)
    seed = int_param(query, "seed", low=0, high=2**32 - 1, default=0)
    locations = app.data(entry).mosaic(n, seed=seed)
    tiles = [{"loc_x": x, "loc_y": y, "image": _record_url(entry, x, y)} for x, y in locations]
    return json_reply({"id": entry.id, "total": entry.state.get("tiles"), "tiles": tiles})


def _rois(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    if entry.roi_path is None:
        return json_reply({"file": None, "rois": []})
    rois = rois_json(entry.roi_path, storage_options=entry.storage_options)
    return json_reply({"file": entry.roi_file, "rois": rois})


def _qc(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    return json_reply(qc_json(entry))


def _tissue(app: ViewerApp, entry: SlideEntry, query: Query) -> Reply:
    pool = app.pool(entry)
    return Reply(app.cached(entry, "tissue", lambda: tissue_outline_png(pool)), "image/png")


#: The endpoints of ``/api/<name>?id=...`` by name (``slides`` names no slide).
ENDPOINTS: dict[str, Callable[[ViewerApp, SlideEntry, Query], Reply]] = {
    "slide": _slide,
    "thumbnail": _thumbnail,
    "associated": _associated,
    "grid": _grid,
    "tile_at": _tile_at,
    "record": _record,
    "mosaic": _mosaic,
    "rois": _rois,
    "qc": _qc,
    "tissue.png": _tissue,
}


# -- what the endpoints render -----------------------------------------------------------
def slide_metadata(app: ViewerApp, entry: SlideEntry) -> dict[str, Any]:
    """The metadata panel of a slide; ``slide_error`` says why the slide cannot be read."""
    info: dict[str, Any] = {"id": entry.id, "name": entry.name, **entry.summary()}
    info["roi_file"] = entry.roi_file
    if not entry.has_slide:
        info["slide_error"] = f"slide file not found: {entry.slide_file}"
        return info
    try:
        renderer = app.renderer(entry)
        with app.pool(entry).handle() as slide:
            info.update(slide_facts(slide))
    except TileStreamError as exc:
        info["slide_error"] = public_text(str(exc), root=app.catalog.root)
        return info
    w, h = renderer.dimensions
    info["dz"] = {
        "url": f"/dz/{quote(entry.id, safe='')}.dzi",
        "width": w,
        "height": h,
        "tile_size": renderer.tile_size,
        "overlap": renderer.overlap,
    }
    return info


def slide_facts(slide: Slide) -> dict[str, Any]:
    """JSON-ready facts of an open slide: backend, levels, mpp, properties, associated images."""
    mpp = slide.mpp
    return {
        "backend": slide.backend,
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": [
            {"dimensions": list(d), "downsample": round(ds, 4)}
            for d, ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ],
        "mpp": list(mpp) if mpp else None,
        "objective_power": slide.objective_power,
        "properties": dict(sorted(slide.properties.items())),
        "associated": sorted(slide.associated_images),
    }


def thumbnail(app: ViewerApp, entry: SlideEntry) -> bytes:
    """A JPEG thumbnail of the slide, else of its extraction preview (404 without either)."""
    if entry.has_slide:
        with app.pool(entry).handle() as slide:
            return _jpeg(slide.get_thumbnail((256, 256)))
    preview = entry.read_output("preview")
    if preview is not None:
        with Image.open(io.BytesIO(preview)) as im:
            im.thumbnail((256, 256))
            return _jpeg(im)
    raise HTTPError(404, f"no thumbnail for {entry.name!r}: slide file and preview missing")


def associated(app: ViewerApp, entry: SlideEntry, which: str) -> bytes:
    """Associated image ``which`` (label, macro...) as JPEG (404 when the slide has none)."""
    with app.pool(entry).handle() as slide:
        images = slide.associated_images
        if which not in images:
            raise HTTPError(404, f"no associated image {which!r}")
        return _jpeg(images[which])


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _record_url(entry: SlideEntry, x: int, y: int) -> str:
    return f"/api/record?id={quote(entry.id, safe='')}&x={x}&y={y}"
