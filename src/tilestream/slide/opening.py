"""Opening a slide file or URL: which backend reads it, and why none could.

:func:`open_backend` opens a file with the named backend, or with
``backend="auto"`` tries the registered file backends fastest-first
(:mod:`tilestream.slide.registry`) and keeps the first one that opens it;
when none does, the error lists every backend's reason, the first backend
that recognised the format explaining best. A URL (``dicomweb+https://...``)
goes to the backend declaring its scheme in ``url_schemes``, never to a file
backend; a URL backend is never tried on a file. :func:`detect_format` names
a file's format without opening it.
"""

from __future__ import annotations

import copy
import logging
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tilestream.errors import (
    MissingDependencyError,
    SlideError,
    SlideTooLargeError,
    UnsupportedSlideError,
)
from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.dicomweb import OPTIONS, DicomWebOptions
from tilestream.slide.limits import OPENING, SlideLimits
from tilestream.slide.reading import PathLike, SlideLocation, check_path, safe_location, url_scheme
from tilestream.slide.registry import (
    available_backends,
    backend_class,
    url_backend,
    url_schemes_of,
)
from tilestream.slide.remote import SOURCE, RemoteSource, is_storage_url, open_source
from tilestream.slide.staging import acquire_staged

__all__ = ["STAGE_MODES", "Opened", "StageMode", "detect_format", "open_backend", "open_location"]

#: When a remote slide is staged (copied to local scratch): see :func:`open_location`.
StageMode = Literal["never", "auto", "always"]
STAGE_MODES: tuple[str, ...] = ("never", "auto", "always")

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
    for name in _file_backends():
        fmt = backend_class(name).detect_format(p)
        if fmt is not None:
            return fmt
    return None


def _file_backends() -> tuple[str, ...]:
    return tuple(n for n in available_backends() if not url_schemes_of(backend_class(n)))


def _check_tile_sizes(impl: SlideBackend, limits: SlideLimits, path: SlideLocation) -> None:
    """Refuse a slide whose declared stored tiles are over the tile budget (any backend)."""
    for level in range(len(impl.level_dimensions)):
        size = impl.level_tile_size(level)
        if size is not None:
            limits.check_tile(*size, 4, path=path, what=f"level {level}: a stored tile")


def _construct(
    cls: type[SlideBackend],
    path: SlideLocation,
    cache_bytes: int | None,
    limits: SlideLimits,
    options: DicomWebOptions | None = None,
) -> SlideBackend:
    """Open ``path`` with one backend; anything but our own errors becomes one."""
    token = OPENING.set(limits)  # SlideBackend.__init__ picks the budgets up
    options_token = OPTIONS.set(options)
    shown = safe_location(path)
    try:
        impl = cls(path, cache_bytes=cache_bytes)  # type: ignore[arg-type]
    except (SlideError, MissingDependencyError):
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a dependency choking on a malformed file
        detail = f"{type(exc).__name__}: {exc}" if shown == path else type(exc).__name__
        raise UnsupportedSlideError(
            f"the {cls.name} backend cannot parse it ({detail})", path=shown
        ) from exc
    finally:
        OPTIONS.reset(options_token)
        OPENING.reset(token)
    try:
        _check_tile_sizes(impl, limits, shown)
    except BaseException:
        impl.close()
        raise
    return impl


def _open_url(
    url: str,
    backend: str,
    cache_bytes: int | None,
    limits: SlideLimits,
    options: DicomWebOptions | None,
) -> SlideBackend:
    scheme = url_scheme(url) or ""
    shown = safe_location(url)
    cls = url_backend(scheme) if backend == "auto" else backend_class(backend)
    if cls is None:
        raise UnsupportedSlideError(f"no slide backend reads {scheme}:// URLs", path=shown)
    if scheme not in url_schemes_of(cls):
        raise SlideError(f"the {cls.name} backend does not read {scheme}:// URLs", path=shown)
    return _construct(cls, url, cache_bytes, limits, options)


