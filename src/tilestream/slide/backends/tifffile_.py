"""The ``tifffile`` backend: SVS (JPEG and JPEG 2000), NDPI, generic, OME and flat TIFF.

Pixels come from the fast tile path (:mod:`tilestream.slide.fastpath`): stored
tiles read through one file handle, decoded once by tifffile's codec for the
page (imagecodecs) and cached; pixels equal OpenSlide's on the files both read.
Vendor TIFF variants whose geometry needs vendor logic (Philips, Ventana, Leica,
Trestle...) are left to the ``openslide`` backend.

Examples
--------
>>> TiffFileBackend.available()
True
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import CorruptSlideError, SlideError, StorageError, UnsupportedSlideError
from tilestream.slide._resolution import mpp_from_tiff_resolution
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.fastpath import FileReader, StoredLevel, _to_rgb8
from tilestream.slide.remote import SOURCE, StoreReader, slide_error
from tilestream.slide.tilecache import DEFAULT_CACHE_BYTES, MAX_AUTO_CACHE_BYTES, TileCache
from tilestream.storage import IOStats

__all__ = ["TiffFileBackend"]

logger = logging.getLogger(__name__)

# OpenSlide formats this backend reads itself; other OpenSlide TIFF vendors are refused.
_OWN_FORMATS = {"aperio", "hamamatsu", "generic-tiff"}
_ASSOCIATED = {"thumbnail", "label", "macro", "map"}
_APERIO_YCBCR_J2K = 33003


def _tifffile() -> Any:
    import tifffile

    return tifffile


def _openslide_format(path: Path) -> str | None:
    try:
        import openslide

        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None
    return str(fmt) if fmt else None


def _vendor_format(tif: Any) -> str | None:
    """OpenSlide's format name for a TIFF read remotely, from its tags (OpenSlide needs a file).

    The vendor TIFF variants OpenSlide reads with vendor logic are recognised
    by the marks OpenSlide looks for; any other TIFF whose levels are all
    tiled is ``generic-tiff``, else ``None`` (OpenSlide does not read it).
    """
    page = tif.pages[0]
    desc = str(page.description or "")
    software = str(page.tags.valueof("Software") or "")
    xmp = page.tags.valueof(700)
    xmp_text = bytes(xmp).decode("latin-1") if isinstance(xmp, bytes | bytearray) else str(xmp)
    if desc.startswith("<?xml") and "DPUfsImport" in desc:
        return "philips"
    if "iScan" in xmp_text:
        return "ventana"
    if desc.startswith("<?xml") and "leica" in desc.lower():
        return "leica"
    if software.startswith("MedScan"):
        return "trestle"
    series = tif.series[0] if tif.series else None
    if series is not None and all(level.keyframe.is_tiled for level in series.levels):
        return "generic-tiff"
    return None


def _fmt_number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class TiffFileBackend(SlideBackend):
    """TIFF-based slides through tifffile + imagecodecs, with the fast tile path."""

    name = "tifffile"
    priority = 10
    reads_ranges = True

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        super().__init__(path, cache_bytes=cache_bytes)
        tifffile = _tifffile()
        # A URL of a store (s3://...): the header is parsed through a buffered
        # ranged file, the tiles are fetched by StoreReader (slide/remote.py).
        self._source = SOURCE.get() if isinstance(path, str) else None
        self._fh: BinaryIO | None = None
        try:
            self._tif = self._open_tiff(tifffile)
            self._setup(tifffile)
        except StorageError as exc:
            self._close_files()
            raise slide_error(exc, str(path)) from None
        except BaseException:
            self._close_files()
            raise
        self._reader: FileReader | StoreReader = (
            StoreReader(self._source) if self._source is not None else FileReader(path)
        )
        self._cache = (
            TileCache(DEFAULT_CACHE_BYTES, grow_limit=MAX_AUTO_CACHE_BYTES)
            if cache_bytes is None
            else TileCache(cache_bytes)
        )
        self._lock = threading.Lock()
        try:
            # Each level checks its stored tile / strip size against the budget.
            self._levels = tuple(
                StoredLevel(page, self._reader, self._cache, key=i, limits=self.limits)
                for i, page in enumerate(self._pages)
            )
            self._probe_ycbcr_jp2k()
        except BaseException:
            self.close()
            raise

    def _open_tiff(self, tifffile: Any) -> Any:
        path = self.path
        try:
            if self._source is None:
                return tifffile.TiffFile(str(path))
            self._fh = self._source.open_read()
            return tifffile.TiffFile(self._fh, name=str(path).rsplit("/", 1)[-1])
        except (SlideError, StorageError):
            raise
        except tifffile.TiffFileError as exc:
            raise UnsupportedSlideError(f"not a TIFF file ({exc})", path=path) from exc
        except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
            raise UnsupportedSlideError(f"tifffile cannot parse it: {exc}", path=path) from exc

    def _close_files(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
        if self._fh is not None:
            self._fh.close()

    def _probe_ycbcr_jp2k(self) -> None:
        # Aperio 33003 tiles usually carry chroma subsampled 2x horizontally,
        # which OpenSlide upsamples itself; decode one tile now and leave files
        # our decoder cannot take to the openslide backend.
        for level in self._levels:
            if level.compression != _APERIO_YCBCR_J2K:
                continue
            index = next((i for i, n in enumerate(level.bytecounts) if n), None)
            if index is None:
                continue
            try:
                level.tile(index % level.cols, index // level.cols)
            except CorruptSlideError as exc:
                raise UnsupportedSlideError(
                    f"Aperio YCbCr JPEG 2000 (compression 33003) tiles this decoder cannot "
                    f"take ({exc.message}); use the openslide backend",
                    path=self.path,
                ) from exc

    # -- opening ------------------------------------------------------------------
    def _setup(self, tifffile: Any) -> None:
        tif = self._tif
        if tif.is_svs:
            self._format = "aperio"
        elif tif.is_ndpi:
            self._format = "hamamatsu"
        elif tif.is_ome:
            self._format = "ome-tiff"
        else:
            fmt = _openslide_format(self.path) if self._source is None else _vendor_format(tif)
            if fmt is not None and fmt not in _OWN_FORMATS:
                raise UnsupportedSlideError(
                    f"a {fmt} TIFF: its layout needs the openslide backend", path=self.path
                )
            self._format = "generic-tiff" if fmt == "generic-tiff" else "tiff"
        if not tif.series:
            raise UnsupportedSlideError("the TIFF holds no image series", path=self.path)
        series = tif.series[0]
        pages = []
        for level in series.levels:
            page = level.keyframe
            if len(level.pages) != 1 or page.planarconfig != 1:
                raise UnsupportedSlideError(
                    f"series {series.name!r} has {len(level.pages)} planes "
                    f"(shape {level.shape}, axes {level.axes}); only 2D RGB/grey pyramids "
                    "are supported here",
                    path=self.path,
                )
            if page.samplesperpixel not in (1, 2, 3, 4):
                raise UnsupportedSlideError(
                    f"{page.samplesperpixel} samples per pixel are not supported", path=self.path
                )
            compression = int(page.compression)
            if compression not in tifffile.TIFF.DECOMPRESSORS:
                raise UnsupportedSlideError(
                    f"unsupported TIFF compression {compression}", path=self.path
                )
            pages.append(page)
        dims = [(int(p.imagewidth), int(p.imagelength)) for p in pages]
        if any(b[0] > a[0] or b[1] > a[1] for a, b in itertools.pairwise(dims)):
            raise UnsupportedSlideError(f"levels are not a pyramid: {dims}", path=self.path)
        self._pages = pages
        self._dims = tuple(dims)
        self._series = series
        self._assoc = {
            s.name.lower(): s for s in tif.series[1:] if s.name and s.name.lower() in _ASSOCIATED
        }
        self._properties = self._build_properties()

    def _build_properties(self) -> dict[str, str]:
        """OpenSlide's properties for this file: TIFF tags, vendor's, resolution, levels."""
        page0 = self._pages[0]
        props: dict[str, str] = {}
        if self._format in _OWN_FORMATS or self._format == "ome-tiff":
            props["openslide.vendor"] = self._format
        desc = page0.description or ""
        if desc:
            props["tiff.ImageDescription"] = desc
        mpp, suspicious = _tiff_tag_properties(page0.tags, props)
        objective: str | None = None
        if self._format == "aperio":
            mpp, objective = _aperio_properties(desc, props)
            suspicious = False  # OpenSlide ignores Aperio's TIFF resolution tags
        elif self._format == "hamamatsu":
            objective = _hamamatsu_properties(getattr(page0, "ndpi_tags", None) or {}, props)
        elif desc:
            props["openslide.comment"] = desc
        if mpp is not None:
            props["openslide.mpp-x"] = repr(mpp[0])
            props["openslide.mpp-y"] = repr(mpp[1])
            if suspicious:
                props["tilestream.mpp-suspicious"] = "1"
        if objective:
            props["openslide.objective-power"] = objective
        icc = self.color_profile
        if icc is not None:
            props["openslide.icc-size"] = str(len(icc))
        self._add_level_properties(props)
        props["tilestream.format"] = self._format
        return props

    def _add_level_properties(self, props: dict[str, str]) -> None:
        """``openslide.level[i].*`` and ``openslide.associated.*`` sizes."""
        props["openslide.level-count"] = str(len(self._dims))
        downsamples = self.level_downsamples
        for i, (page, (w, h)) in enumerate(zip(self._pages, self._dims, strict=True)):
            props[f"openslide.level[{i}].width"] = str(w)
            props[f"openslide.level[{i}].height"] = str(h)
            props[f"openslide.level[{i}].downsample"] = _fmt_number(downsamples[i])
            if page.is_tiled:
                props[f"openslide.level[{i}].tile-width"] = str(page.tilewidth)
                props[f"openslide.level[{i}].tile-height"] = str(page.tilelength)
        for name, series in self._assoc.items():
            shape = series.shape
            props[f"openslide.associated.{name}.width"] = str(shape[1])
            props[f"openslide.associated.{name}.height"] = str(shape[0])

    @classmethod
    def available(cls) -> bool:
        try:
            _tifffile()
            import imagecodecs  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def detect_format(cls, path: Path) -> str | None:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            return None
        if head not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return None
        tifffile = _tifffile()
        try:
            with tifffile.TiffFile(str(path)) as tif:
                if tif.is_svs:
                    return "aperio"
                if tif.is_ndpi:
                    return "hamamatsu"
                if tif.is_ome:
                    return "ome-tiff"
        except Exception:
            return None
        return _openslide_format(path) or "tiff"

    # -- geometry / metadata ------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    def level_tile_size(self, level: int) -> tuple[int, int] | None:
        page = self._pages[level]
        return (int(page.tilewidth), int(page.tilelength)) if page.is_tiled else None

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def vendor(self) -> str | None:
        return self._properties.get("openslide.vendor")

    @property
    def color_profile(self) -> bytes | None:
        value = self._pages[0].tags.valueof(34675)  # InterColorProfile
        return bytes(value) if value is not None else None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._assoc)

    def read_associated_image(self, name: str) -> Image.Image:
        series = self._assoc[name]
        shape = tuple(int(v) for v in series.shape)
        samples = shape[-1] if len(shape) >= 3 and shape[-1] in (2, 3, 4) else 1
        height, width = shape[-3:-1] if samples > 1 else shape[-2:]
        planes = math.prod(shape) // max(1, width * height * samples)
        self.limits.check_region(
            width,
            height,
            planes * max(4, samples * series.dtype.itemsize),
            path=self.path,
            what=f"associated image {name!r}",
        )
        with self._lock:
            try:
                arr = np.asarray(series.asarray())
            except Exception as exc:
                raise CorruptSlideError(
                    f"cannot decode associated image {name!r}: {type(exc).__name__}: {exc}",
                    path=self.path,
                ) from exc
        if arr.ndim == 2:
            arr = arr[..., None]
        return Image.fromarray(np.ascontiguousarray(_to_rgb8(arr)), "RGB")

    # -- pixels -------------------------------------------------------------------
    def stored_level(self, level: int) -> StoredLevel:
        """The fast-path reader of ``level``."""
        return self._levels[level]

    def read_level_rgb(self, level: int, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        return self._levels[level].read_rgb(x, y, w, h)

    def read_region_rgb(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        background: tuple[int, int, int],
    ) -> NDArray[np.uint8]:
        # The common tile read (on whole level pixels, inside the level) goes
        # straight to the stored tiles; anything else is painted as OpenSlide does.
        # (The base class's shortcut does the same through the painting layer's
        # checks: this one is cheaper per call, which shows at thousands of tiles/s.)
        x, y = location
        w, h = size
        if level == 0:
            lx, ly = x, y
        else:
            ds = self.level_downsamples[level]
            fx, fy = x / ds, y / ds
            lx, ly = (int(fx), int(fy)) if fx.is_integer() and fy.is_integer() else (-1, -1)
        stored = self._levels[level]
        if (
            lx >= 0
            and ly >= 0
            and w > 0
            and h > 0
            and lx + w <= stored.width
            and ly + h <= stored.height
        ):
            return stored.read_rgb(lx, ly, w, h)
        return super().read_region_rgb(location, level, size, background)

    def read_level_reduced(
        self, level: int, x: int, y: int, w: int, h: int, factor: int, *, scaled: bool = False
    ) -> NDArray[np.uint8] | None:
        """``(h, w, 3)`` of ``level`` reduced ``factor`` times from level pixel ``(x, y)``.

        Served from the stored tiles reduced once each (see
        :meth:`~tilestream.slide.fastpath.StoredLevel.read_reduced`); ``None``
        when the region is not on the stored grid or not inside the level (the
        caller then reads the full region and reduces it).
        """
        stored = self._levels[level]
        if not stored.can_reduce(x, y, w, h, factor):
            return None
        return stored.read_reduced(x, y, w, h, factor, scaled=scaled)

    def cache_info(self) -> dict[str, int] | None:
        cache = self._cache
        return {
            "hits": cache.hits,
            "misses": cache.misses,
            "tiles": len(cache),
            "bytes": cache.nbytes,
            "max_bytes": cache.max_bytes,
        }

    def segment_mask(self, level: int) -> tuple[NDArray[np.bool_], tuple[int, int]] | None:
        stored = self._levels[level]
        return stored.present, (stored.tile_w, stored.tile_h)

    def stored_tile_grid(self, level: int) -> tuple[int, int] | None:
        stored = self._levels[level]
        return (stored.tile_w, stored.tile_h) if stored.is_plain_jpeg else None

    def read_stored_tile_bytes(self, level: int, col: int, row: int) -> bytes:
        return self._levels[level].read_jpeg_tile(col, row)

    def prefetch(self, level: int, boxes: Sequence[tuple[int, int, int, int]]) -> None:
        """Fetch the stored tiles of level rectangles ``(x, y, w, h)`` in the background.

        A no-op for a local file; for a remote one, the tiles not decoded or
        fetched yet, in one coalesced request set on a background thread.
        """
        if not self._reader.remote:
            return
        stored = self._levels[level]
        ranges: list[tuple[int, int]] = []
        tw, th = stored.tile_w, stored.tile_h
        for x, y, w, h in boxes:
            if w > 0 and h > 0:
                ranges += stored.missing_ranges(
                    x // tw, (x + w - 1) // tw, y // th, (y + h - 1) // th
                )
        self._reader.prefetch(ranges)

    @property
    def io_stats(self) -> IOStats | None:
        """The store's request and byte counters of a remote slide, ``None`` for a file."""
        return self._reader.stats if isinstance(self._reader, StoreReader) else None

    def close(self) -> None:
        self._cache.clear()
        self._reader.close()
        self._close_files()


