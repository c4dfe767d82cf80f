"""The :class:`Slide` object: one slide read through one backend.

A :class:`Slide` is what users hold: OpenSlide's vocabulary (``dimensions``,
``level_downsamples``, ``read_region``...) plus reduced and stored-tile reads,
over whichever backend reads the file, and large_image's magnification-aware
vocabulary (:class:`~tilestream.slide.large_image.LargeImageMethods`). Backends
subclass :class:`~tilestream.slide.backends.base.SlideBackend` and register
under a name (:mod:`tilestream.slide.registry`); ``backend="auto"`` tries them
fastest-first and keeps the first one that opens the file correctly
(:mod:`tilestream.slide.opening`).

Errors
------
Opening raises :class:`~tilestream.errors.SlideNotFoundError` (no such file),
:class:`~tilestream.errors.UnsupportedSlideError` (no backend reads it; the
message lists each backend's reason and ``__cause__`` is the first backend's
error) or :class:`~tilestream.errors.SlideError` (e.g. unreadable: permission
denied, a directory). Reading pixels raises
:class:`~tilestream.errors.CorruptSlideError` when stored data is damaged.
Memory is bounded by what the file holds and by the slide's budgets
(:mod:`tilestream.slide.limits`): a slide whose stored tiles or strips are over
the tile budget is refused when opened, and a region, thumbnail or associated
image over the region budget raises :class:`~tilestream.errors.SlideTooLargeError`
before anything is allocated.

Unlike OpenSlide, whose handle *latches* its first read error (every later call
on that ``OpenSlide`` object fails), a :class:`Slide` does not latch: a damaged
tile raises :class:`~tilestream.errors.CorruptSlideError` on every read that
touches it, and every other region stays readable (the ``openslide`` backend
reopens its handle after an error to get there). Failed tiles are never cached.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.png"
>>> Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(path)
>>> with open_slide(path, mpp=0.5) as slide:
...     print(slide.backend, slide.dimensions, slide.level_count, slide.mpp)
...     print(slide.read_region((35, 0), 0, (10, 2)).getpixel((9, 0)))
...     print(slide.read_region((0, 0), 0, (2, 2), as_array=True).shape)
image (40, 30) 1 (0.5, 0.5)
(0, 0, 0, 0)
(2, 2, 3)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import MissingMPPError, SlideError, UnsupportedSlideError
from tilestream.slide import overview
from tilestream.slide.associated import AssociatedImages
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.color_methods import ColorMethods
from tilestream.slide.large_image import LargeImageMethods
from tilestream.slide.levels import best_level
from tilestream.slide.limits import SlideLimits, default_limits
from tilestream.slide.opening import StageMode, open_location
from tilestream.slide.overview import THUMBNAIL_WHOLE_BYTES
from tilestream.slide.properties import file_mpp, normalise_mpp, objective_power, slide_bounds
from tilestream.slide.reading import PathLike, check_location, reading, safe_location
from tilestream.slide.remote import RemoteSlideMethods

if TYPE_CHECKING:
    from tilestream.slide.color import ColorTransform
    from tilestream.slide.dicomweb import DicomWebOptions

__all__ = ["THUMBNAIL_WHOLE_BYTES", "Slide", "open_slide"]

logger = logging.getLogger(__name__)


class Slide(LargeImageMethods, RemoteSlideMethods, ColorMethods):
    """A whole-slide image, read through one backend, with OpenSlide's vocabulary.

    Use :func:`open_slide` (the same arguments). A slide holds an open file:
    close it, or use it as a context manager. It pickles by path (it reopens in
    the receiving process), so it can be handed to worker processes.

    Parameters
    ----------
    path
        The slide file (for DICOM, any file of the series), or a URL a backend reads
        (``dicomweb+https://...``); :attr:`path` drops a URL's credentials and query.
    backend
        ``"auto"`` (default), or a name from :func:`available_backends`.
    mpp
        Microns per pixel overriding the file's (a number, or ``(x, y)``).
    color
        ``"srgb"`` to convert pixels through the slide's ICC profile into sRGB
        (the transform is built once per slide); ``None`` keeps stored values.
    cache_bytes
        Budget of the decoded-tile cache in bytes (``tifffile`` backend). By
        default (``None``) it starts at
        :data:`~tilestream.slide.tilecache.DEFAULT_CACHE_BYTES` and grows, up to
        :data:`~tilestream.slide.tilecache.MAX_AUTO_CACHE_BYTES`, to the rows of
        stored tiles a region spans (plus a region), so that reading a slide in
        grid (row-major) order decodes every stored tile once; an int fixes the
        budget (0: no cache). Memory never exceeds the budget.
    limits
        Memory budgets (:class:`~tilestream.slide.limits.SlideLimits`) for what
        one decode or one read may allocate; ``None``: the module-wide default
        (:func:`~tilestream.slide.limits.default_limits`).
    dicomweb
        A DICOMweb URL's credentials, timeouts, retries (``DicomWebOptions``).
    storage_options
        For a slide in a store (``s3://``, ``gs://``, ``http(s)://``): the
        filesystem's options (``key``, ``secret``, ``endpoint_url``...; see
        ``docs/storage.md``). Never shown in a message or ``repr``.
    stage
        For a slide in a store: ``"auto"`` (default) reads TIFF-family slides
        by byte ranges and copies other formats to local scratch first;
        ``"always"`` copies every slide; ``"never"`` refuses those it cannot
        read remotely (:mod:`tilestream.slide.staging`).
    scratch
        The scratch folder for staged slides (else ``$TILESTREAM_SCRATCH``,
        else the system's temporary folder); a staged copy is removed on close.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        backend: str = "auto",
        mpp: float | tuple[float, float] | None = None,
        color: Literal["srgb"] | None = None,
        cache_bytes: int | None = None,
        limits: SlideLimits | None = None,
        dicomweb: DicomWebOptions | None = None,
        storage_options: Mapping[str, Any] | None = None,
        stage: StageMode = "auto",
        scratch: str | os.PathLike[str] | None = None,
    ) -> None:
        self._location = check_location(path)
        self.path: Path | str = safe_location(self._location)
        if color not in (None, "srgb"):
            raise ValueError(f"color must be None or 'srgb', not {color!r}")
        if limits is not None and not isinstance(limits, SlideLimits):
            raise TypeError(f"limits must be a SlideLimits, not {type(limits).__name__}")
        self.limits: SlideLimits = limits or default_limits()
        self._open_args: dict[str, Any] = {
            "backend": backend,
            "mpp": mpp,
            "color": color,
            "cache_bytes": cache_bytes,
            "limits": limits,
            "dicomweb": dicomweb,
            "storage_options": storage_options,
            "stage": stage,
            "scratch": scratch,
        }
        self._mpp_override = normalise_mpp(mpp, self.path)
        self._color = color
        self._color_transform: ColorTransform | None = None
        self._color_lock = threading.Lock()
        self._opened = open_location(
            self._location,
            backend,
            cache_bytes=cache_bytes,
            limits=self.limits,
            options=dicomweb,
            storage_options=storage_options,
            stage=stage,
            scratch=scratch,
        )
        self._impl = self._opened.impl
        self._source = self._opened.source
        self._closed = False
        self._mpp_cache: tuple[float, float] | Literal[False] | None = False

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        """Close the file and drop caches; later reads raise :class:`SlideError`."""
        if not self._closed:
            self._closed = True
            self._opened.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __reduce__(self) -> tuple[Callable[..., Slide], tuple[Any, ...]]:
        args = dict(self._open_args)
        args["backend"] = self.backend
        return (_reopen, (str(self._location), args))

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, backend={self.backend!r})"

    def _check_open(self) -> SlideBackend:
        if self._closed:
            raise SlideError("the slide is closed", path=self.path)
        return self._impl

    # -- backend / geometry -------------------------------------------------------
    @property
    def backend(self) -> str:
        """Name of the backend reading this slide."""
        return self._impl.name

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self._impl.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._impl.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level."""
        return self._impl.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""
        return self._impl.level_downsamples

    @property
    def tile_size(self) -> tuple[int, int] | None:
        """Stored tile size of level 0, ``None`` when level 0 is not tiled."""
        return self._impl.level_tile_size(0)

    def level_tile_size(self, level: int) -> tuple[int, int] | None:
        """Stored tile size of ``level``, ``None`` when it is not tiled."""
        return self._impl.level_tile_size(self._check_level(level))

    # -- metadata -----------------------------------------------------------------
    @property
    def properties(self) -> Mapping[str, str]:
        """Metadata, using OpenSlide's property names where known (read-only).

        ``openslide.*`` (vendor, mpp-x/y, objective-power, level[i].*, comment,
        icc-size, associated.*), the vendor's own (``aperio.*``,
        ``hamamatsu.*``...) and ``tiff.*`` tags as OpenSlide names them; the
        ``tifffile`` backend adds ``tilestream.format`` and, for a resolution
        it does not trust (72 dpi...), ``tilestream.mpp-suspicious``. Raw
        values are kept: :attr:`mpp` is the checked resolution.
        """
        return MappingProxyType(dict(self._impl.properties))

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        """Associated images (``label``, ``macro``, ``thumbnail``...), decoded on access."""
        return AssociatedImages(self.path, self._impl, self._check_open)

    @property
    def color_profile(self) -> bytes | None:
        """The raw ICC profile of the pixels, if the file has one."""
        return self._impl.color_profile

    @property
    def vendor(self) -> str | None:
        """Format / vendor name (OpenSlide's ``openslide.vendor``), if known."""
        return self._impl.vendor

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel ``(x, y)`` at level 0; ``None`` when unknown or implausible.

        The ``mpp=`` given when opening wins. A resolution from the file that
        cannot be a microscope's (e.g. 72 dpi from a flat TIFF) is logged as a
        warning and treated as missing.
        """
        if self._mpp_override is not None:
            return self._mpp_override
        if self._mpp_cache is False:
            self._mpp_cache = file_mpp(self._impl.properties, self.path)
        return self._mpp_cache

    def require_mpp(self) -> tuple[float, float]:
        """:attr:`mpp`, or :class:`~tilestream.errors.MissingMPPError` naming the file."""
        mpp = self.mpp
        if mpp is None:
            raise MissingMPPError(
                "the slide has no usable resolution (microns per pixel); "
                "pass it with open_slide(path, mpp=0.25) (on the command line: --slide-mpp)",
                path=self.path,
            )
        return mpp

    @property
    def objective_power(self) -> float | None:
        """Scanning objective magnification (``openslide.objective-power``), if known."""
        return objective_power(self._impl.properties)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the non-empty region in level 0, else the full slide."""
        return slide_bounds(self._impl.properties, self.dimensions)

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Background colour ``(r, g, b)`` (``openslide.background-color``, else white)."""
        value = self._impl.properties.get("openslide.background-color")
        if value and len(value) == 6:
            try:
                return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
            except ValueError:
                pass
        return (255, 255, 255)

    # -- pixels -------------------------------------------------------------------
    def _check_level(self, level: int) -> int:
        level = int(level)
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: the slide has {self.level_count}")
        return level

    @overload
    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        as_array: Literal[False] = ...,
    ) -> Image.Image: ...

    @overload
    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        as_array: Literal[True],
    ) -> NDArray[np.uint8]: ...

    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        as_array: bool = False,
    ) -> Image.Image | NDArray[np.uint8]:
        """Read a region, with OpenSlide's semantics.

        Parameters
        ----------
        location
            Top-left ``(x, y)`` in level-0 pixels.
        level
            Pyramid level to read from.
        size
            ``(width, height)`` in pixels of ``level``.
        as_array
            False: an RGBA :class:`PIL.Image.Image` exactly as OpenSlide returns
            it (transparent outside the slide). True: an RGB uint8 array
            ``(h, w, 3)`` with the outside filled with :attr:`background_color`.

        Raises
        ------
        CorruptSlideError
            When stored pixel data is damaged (see the module notes: no latching).
        """
        impl = self._check_open()
        level = self._check_level(level)
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w < 0 or h < 0:
            raise ValueError(f"region size must be non-negative, not {size!r}")
        self.limits.check_region(w, h, path=self.path, what=f"region at {(x, y)} level {level}")
        with reading(self.path, "region at {} level {} size {}", (x, y), level, (w, h)):
            if as_array:
                rgb = impl.read_region_rgb((x, y), level, (w, h), self.background_color)
                return self._apply_color_array(rgb)
            rgba = impl.read_region_rgba((x, y), level, (w, h))
        image = Image.fromarray(rgba, "RGBA")
        if self._color is not None:
            image = self._color_image(image)
        return image

    def read_region_reduced(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        factor: int,
        *,
        scaled_decoding: bool = False,
    ) -> NDArray[np.uint8]:
        """A region of ``level`` reduced ``factor`` times, as an RGB uint8 array.

        Output pixel ``(i, j)`` is the mean of the ``factor`` x ``factor`` block
        of ``level`` pixels starting ``(j * factor, i * factor)`` pixels from
        ``location`` (rounded half up: Pillow's ``Image.reduce``), so the result
        equals ``Image.fromarray(slide.read_region(location, level, (w * factor,
        h * factor), as_array=True)).reduce(factor)`` exactly, and that is how
        it is computed in general. The ``tifffile`` backend serves it from its
        stored tiles when the blocks fall inside them (``location`` on the
        ``factor`` grid of the level, the stored tile size a multiple of
        ``factor``, the region inside the level, no ``color=`` transform): each
        stored tile is decoded and reduced once and kept reduced in the cache,
        with no full-size intermediate.

        Parameters
        ----------
        location
            Top-left ``(x, y)`` in level-0 pixels.
        level
            Pyramid level to read from.
        size
            ``(width, height)`` of the result (reduced pixels).
        factor
            Integer reduction, at least 1.
        scaled_decoding
            Opt-in, changes pixels: where the stored tiles are plain JPEG and
            ``factor`` is 2, 4 or 8, decode them directly at that scale
            (libjpeg-turbo's scaled inverse DCT: cheaper than a full decode,
            no reduction afterwards). The pixels are close to the box mean but
            not equal to it (see ``docs/benchmarks.md``); elsewhere the exact mean.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from tilestream.testing.synthetic import make_synthetic_slide
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.svs"
        >>> _ = make_synthetic_slide(path, width=1024, height=768, levels=1)
        >>> with open_slide(path) as slide:
        ...     small = slide.read_region_reduced((256, 0), 0, (128, 128), 2)
        ...     full = slide.read_region((256, 0), 0, (256, 256), as_array=True)
        ...     expected = np.asarray(Image.fromarray(full).reduce(2))
        ...     print(small.shape, bool((small == expected).all()))
        (128, 128, 3) True
        """
        impl = self._check_open()
        level = self._check_level(level)
        factor = int(factor)
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, not {factor!r}")
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w < 0 or h < 0:
            raise ValueError(f"region size must be non-negative, not {size!r}")
        if factor == 1 or w == 0 or h == 0:
            return self.read_region((x, y), level, (w, h), as_array=True)
        self.limits.check_region(
            w, h, path=self.path, what=f"region at {(x, y)} level {level} reduced {factor}x"
        )
        ds = self.level_downsamples[level]
        lx, ly = x / ds, y / ds
        if self._color is None and lx.is_integer() and ly.is_integer():
            what = "region at {} level {} size {} reduced {}x"
            with reading(self.path, what, (x, y), level, (w, h), factor):
                got = impl.read_level_reduced(
                    level, int(lx), int(ly), w, h, factor, scaled=scaled_decoding
                )
            if got is not None:
                return got
        full = self.read_region((x, y), level, (w * factor, h * factor), as_array=True)
        return np.array(Image.fromarray(full).reduce(factor))  # writable, as the fast path

    def get_thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """An RGB thumbnail fitting in ``size``, over :attr:`background_color` (as OpenSlide).

        As OpenSlide, the best level for the downsample is read whole and
        shrunk with Lanczos (the same pixels). A level over
        :data:`THUMBNAIL_WHOLE_BYTES` or the region budget (a slide without a
        small enough level) is first box-reduced, in bounded chunks, to twice
        the thumbnail's size (:meth:`read_level_resized`; a sparse file's empty
        area is not read), so memory stays bounded whatever the slide declares.
        """
        return overview.thumbnail(self, size)

    def read_level_resized(
        self,
        level: int,
        size: tuple[int, int],
        *,
        rect: tuple[int, int, int, int] | None = None,
    ) -> NDArray[np.uint8]:
        """The whole of ``level`` (or ``rect`` of it) shrunk to ``size`` by box means, RGB uint8.

        Read in chunks of bounded size, so memory is the result plus a few
        tens of MiB whatever the level's size; stored tiles that were never
        written (a sparse file) are not read. ``rect`` is ``(x, y, width,
        height)`` in pixels of ``level``. See
        :func:`tilestream.slide.overview.read_level_resized`.
        """
        return overview.read_level_resized(self, level, size, rect=rect)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The largest level whose downsample is at most ``downsample`` (OpenSlide's rule).

        :func:`~tilestream.slide.levels.best_level` with no tolerance, so the
        answer is OpenSlide's for the same downsamples.
        """
        return best_level(self.level_downsamples, downsample, tolerance=0.0)

    def cache_info(self) -> dict[str, int] | None:
        """Statistics of the decoded-tile cache (``tifffile`` backend), else ``None``.

        Keys: ``hits``, ``misses`` (= stored tiles decoded), ``tiles`` and
        ``bytes`` (now cached) and ``max_bytes`` (the ``cache_bytes`` budget).
        """
        return self._check_open().cache_info()

    # -- stored tiles (JPEG pass-through) ------------------------------------------
    def stored_tile_grid(self, level: int) -> tuple[int, int] | None:
        """``(tile_w, tile_h)`` of ``level``'s stored JPEG tiles, or ``None``.

        Not ``None`` only when the stored tiles are plain 8-bit RGB JPEG tiles
        that :meth:`read_stored_tile_bytes` can hand out without re-encoding
        (``tifffile``: Aperio SVS and generic JPEG TIFF levels; ``dicomweb``: JPEG
        baseline frames; NDPI strips, other codecs and other backends: ``None``).
        Stored tile ``(col, row)`` covers level pixels
        ``[col * tile_w, (col + 1) * tile_w) x [row * tile_h, (row + 1) * tile_h)``;
        edge tiles are stored full-size (padding beyond the level's edge).
        """
        return self._check_open().stored_tile_grid(self._check_level(level))

    def read_stored_tile_bytes(self, level: int, col: int, row: int) -> bytes:
        """Stored JPEG tile ``(col, row)`` of ``level`` as a standalone JPEG file.

        The bytes are the tile as stored, with the page's ``JPEGTables`` merged
        in and, for RGB-coded tiles (Aperio), an Adobe APP14 marker with
        ``transform=0`` so any decoder (Pillow, simplejpeg, libjpeg, browsers)
        decodes the right colours: the pixels equal OpenSlide's ``read_region``
        of that tile. No ICC conversion is applied (``color=`` is ignored).

        Raises
        ------
        UnsupportedSlideError
            When :meth:`stored_tile_grid` is ``None`` for ``level``.
        IndexError
            When ``(col, row)`` is outside the level's tile grid.
        CorruptSlideError
            When the stored bytes are truncated or not a JPEG stream.
        """
        impl = self._check_open()
        level = self._check_level(level)
        if impl.stored_tile_grid(level) is None:
            raise UnsupportedSlideError(
                f"level {level} has no stored JPEG tiles to pass through "
                f"(backend {impl.name}); read pixels with read_region",
                path=self.path,
            )
        return impl.read_stored_tile_bytes(level, int(col), int(row))


def open_slide(
    path: PathLike,
    *,
    backend: str = "auto",
    mpp: float | tuple[float, float] | None = None,
    color: Literal["srgb"] | None = None,
    cache_bytes: int | None = None,
    limits: SlideLimits | None = None,
    dicomweb: DicomWebOptions | None = None,
    storage_options: Mapping[str, Any] | None = None,
    stage: StageMode = "auto",
    scratch: str | os.PathLike[str] | None = None,
) -> Slide:
    """Open a slide file or URL (a context manager); see :class:`Slide` (and the examples above)."""
    return Slide(
        path,
        backend=backend,
        mpp=mpp,
        color=color,
        cache_bytes=cache_bytes,
        limits=limits,
        dicomweb=dicomweb,
        storage_options=storage_options,
        stage=stage,
        scratch=scratch,
    )


def _reopen(path: str, args: dict[str, Any]) -> Slide:
    return Slide(path, **args)