def open_backend(
    path: SlideLocation,
    backend: str,
    *,
    cache_bytes: int | None,
    limits: SlideLimits,
    options: DicomWebOptions | None = None,
) -> SlideBackend:
    """Open a file or URL with ``backend`` (a name, or ``"auto"``)."""
    if isinstance(path, str):
        if url_scheme(path) is not None:
            return _open_url(path, backend, cache_bytes, limits, options)
        path = Path(path)
    if backend != "auto":
        cls = backend_class(backend)
        if url_schemes_of(cls):
            raise SlideError(f"the {backend} backend reads URLs, not files", path=path)
        if not cls.available():
            raise SlideError(f"slide backend {backend!r} is not available here", path=path)
        return _construct(cls, path, cache_bytes, limits)
    errors: list[tuple[str, SlideError]] = []
    for name in _file_backends():
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


@dataclass
class Opened:
    """An opened slide: its backend, the remote object it reads, what closing must clean up."""

    impl: SlideBackend
    source: RemoteSource | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Close the backend, then remove what was staged for it."""
        try:
            self.impl.close()
        finally:
            for fn in self.cleanup:
                fn()


def _ranged_backends(backend: str) -> list[type[SlideBackend]]:
    names = _file_backends() if backend == "auto" else (backend,)
    classes = [backend_class(n) for n in names]
    return [c for c in classes if getattr(c, "reads_ranges", False) and c.available()]


def _open_remote(
    url: str,
    backend: str,
    *,
    cache_bytes: int | None,
    limits: SlideLimits,
    storage_options: Mapping[str, Any] | None,
    stage: StageMode,
    scratch: str | os.PathLike[str] | None,
) -> Opened:
    source = open_source(url, storage_options)
    reasons: list[str] = []
    if stage != "always":
        for cls in _ranged_backends(backend):
            token = SOURCE.set(source)
            try:
                return Opened(_construct(cls, source.url, cache_bytes, limits), source)
            except UnsupportedSlideError as exc:
                logger.debug(
                    "%s: backend %s cannot read it remotely: %s", source.url, cls.name, exc.message
                )
                reasons.append(f"{cls.name}: {exc.message}")
            finally:
                SOURCE.reset(token)
        if stage == "never":
            why = f" ({'; '.join(reasons)})" if reasons else ""
            raise UnsupportedSlideError(
                f"no backend reads this slide by byte ranges{why}; it must be copied to local "
                "scratch first: open it with stage='auto' (command line: --stage auto)",
                path=source.url,
            )
    staged, release = acquire_staged(source, max_bytes=limits.stage_bytes, scratch=scratch)
    try:
        impl = open_backend(staged.path, backend, cache_bytes=cache_bytes, limits=limits)
    except SlideError as exc:
        release()
        named = _named_by_url(exc, os.fspath(staged.path), source.url)
        raise named from named.__cause__
    except BaseException:
        release()
        raise
    return Opened(impl, source, [release])


def _named_by_url(exc: SlideError, local: str, url: str) -> SlideError:
    """``exc`` (raised on a staged copy) naming the slide's URL, not the scratch file.

    The scratch path means nothing to the user and is gone once the error is raised.
    Its cause stays chained as it is when the file is local (renamed too when a
    :class:`SlideError`), so a remote error tells as much as a local one.
    """
    err = copy.copy(exc)
    err.path = url
    err.message = exc.message.replace(local, url)
    Exception.__init__(err, err._format())
    cause = exc.__cause__
    err.__cause__ = _named_by_url(cause, local, url) if isinstance(cause, SlideError) else cause
    err.__suppress_context__ = True
    return err


def open_location(
    location: SlideLocation,
    backend: str,
    *,
    cache_bytes: int | None,
    limits: SlideLimits,
    options: DicomWebOptions | None = None,
    storage_options: Mapping[str, Any] | None = None,
    stage: StageMode = "auto",
    scratch: str | os.PathLike[str] | None = None,
) -> Opened:
    """Open a file, a DICOMweb URL or a slide in a store (see the module notes)."""
    if stage not in STAGE_MODES:
        raise ValueError(f"stage must be one of {', '.join(STAGE_MODES)}, not {stage!r}")
    if isinstance(location, str) and location.lower().startswith("file://"):
        location = check_path(urllib.parse.unquote(urllib.parse.urlsplit(location).path))
    if is_storage_url(location):
        return _open_remote(
            str(location),
            backend,
            cache_bytes=cache_bytes,
            limits=limits,
            storage_options=storage_options,
            stage=stage,
            scratch=scratch,
        )
    return Opened(
        open_backend(location, backend, cache_bytes=cache_bytes, limits=limits, options=options)
    )
