"""The ``dicomweb`` backend: a series on a DICOMweb server read as a slide.

Opened from a ``dicomweb+https://host/<root>/studies/<uid>/series/<uid>`` URL
(``dicomweb+http://`` only to loopback) through
:func:`~tilestream.slide.open_slide`; needs the ``dicomweb`` extra (wsidicom,
dicomweb-client), and raises :class:`~tilestream.errors.MissingDependencyError`
with the install hint without it. Importing this module imports neither.

Pixels: a read fetches the stored rows of frames it touches, from its first
column to the row's end (at most 256 frames beyond what it needs),
in batched multi-frame WADO-RS requests, into a byte-bounded frame cache
(:class:`~tilestream.slide.dicomweb.DicomWebOptions`), so a row-major pass over
a level sends about ``columns / frames_per_request`` requests per stored row.
JPEG baseline frames are passed through as stored tiles. A frame that fails to
decode raises :class:`~tilestream.errors.CorruptSlideError` naming the URL,
the instance and the frame, on every read that touches it; it is neither
cached nor latched, so every other region stays readable.

Examples
--------
>>> DicomWebBackend.url_schemes
('dicomweb+http', 'dicomweb+https')
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import UnsupportedSlideError
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.dicomweb import (
    OPTIONS,
    URL_SCHEMES,
    DicomImage,
    DicomWebSeries,
    DicomWebSession,
    DicomWebURL,
    first_value,
    icc_profile,
    series_properties,
)
from tilestream.slide.tilecache import DEFAULT_CACHE_BYTES, TileCache

__all__ = ["DicomWebBackend"]


class DicomWebBackend(SlideBackend):
    """A DICOMweb series (VL Whole Slide Microscopy) as a slide, through wsidicom."""

    name = "dicomweb"
    priority = 40
    url_schemes: ClassVar[tuple[str, ...]] = URL_SCHEMES

    def __init__(self, path: Path | str, *, cache_bytes: int | None = None) -> None:
        url = DicomWebURL.parse(str(path))
        # self.path is the URL without credentials (SlideBackend types it as a Path)
        super().__init__(url.url, cache_bytes=cache_bytes)  # type: ignore[arg-type]
        self._url = url
        self._session = DicomWebSession(url, OPTIONS.get())
        series: DicomWebSeries | None = None
        try:
            self._series = series = DicomWebSeries(self._session, url)
            base = self._series.levels[0]
            meta = self._session.get_json(
                f"/studies/{url.study_uid}/series/{url.series_uid}/instances/"
                f"{base.instance_uid}/metadata",
                what="the base level's metadata",
            )
            item = meta[0] if isinstance(meta, list) and meta else {}
            self._props = series_properties(item)
            self._icc = icc_profile(item, self._session)
            container = first_value(item, "00400512")
            self._series.add_study_associated(str(container) if container else None)
        except BaseException:
            if series is not None:
                series.close()
            self._session.close()
            raise
        self._add_level_properties()
        budget = DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._tiles = TileCache(budget)

    @classmethod
    def available(cls) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("wsidicom", "dicomweb_client"))

    def _add_level_properties(self) -> None:
        props = self._props
        props["openslide.level-count"] = str(len(self._series.levels))
        for i, image in enumerate(self._series.levels):
            props[f"openslide.level[{i}].width"] = str(image.width)
            props[f"openslide.level[{i}].height"] = str(image.height)
            props[f"openslide.level[{i}].downsample"] = repr(self.level_downsamples[i])
            props[f"openslide.level[{i}].tile-width"] = str(image.tile_w)
            props[f"openslide.level[{i}].tile-height"] = str(image.tile_h)
        for name, image in self._series.associated.items():
            props[f"openslide.associated.{name}.width"] = str(image.width)
            props[f"openslide.associated.{name}.height"] = str(image.height)
        if self._icc is not None:
            props["openslide.icc-size"] = str(len(self._icc))

    # -- geometry and metadata ------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((image.width, image.height) for image in self._series.levels)

    def level_tile_size(self, level: int) -> tuple[int, int] | None:
        image = self._series.levels[level]
        return image.tile_w, image.tile_h

    @property
    def properties(self) -> Mapping[str, str]:
        return self._props

    @property
    def color_profile(self) -> bytes | None:
        return self._icc

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._series.associated)

    def read_associated_image(self, name: str) -> Image.Image:
        image = self._series.associated[name]
        self.limits.check_region(image.width, image.height, 3, path=self.path, what=name)
        return Image.fromarray(self._read(image, ("assoc", name), 0, 0, image.width, image.height))

    # -- pixels ---------------------------------------------------------------------
    def read_level_rgb(self, level: int, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        return self._read(self._series.levels[level], ("level", level), x, y, w, h)

    def _read(
        self, image: DicomImage, key: tuple[str, object], x: int, y: int, w: int, h: int
    ) -> NDArray[np.uint8]:
        out = np.empty((h, w, 3), np.uint8)
        if w <= 0 or h <= 0:
            return out
        tw, th = image.tile_w, image.tile_h
        c0, c1 = x // tw, (x + w - 1) // tw
        r0, r1 = y // th, (y + h - 1) // th
        cols, _ = image.grid
        self._tiles.reserve((r1 - r0 + 1) * cols * tw * th * 3 + w * h * 3)
        if any(
            self._tiles.peek((*key, c, r)) is None
            for r in range(r0, r1 + 1)
            for c in range(c0, c1 + 1)
        ):
            self._series.fetch_rows(image, r0, r1, c0, c1)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                tile = self._tile(image, key, c, r)
                tx0, ty0 = c * tw, r * th
                sx0, sy0 = max(x, tx0), max(y, ty0)
                sx1, sy1 = min(x + w, tx0 + tw), min(y + h, ty0 + th)
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                    sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
                ]
        return out

    def _tile(
        self, image: DicomImage, key: tuple[str, object], col: int, row: int
    ) -> NDArray[np.uint8]:
        cached = self._tiles.get((*key, col, row))
        if cached is not None:
            return cached
        tile = self._series.decode(image, col, row)
        self._tiles.put((*key, col, row), tile)
        return tile

    def cache_info(self) -> dict[str, int] | None:
        info = {"tiles": len(self._tiles), "bytes": self._tiles.nbytes}
        info.update({f"frame_{k}": v for k, v in self._series.frames.cache_info().items()})
        return info

    # -- stored tiles ---------------------------------------------------------------
    def stored_tile_grid(self, level: int) -> tuple[int, int] | None:
        image = self._series.levels[level]
        if image.samples != 3 or self._syntax(image) != "1.2.840.10008.1.2.4.50":
            return None
        return image.tile_w, image.tile_h

    def _syntax(self, image: DicomImage) -> str | None:
        number = image.frame_of(0, 0)
        if number <= 0:
            return None
        return self._series.frames.get(image.frames_path, [number])[number].transfer_syntax

    def read_stored_tile_bytes(self, level: int, col: int, row: int) -> bytes:
        image = self._series.levels[level]
        cols, rows = image.grid
        if not (0 <= col < cols and 0 <= row < rows):
            raise IndexError(
                f"stored tile ({col}, {row}) is outside level {level}'s {cols}x{rows} grid"
            )
        if not self._series.frames.cached(image.frames_path, image.frame_of(col, row)):
            self._series.fetch_rows(image, row, row, col, col)
        data = self._series.jpeg_bytes(image, col, row)
        if data is None:
            raise UnsupportedSlideError(
                f"stored tile ({col}, {row}) of level {level} is not a JPEG frame", path=self.path
            )
        return data

    def close(self) -> None:
        self._tiles.clear()
        self._series.close()
        self._session.close()
