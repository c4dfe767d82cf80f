"""Opening a slide file: which backend reads it, and why none could.

:func:`open_backend` opens a file with the named backend, or with
``backend="auto"`` tries the registered backends fastest-first
(:mod:`tilestream.slide.registry`) and keeps the first one that opens it;
when none does, the error lists every backend's reason, the first backend
that recognised the format explaining best. :func:`detect_format` names a
file's format without opening it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tilestream.errors import SlideError, SlideTooLargeError, UnsupportedSlideError
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.limits import OPENING, SlideLimits
from tilestream.slide.reading import PathLike, check_path
from tilestream.slide.registry import available_backends, backend_class

__all__ = ["detect_format", "open_backend"]

logger = logging.getLogger(__name__)


def detect_format(path: PathLike) -> str | None:
    """Name the slide format of ``path``, or ``None`` when no backend recognises it.

    Vendor formats use OpenSlide's names (``aperio``, ``hamamatsu``,
    ``generic-tiff``, ``dicom``...); other TIFFs give ``tiff`` or
    ``ome-tiff``; plain images give Pillow's format in lower case (``png``...).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from PIL import Image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    >>> detect_format(path)
    'png'
    """
    p = check_path(path)
    for name in available_backends():
        fmt = backend_class(name).detect_format(p)
        if fmt is not None:
            return fmt
    return None


def _check_tile_sizes(impl: SlideBackend, limits: SlideLimits, path: Path) -> None:
    """Refuse a slide whose declared stored tiles are over the tile budget (any backend)."""
    for level in range(len(impl.level_dimensions)):
        size = impl.level_tile_size(level)
        if size is not None:
            limits.check_tile(*size, 4, path=path, what=f"level {level}: a stored tile")


def _construct(
    cls: type[SlideBackend], path: Path, cache_bytes: int | None, limits: SlideLimits
) -> SlideBackend:
    """Open ``path`` with one backend; anything but our own errors becomes one."""
    token = OPENING.set(limits)  # SlideBackend.__init__ picks the budgets up
    try:
        impl = cls(path, cache_bytes=cache_bytes)
    except SlideError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a dependency choking on a malformed file
        raise UnsupportedSlideError(
            f"the {cls.name} backend cannot parse it ({type(exc).__name__}: {exc})", path=path
        ) from exc
    finally:
        OPENING.reset(token)
    try:
        _check_tile_sizes(impl, limits, path)
    except BaseException:
        impl.close()
        raise
    return impl


def open_backend(
    path: Path, backend: str, *, cache_bytes: int | None, limits: SlideLimits
) -> SlideBackend:
    if backend != "auto":
        cls = backend_class(backend)
        if not cls.available():
            raise SlideError(f"slide backend {backend!r} is not available here", path=path)
        return _construct(cls, path, cache_bytes, limits)
    errors: list[tuple[str, SlideError]] = []
    for name in available_backends():
        try:
            return _construct(backend_class(name), path, cache_bytes, limits)
        except SlideTooLargeError:
            raise  # what the file declares is over budget whichever backend reads it
        except SlideError as exc:
            logger.debug("%s: backend %s cannot open it: %s", path, name, exc.message)
            errors.append((name, exc))
    if not errors:
        raise UnsupportedSlideError("no slide backend is available", path=path)
    # The first backend that recognised the format explains best why it failed
    # (e.g. OpenSlide on an unsupported DICOM transfer syntax), else the first tried.
    recognised = [e for e in errors if backend_class(e[0]).detect_format(path) is not None]
    first = (recognised or errors)[0][1]
    reasons = "; ".join(f"{name}: {exc.message}" for name, exc in errors)
    err_cls = type(first) if isinstance(first, UnsupportedSlideError) else UnsupportedSlideError
    raise err_cls(f"no backend can read this file ({reasons})", path=path) from first
