"""Per-slide data a viewer serves: tile grid, clicked tiles, stored tiles, mosaics, overlays.

:class:`SlideData` wraps a :class:`~tilestream.viewer.catalog.SlideEntry`:
it reads the extraction's tables once (kept tiles from ``<slide>.coords.csv``,
rejected ones from ``state/<slide>.rejected.csv``), finds the tile under a
point, hands out stored tiles from the TFRecord by location (through its
index), samples mosaics, loads ROIs and renders the tissue outline.

Examples
--------
>>> import tempfile
>>> from tilestream.extract import demo_slide_path, extract_tiles
>>> from tilestream.viewer.catalog import Catalog
>>> out = tempfile.mkdtemp()
>>> _ = extract_tiles(demo_slide_path(), out, tile_px=64, tile_um=128)
>>> data = SlideData(Catalog.from_path(out).entries[0])
>>> grid = data.grid()
>>> len(grid["kept"]), len(grid["rejected"]), grid["tile_w"]
(28, 60, 257)
>>> hit = data.tile_at(1200, 400)
>>> hit["status"], hit["loc_x"], hit["loc_y"], hit["tissue"]
('kept', 1156, 385, 0.7535)
>>> data.stored_tile(1156, 385)[0]
'jpeg'
"""

from __future__ import annotations

import csv
import io
import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import RecordNotFoundError
from tilestream.extract.lowres import read_lowres
from tilestream.extract.outlines import CLASS_COLORS, OTHER_COLOR, class_name
from tilestream.extract.report import slide_qc
from tilestream.extract.roi import ROI, load_rois, split_outlines
from tilestream.extract.select import outline_excluded_classes
from tilestream.extract.tissue import tissue_mask
from tilestream.tfrecord import TFRecord, detect_image_format
from tilestream.viewer.catalog import SlideEntry
from tilestream.viewer.pool import SlidePool

__all__ = ["SlideData", "rois_json", "tissue_outline_png"]

log = logging.getLogger(__name__)

#: Longer side, in pixels, of the image the tissue outline is computed on.
TISSUE_SIDE = 1024

_FLOATS = ("tissue", "grayspace", "whitespace", "blur")
_INTS = ("record", "loc_x", "loc_y", "x", "y", "width", "height", "level", "blurry")


def _number(value: str | None, kind: type) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if kind is int else number


class SlideData:
    """The extraction outputs of one slide, read lazily and shared between threads."""

    def __init__(self, entry: SlideEntry) -> None:
        self.entry = entry
        self._lock = threading.Lock()
        self._kept: list[dict[str, Any]] | None = None
        self._rejected: list[tuple[int, int, str]] | None = None
        self._tfr: TFRecord | None = None
        self._tfr_lock = threading.Lock()

    # -- tables -------------------------------------------------------------------
    def kept(self) -> list[dict[str, Any]]:
        """Rows of the kept tiles' table (numbers parsed), ``[]`` without one."""
        with self._lock:
            if self._kept is None:
                self._kept = self._read_kept()
            return self._kept

    def _table(self, kind: str) -> list[dict[str, str]]:
        # The rows of a CSV output (a file, or an object read whole), [] without one.
        data = self.entry.read_output(kind)
        if data is None:
            return []
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))

    def _read_kept(self) -> list[dict[str, Any]]:
        rows = []
        for row in self._table("coords"):
            out: dict[str, Any] = {k: _number(row.get(k), int) for k in _INTS}
            out.update({k: _number(row.get(k), float) for k in _FLOATS})
            rows.append(out)
        return rows

    def rejected(self) -> list[tuple[int, int, str]]:
        """``(x, y, reason)`` of the rejected tiles, ``[]`` without a table."""
        with self._lock:
            if self._rejected is None:
                rows: list[tuple[int, int, str]] = []
                for row in self._table("rejected"):
                    x, y = _number(row.get("x"), int), _number(row.get("y"), int)
                    if x is not None and y is not None:
                        rows.append((x, y, row.get("reason") or ""))
                self._rejected = rows
            return self._rejected

    def tile_size(self) -> int | None:
        """Side of a tile in level-0 pixels (from the kept tiles, else the run's config)."""
        for row in self.kept():
            if row["width"]:
                return int(row["width"])
        um = self.entry.config.get("tile_um")
        mpp = self.entry.state.get("mpp")
        if isinstance(um, (int, float)) and isinstance(mpp, (int, float)) and mpp > 0:
            return round(um / mpp)
        return None

    def grid(self) -> dict[str, Any]:
        """Kept ``[x, y, w, h]`` and rejected ``[x, y, reason]`` tiles in level-0 pixels."""
        kept = [[r["x"], r["y"], r["width"], r["height"]] for r in self.kept()]
        rejected = [[x, y, reason] for x, y, reason in self.rejected()]
        return {"tile_w": self.tile_size(), "kept": kept, "rejected": rejected}

    def tile_at(self, x: float, y: float) -> dict[str, Any]:
        """The tile under level-0 point ``(x, y)``: kept (with its values), rejected, or none."""
        for row in self.kept():
            if row["x"] <= x < row["x"] + row["width"] and row["y"] <= y < row["y"] + row["height"]:
                return {"status": "kept", **row}
        size = self.tile_size()
        if size:
            for rx, ry, reason in self.rejected():
                if rx <= x < rx + size and ry <= y < ry + size:
                    return {"status": "rejected", "x": rx, "y": ry, "width": size,
                            "height": size, "reason": reason}  # fmt: skip
        return {"status": "none", "x": x, "y": y}

    # -- stored tiles ---------------------------------------------------------------
    def _tfrecord(self) -> TFRecord:
        path = self.entry.tfrecord
        if path is None:
            raise RecordNotFoundError("the slide has no TFRecord", path=self.entry.name)
        if self._tfr is None:
            # a URL: ranged reads through the tfrecord layer (its index fetched once)
            self._tfr = TFRecord(
                path, create_index=False, storage_options=self.entry.storage_options
            )
        return self._tfr

    def stored_tile(self, loc_x: int, loc_y: int) -> tuple[str, bytes]:
        """``(format, bytes)`` of the stored tile at location ``(loc_x, loc_y)``.

        Raises
        ------
        RecordNotFoundError
            When the slide has no TFRecord or no tile there.
        """
        with self._tfr_lock:
            _, image = self._tfrecord().get_record_by_xy(loc_x, loc_y)
        assert isinstance(image, bytes)
        return detect_image_format(image) or "octet-stream", image

    def mosaic(self, n: int, *, seed: int = 0) -> list[tuple[int, int]]:
        """Locations of up to ``n`` tiles sampled (without replacement) from the TFRecord."""
        with self._tfr_lock:
            locations = self._tfrecord().locations or []
        if len(locations) <= n:
            return list(locations)
        pick = np.random.default_rng(seed).choice(len(locations), size=n, replace=False)
        return [locations[i] for i in sorted(pick.tolist())]

    def close(self) -> None:
        """Release the TFRecord's memory map."""
        with self._tfr_lock:
            if self._tfr is not None:
                self._tfr.close()


