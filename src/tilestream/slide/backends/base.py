"""The backend contract: :class:`SlideBackend`, the base class every slide backend subclasses.

A backend subclasses :class:`SlideBackend`, is registered with
:func:`~tilestream.slide.registry.register_backend`, and is then tried by
``open_slide(..., backend="auto")`` in ``priority`` order (lower first).
Re-exported as ``tilestream.slide.SlideBackend`` (and from the older
``tilestream.slide.base`` and ``tilestream.slide.backend``).

Examples
--------
>>> from tilestream.slide.backends.image import ImageBackend
>>> issubclass(ImageBackend, SlideBackend), ImageBackend.priority
(True, 30)
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import UnsupportedSlideError
from tilestream.slide._paint import paint_region, paint_region_rgb, rgba_to_rgb
from tilestream.slide.limits import OPENING, SlideLimits, default_limits
from tilestream.storage import IOStats

__all__ = ["SlideBackend"]


class SlideBackend(abc.ABC):
    """One way of reading a slide file (OpenSlide, tifffile, Pillow...).

    Subclasses set :attr:`name` and :attr:`priority` (lower is tried first by
    ``backend="auto"``), open the file in ``__init__`` (raising a
    :class:`~tilestream.errors.SlideError` subclass that names the file and
    the cause), and implement the abstract members. Pixel reads either
    implement :meth:`read_level_rgb` (an in-bounds rectangle of one level) and
    inherit OpenSlide-compatible :meth:`read_region_rgba`, or override
    :meth:`read_region_rgba` directly.

    Parameters
    ----------
    path
        The slide file.
    cache_bytes
        Budget for decoded pixel data the backend may keep (0 disables caching);
        ``None``: :data:`~tilestream.slide.tilecache.DEFAULT_CACHE_BYTES`, growing
        as reads need up to :data:`~tilestream.slide.tilecache.MAX_AUTO_CACHE_BYTES`.

    Attributes
    ----------
    limits
        The memory budgets of the slide being opened
        (:class:`~tilestream.slide.limits.SlideLimits`): a backend checks what
        it decodes whole against them before allocating, and raises
        :class:`~tilestream.errors.SlideTooLargeError`.
    """

    name: ClassVar[str]
    priority: ClassVar[int] = 100
    #: Whether the backend reads a slide in a store by byte ranges (``s3://``...),
    #: taking it from :data:`tilestream.slide.remote.SOURCE` while it is constructed;
    #: other backends get such a slide staged to a local file.
    reads_ranges: ClassVar[bool] = False

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        self.path = path
        self.cache_bytes = cache_bytes
        self.limits: SlideLimits = OPENING.get() or default_limits()

    @classmethod
    def available(cls) -> bool:
        """Whether the backend's dependencies are importable."""
        return True

    @classmethod
    def detect_format(cls, path: Path) -> str | None:
        """Cheaply name the file's format if this backend recognises it, else ``None``."""
        return None

    # -- geometry -----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level, level 0 first."""

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0 (OpenSlide's formula)."""
        (w0, h0), *_ = self.level_dimensions
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions)

    def level_tile_size(self, level: int) -> tuple[int, int] | None:
        """Stored tile size ``(width, height)`` of a level, ``None`` when not tiled."""
        return None

    # -- metadata -----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def properties(self) -> Mapping[str, str]:
        """Metadata, with OpenSlide's property names (``openslide.mpp-x``...) where known."""

    @property
    def vendor(self) -> str | None:
        """Scanner vendor / format name as OpenSlide names it (``aperio``...)."""
        return self.properties.get("openslide.vendor")

    @property
    def color_profile(self) -> bytes | None:
        """The level-0 ICC profile, raw bytes."""
        return None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        """Names of the associated images (``label``, ``macro``, ``thumbnail``...)."""
        return ()

    def read_associated_image(self, name: str) -> Image.Image:
        """Decode one associated image as RGB(A)."""
        raise KeyError(name)

    # -- pixels -------------------------------------------------------------------
    def read_level_rgb(self, level: int, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """RGB uint8 ``(h, w, 3)`` of a rectangle lying inside ``level``."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_level_rgb")

    def read_region_rgba(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """OpenSlide's ``read_region`` as a non-premultiplied RGBA ``(h, w, 4)`` array."""
        ds = self.level_downsamples[level]
        dims = self.level_dimensions[level]

        def read(x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
            return self.read_level_rgb(level, x, y, w, h)

        x, y = location
        w, h = size
        # OpenSlide shifts the output by whole level pixels for a negative
        # location (truncating) and paints from level-0 coordinate 0.
        tx = int(-x / ds) if x < 0 else 0
        ty = int(-y / ds) if y < 0 else 0
        if x >= 0 and y >= 0:
            return paint_region(read, dims, x / ds, y / ds, w, h)
        out = np.zeros((h, w, 4), np.uint8)
        pw, ph = w - tx, h - ty
        if pw > 0 and ph > 0:
            fx = 0.0 if x < 0 else x / ds
            fy = 0.0 if y < 0 else y / ds
            out[ty:, tx:] = paint_region(read, dims, fx, fy, pw, ph)
        return out

    def read_region_rgb(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        background: tuple[int, int, int],
    ) -> NDArray[np.uint8]:
        """:meth:`read_region_rgba` composited over ``background`` as RGB ``(h, w, 3)``.

        Backends implementing :meth:`read_level_rgb` skip the RGBA detour when
        the region is pixel-aligned and inside the level (the common tile read).
        """
        if (
            type(self).read_level_rgb is not SlideBackend.read_level_rgb
            and location[0] >= 0
            and location[1] >= 0
        ):
            ds = self.level_downsamples[level]

            def read(x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
                return self.read_level_rgb(level, x, y, w, h)

            rgb = paint_region_rgb(
                read,
                self.level_dimensions[level],
                location[0] / ds,
                location[1] / ds,
                size[0],
                size[1],
            )
            if rgb is not None:
                return rgb
        return rgba_to_rgb(self.read_region_rgba(location, level, size), background)

    def read_level_reduced(
        self, level: int, x: int, y: int, w: int, h: int, factor: int, *, scaled: bool = False
    ) -> NDArray[np.uint8] | None:
        """``(h, w, 3)`` of ``level`` from level pixel ``(x, y)``, reduced ``factor`` times.

        Each output pixel is the mean of a ``factor`` x ``factor`` block, rounded
        as Pillow's ``Image.reduce`` (with ``scaled``, a backend may decode JPEG
        at the reduced scale instead). A backend that can do this cheaper than
        reading the full region overrides it; ``None`` (the default) tells
        :meth:`~tilestream.slide.Slide.read_region_reduced` to read the full
        region and reduce it.
        """
        return None

    def cache_info(self) -> dict[str, int] | None:
        """Decoded-tile cache statistics, ``None`` when the backend has no such cache."""
        return None

    def segment_mask(self, level: int) -> tuple[NDArray[np.bool_], tuple[int, int]] | None:
        """Which stored tiles (or strips) of ``level`` hold data, when the backend knows.

        ``(present, (seg_w, seg_h))``: ``present[row, col]`` is False where the
        segment covering level pixels ``[col * seg_w, (col + 1) * seg_w) x
        [row * seg_h, (row + 1) * seg_h)`` was never written; such pixels read
        as white ``(255, 255, 255)``. ``None`` (the default): unknown, every
        pixel must be read. Lets whole-level reads skip a sparse file's empty
        area without reading it (:mod:`tilestream.slide.overview`).
        """
        return None

    # -- stored tiles (pass-through) ---------------------------------------------
    def stored_tile_grid(self, level: int) -> tuple[int, int] | None:
        """``(tile_w, tile_h)`` when ``level``'s stored tiles can be passed through as JPEG."""
        return None

    def read_stored_tile_bytes(self, level: int, col: int, row: int) -> bytes:
        """Stored tile ``(col, row)`` of ``level`` as a standalone JPEG file."""
        raise UnsupportedSlideError(
            f"the {self.name} backend cannot pass stored tiles through", path=self.path
        )

    # -- remote reads ------------------------------------------------------------
    def prefetch(self, level: int, boxes: Sequence[tuple[int, int, int, int]]) -> None:  # noqa: B027
        """Start fetching what level rectangles ``(x, y, w, h)`` need (remote slides only).

        The default does nothing: a backend reading files has no round trips to hide.
        """

    @property
    def io_stats(self) -> IOStats | None:
        """Requests and bytes of a slide read from a store, ``None`` for a file."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles and caches."""