_TIFF_TEXT_TAGS = ("Make", "Model", "Software", "DateTime", "Artist", "Copyright", "HostComputer")


def _tiff_tag_properties(
    tags: Any, props: dict[str, str]
) -> tuple[tuple[float, float] | None, bool]:
    """Add ``tiff.*`` properties; the resolution tags' ``(mpp, suspicious)``."""
    for tag in _TIFF_TEXT_TAGS:
        value = tags.valueof(tag)
        if value:
            props[f"tiff.{tag}"] = str(value)
    unit_tag = tags.get("ResolutionUnit")
    unit = unit_tag.value.name if unit_tag is not None else "NONE"
    xres_tag, yres_tag = tags.get("XResolution"), tags.get("YResolution")
    if unit_tag is not None:
        props["tiff.ResolutionUnit"] = {
            "NONE": "none",
            "INCH": "inch",
            "CENTIMETER": "centimeter",
        }.get(unit, unit.lower())
    if xres_tag is None or yres_tag is None:
        return None, False
    xres = xres_tag.value[0] / xres_tag.value[1] if xres_tag.value[1] else 0.0
    yres = yres_tag.value[0] / yres_tag.value[1] if yres_tag.value[1] else 0.0
    props["tiff.XResolution"] = _fmt_number(xres)
    props["tiff.YResolution"] = _fmt_number(yres)
    mx = mpp_from_tiff_resolution(xres, unit)
    my = mpp_from_tiff_resolution(yres, unit)
    if mx is None or my is None:
        return None, False
    return (mx[0], my[0]), mx[1] or my[1]


def _aperio_properties(
    desc: str, props: dict[str, str]
) -> tuple[tuple[float, float] | None, str | None]:
    """Add ``aperio.*`` from the description; its ``(mpp, objective power)``."""
    props["openslide.comment"] = desc
    for part in desc.split("|")[1:]:
        key, sep, text = part.partition("=")
        if sep:
            props[f"aperio.{key.strip()}"] = text.strip()
    mpp: tuple[float, float] | None = None
    try:
        value = float(props["aperio.MPP"])
        mpp = (value, value)
    except (KeyError, ValueError):
        pass
    return mpp, props.get("aperio.AppMag")


def _hamamatsu_properties(ndpi: Mapping[str, Any], props: dict[str, str]) -> str | None:
    """Add ``hamamatsu.*`` from the NDPI tags; the objective power (source lens)."""
    objective = None
    lens = ndpi.get("Magnification")
    if lens:
        props["hamamatsu.SourceLens"] = _fmt_number(float(lens))
        objective = props["hamamatsu.SourceLens"]
    for key in ("XOffsetFromSlideCenter", "YOffsetFromSlideCenter", "Model"):
        if key in ndpi:
            props[f"hamamatsu.{key}"] = str(ndpi[key])
    return objective