def rois_json(
    path: Path | str, *, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """ROIs as JSON-ready polygons (level-0 ``[[x, y], ...]``, holes included).

    ``path`` may be a URL (an object beside a slide object), read with ``storage_options``.
    """
    rois: list[ROI] = load_rois(path, storage_options=storage_options)
    return [
        {
            "name": r.name,
            "label": r.label,
            "exterior": np.round(r.exterior, 2).tolist(),
            "holes": [np.round(h, 2).tolist() for h in r.holes],
        }
        for r in rois
    ]


def qc_json(entry: SlideEntry) -> dict[str, Any]:
    """The QC view of an extracted slide: areas, rejected tiles per reason, outline polygons.

    The numbers are :func:`tilestream.extract.report.slide_qc`'s (the same as
    the run's ``summary.json``); the polygons are the slide's outline file
    grouped by class, each with its colour, level-0 ``[[x, y], ...]`` rings.
    """
    if not entry.has_run or entry.stale is not None:
        return {"outlines": None, "areas_mm2": {}, "rejected": {}, "classes": []}
    path = entry.outlines
    if entry.run_dir is not None:
        qc = slide_qc(entry.run_dir, entry.state)
    else:  # a run folder in a store: the state's numbers (no outline file on disk to measure)
        qc = slide_qc(Path(), {**entry.state, "slide": ""})
        qc["outlines"] = path.rsplit("/", 1)[-1] if isinstance(path, str) else None
        if not qc["areas_mm2"]:
            log.info("viewer: no QC areas recorded in the state of %s (in a store)", entry.name)
    classes: dict[str, dict[str, Any]] = {}
    if path is not None:
        rois = load_rois(path, storage_options=entry.storage_options)
        _plain, tissue, excluded = split_outlines(rois, outline_excluded_classes())
        for roi in (*tissue, *excluded):
            name = roi.label or "?"
            color = CLASS_COLORS.get(class_name(name), OTHER_COLOR)
            group = classes.setdefault(name, {"name": name, "color": list(color), "polygons": []})
            group["polygons"].append([np.round(r, 2).tolist() for r in (roi.exterior, *roi.holes)])
    return {**qc, "classes": list(classes.values())}


def tissue_outline_png(pool: SlidePool, *, side: int = TISSUE_SIDE) -> bytes:
    """A transparent PNG of the whole slide with the tissue mask's outline drawn.

    The mask is the extraction's (:func:`tilestream.extract.tissue.tissue_mask`
    on a low-resolution image, gaps closed over about 24 level-0 pixels).
    """
    with pool.handle() as slide:
        downsample = max(1.0, max(slide.dimensions) / side)
        lowres = read_lowres(slide, downsample)
    mask = tissue_mask(lowres.image, smooth=max(1, round(24 / lowres.downsample)))
    edge = _outline(mask)
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[edge] = (0, 200, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", optimize=False)
    return buf.getvalue()


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    # Mask pixels with a 4-neighbour outside the mask, thickened by one pixel.
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inner &= padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = mask & ~inner
    thick = np.pad(edge, 1, constant_values=False)
    return thick[1:-1, 1:-1] | thick[:-2, 1:-1] | thick[1:-1, :-2]
