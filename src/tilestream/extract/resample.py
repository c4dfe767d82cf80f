"""Resizing a read region to the output tile size: Lanczos-3, by Pillow or by libvips.

Both resizers compute the same antialiased Lanczos-3 reduction (Pillow's
``Image.resize(..., LANCZOS)`` and libvips' ``reduce(kernel="lanczos3")``);
they round differently, so their pixels differ slightly (53-67 dB PSNR apart
on the sample slide's tissue; up to 9 grey levels, at strong edges).
libvips computes it with SIMD, in the calling thread, for a fraction of
Pillow's CPU time (see docs/benchmarks.md), so extraction uses it when
``pyvips`` is installed (``pip install 'tilestream[vips]'``).

The resizer is part of the extraction config (``ExtractConfig.resizer``):
``"auto"`` resolves to one of the two when the config is made, so the config
hash, and therefore resume, knows which one made a run's pixels.

Examples
--------
>>> import numpy as np
>>> tile = np.zeros((604, 604, 3), np.uint8)
>>> resize_tile(tile, 299, resizer="pillow").shape
(299, 299, 3)
>>> resolve_resizer("pillow")
'pillow'
"""

from __future__ import annotations

import functools
import threading
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import ConfigError, MissingDependencyError

__all__ = ["RESIZERS", "libvips_version", "resize_tile", "resolve_resizer", "vips_available"]

#: The accepted names; ``"auto"`` is libvips when it is installed, else Pillow.
RESIZERS: tuple[str, ...] = ("auto", "pillow", "vips")


@functools.cache
def _pyvips() -> ModuleType | None:
    """The ``pyvips`` module, or ``None`` when it (or the libvips it loads) is missing."""
    try:
        import pyvips
    except Exception:  # ImportError; OSError or a bare Exception when libvips fails to load or init
        return None
    return pyvips


def vips_available() -> bool:
    """Whether ``pyvips`` and libvips can be loaded."""
    return _pyvips() is not None


def libvips_version() -> str | None:
    """The loaded libvips' version, e.g. ``"8.18.7"``, or ``None`` when it cannot be loaded."""
    pyvips = _pyvips()
    if pyvips is None:
        return None
    return ".".join(str(pyvips.version(i)) for i in range(3))


def resolve_resizer(name: str) -> str:
    """The concrete resizer for ``name``: ``"pillow"`` or ``"vips"``.

    Raises
    ------
    ConfigError
        ``name`` is not one of :data:`RESIZERS`.
    MissingDependencyError
        ``name`` is ``"vips"`` and ``pyvips`` cannot be loaded.
    """
    if name not in RESIZERS:
        raise ConfigError(f"resizer must be one of {', '.join(RESIZERS)}, not {name!r}")
    if name == "auto":
        return "vips" if vips_available() else "pillow"
    if name == "vips" and not vips_available():
        raise MissingDependencyError(
            "pyvips (and the libvips it loads) is needed for resizer='vips' but cannot be "
            "loaded here; install it with: pip install 'tilestream[vips]' (on every worker "
            "of a cluster), or extract with resizer='pillow'"
        )
    return name


def resize_tile(
    tile: NDArray[np.uint8], size: int, *, resizer: str = "pillow"
) -> NDArray[np.uint8]:
    """Resize a square uint8 tile to ``size`` x ``size`` with Lanczos-3 antialiasing.

    Parameters
    ----------
    tile
        ``(n, n, bands)`` or ``(n, n)`` uint8 pixels.
    size
        Output width and height. A tile already that size is returned as it
        is. Extraction reduces; the rare enlargement by a pixel or two (a
        pyramid level within rounding of the scale needed) is done by Pillow
        whatever the resizer, as libvips' ``reduce`` cannot enlarge.
    resizer
        ``"pillow"`` or ``"vips"`` (see :func:`resolve_resizer` for ``"auto"``).
    """
    resizer = resolve_resizer(resizer)
    if tile.dtype != np.uint8 or tile.ndim not in (2, 3):
        raise ValueError(f"expected (h, w[, bands]) uint8 pixels, not {tile.dtype} {tile.shape}")
    if size < 1:
        raise ValueError(f"cannot resize a tile to {size} px")
    if tile.shape[0] == size and tile.shape[1] == size:
        return tile
    if resizer == "pillow" or size > min(tile.shape[0], tile.shape[1]):
        img = Image.fromarray(np.ascontiguousarray(tile))
        return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
    # (copied into the pipeline's own buffer, strided or not)
    return _vips_reduce(tile if tile.ndim == 3 else tile[..., None], size).reshape(
        (size, size, *tile.shape[2:])
    )


#: Per thread: (height, width, bands, size) -> (input buffer, its image, a region of the result).
_PIPELINES = threading.local()


def _vips_reduce(tile: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """libvips' Lanczos-3 ``reduce`` of ``tile``, through a pipeline kept per thread and shape.

    Building a ``reduce`` (its masks and vector code) costs a good part of a
    whole resize, so each thread builds one per shape, over a buffer of its
    own, and for each tile copies the pixels in, invalidates libvips' caches
    of the old pixels and fetches the result through a region: computed in the calling thread, with no libvips
    threadpool started per tile (and none of the log messages it sends
    through Python).
    """
    pyvips = _pyvips()
    assert pyvips is not None  # resolve_resizer checked
    h, w, bands = tile.shape
    pipelines: dict[tuple[int, ...], tuple[Any, Any, Any]] | None = getattr(
        _PIPELINES, "by_shape", None
    )
    if pipelines is None:
        pipelines = _PIPELINES.by_shape = {}
    key = (h, w, bands, size)
    if key not in pipelines:
        if len(pipelines) >= 4:  # a few shapes per thread at most
            pipelines.clear()
        buf = np.empty((h, w, bands), np.uint8)
        image = pyvips.Image.new_from_memory(buf.data, w, h, bands, "uchar")
        reduced = image.reduce(w / size, h / size, kernel="lanczos3")
        if (reduced.width, reduced.height) != (size, size):  # pragma: no cover - libvips rounding
            raise RuntimeError(f"libvips reduced {w}x{h} to {reduced.width}x{reduced.height}")
        pipelines[key] = (buf, image, pyvips.Region.new(reduced))
    buf, image, region = pipelines[key]
    np.copyto(buf, tile)
    image.invalidate()
    pixels = np.frombuffer(region.fetch(0, 0, size, size), np.uint8)
    return pixels.reshape(size, size, bands)
