"""Memory budgets of a slide: what one decode or one read may allocate.

A slide file declares its geometry (image, level, tile and strip sizes) and
nothing forces it to hold what it declares: a 3 KB TIFF can declare a
10^6 x 10^6 px image stored in 65,536 px JPEG tiles. Every allocation whose
size comes from the file or from a request is checked against a budget
*before* it is made, and one over budget raises
:class:`~tilestream.errors.SlideTooLargeError` naming the file, what it
declares and the budget (never a ``MemoryError``, never a kill):

``tile_bytes`` (default 256 MiB)
    One stored tile or strip decoded (the decoder's output), checked for
    every level when the slide is opened, whatever the backend (an 8192 x 8192
    RGBA tile is 256 MiB). A file over it is refused whole.
``region_bytes`` (default 1 GiB)
    One region read (:meth:`~tilestream.slide.Slide.read_region`, as RGBA, 4
    bytes a pixel; :meth:`~tilestream.slide.Slide.read_region_reduced`), an
    associated image, a flat image decoded whole (``image`` backend) and the
    output of a whole-level overview (:func:`tilestream.slide.overview.read_level_resized`,
    which thumbnails and extraction's low-resolution pass use).
``stage_bytes`` (default 64 GiB)
    Local scratch disk one remote slide may be staged to (a format only
    OpenSlide reads, copied from a store: :mod:`tilestream.slide.staging`).

The budget of a slide is fixed when it is opened: ``open_slide(path,
limits=SlideLimits(region_bytes=4 << 30))``; without ``limits=`` it is the
module-wide default (:func:`default_limits`, :func:`set_default_limits`).

Examples
--------
>>> limits = SlideLimits(region_bytes=1 << 20)
>>> limits.check_region(512, 512, path="a.svs", what="region")
>>> limits.check_region(1024, 1024, path="a.svs", what="region at (0, 0) level 0")
Traceback (most recent call last):
...
tilestream.errors.SlideTooLargeError: a.svs: region at (0, 0) level 0 of 1024x1024 px needs 4.0 MiB, over the region budget of 1.0 MiB (open_slide(..., limits=SlideLimits(region_bytes=...)))
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass

from tilestream.errors import SlideTooLargeError

__all__ = [
    "DEFAULT_REGION_BYTES",
    "DEFAULT_STAGE_BYTES",
    "DEFAULT_TILE_BYTES",
    "SlideLimits",
    "default_limits",
    "format_bytes",
    "set_default_limits",
]

#: Default budget of one decoded stored tile or strip.
DEFAULT_TILE_BYTES = 256 * 1024 * 1024
#: Default budget of one region, thumbnail level, associated or flat image.
DEFAULT_REGION_BYTES = 1024 * 1024 * 1024
#: Default limit of the bytes one remote slide may be staged to local scratch.
DEFAULT_STAGE_BYTES = 64 * 1024**3


def format_bytes(n: float) -> str:
    """``n`` bytes for a message (``"1.5 GiB"``).

    >>> format_bytes(3 << 30), format_bytes(12.5 * 2**40), format_bytes(100)
    ('3.0 GiB', '12.5 TiB', '100 B')
    """
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{int(n)} B"


@dataclass(frozen=True)
class SlideLimits:
    """The memory budgets of a slide (bytes); see the module notes.

    Parameters
    ----------
    tile_bytes
        Largest decoded stored tile or strip.
    region_bytes
        Largest region, thumbnail level, associated, flat or overview image.
    stage_bytes
        Largest remote slide (with its companion files) staged to local scratch.
    """

    tile_bytes: int = DEFAULT_TILE_BYTES
    region_bytes: int = DEFAULT_REGION_BYTES
    stage_bytes: int = DEFAULT_STAGE_BYTES

    def __post_init__(self) -> None:
        for name in ("tile_bytes", "region_bytes", "stage_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of bytes, not {value!r}")

    def check_tile(
        self,
        width: int,
        height: int,
        bytes_per_pixel: int,
        *,
        path: str | os.PathLike[str],
        what: str,
    ) -> None:
        """Raise :class:`SlideTooLargeError` when decoding one ``width`` x ``height`` segment is over budget."""
        need = int(width) * int(height) * int(bytes_per_pixel)
        if need > self.tile_bytes:
            raise SlideTooLargeError(
                f"{what} of {width}x{height} px needs {format_bytes(need)} to decode, over the "
                f"tile budget of {format_bytes(self.tile_bytes)} "
                "(open_slide(..., limits=SlideLimits(tile_bytes=...)))",
                path=path,
            )

    def check_region(
        self,
        width: int,
        height: int,
        bytes_per_pixel: int = 4,
        *,
        path: str | os.PathLike[str] | None,
        what: str,
    ) -> None:
        """Raise :class:`SlideTooLargeError` when a ``width`` x ``height`` image is over budget."""
        need = int(width) * int(height) * int(bytes_per_pixel)
        if need > self.region_bytes:
            raise SlideTooLargeError(
                f"{what} of {width}x{height} px needs {format_bytes(need)}, over the region "
                f"budget of {format_bytes(self.region_bytes)} "
                "(open_slide(..., limits=SlideLimits(region_bytes=...)))",
                path=path,
            )


_DEFAULT = SlideLimits()
#: The limits of the slide being opened (read by ``SlideBackend.__init__``).
OPENING: contextvars.ContextVar[SlideLimits | None] = contextvars.ContextVar(
    "tilestream_slide_limits", default=None
)


def default_limits() -> SlideLimits:
    """The budgets of slides opened without ``limits=``.

    >>> default_limits().tile_bytes == DEFAULT_TILE_BYTES
    True
    """
    return _DEFAULT


def set_default_limits(limits: SlideLimits) -> SlideLimits:
    """Set the budgets of slides opened from now on without ``limits=``; return the old ones.

    The setting is per process: worker processes of an extraction start from
    the defaults (a slide pickled to a worker keeps its own ``limits=``).

    >>> old = set_default_limits(SlideLimits(region_bytes=2 << 30))
    >>> default_limits().region_bytes == 2 << 30
    True
    >>> _ = set_default_limits(old)
    """
    global _DEFAULT
    if not isinstance(limits, SlideLimits):
        raise TypeError(f"limits must be a SlideLimits, not {type(limits).__name__}")
    old, _DEFAULT = _DEFAULT, limits
    return old
