"""The backend registry: which backends ``open_slide(..., backend="auto")`` tries, in order.

The built-in backends (``tifffile``, ``openslide``, ``image`` for files;
``dicomweb`` for ``dicomweb+http(s)://`` URLs, its dependencies imported only
when a slide is opened) are registered when this module is imported;
:func:`register_backend` (usable as a class decorator) adds others.
``backend="auto"`` tries the available file backends in ``priority`` order
(lower first) on a file, and the backend declaring a URL's scheme in its
``url_schemes`` on a URL (:func:`url_backend`).

Examples
--------
>>> available_backends()[:3]
('tifffile', 'openslide', 'image')
>>> url_backend("dicomweb+https").name
'dicomweb'
>>> backend_class("image").priority
30
"""

from __future__ import annotations

import threading

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.backends.dicomweb_ import DicomWebBackend
from tilestream.slide.backends.image import ImageBackend
from tilestream.slide.backends.openslide_ import OpenSlideBackend
from tilestream.slide.backends.tifffile_ import TiffFileBackend

__all__ = [
    "BUILTIN_BACKENDS",
    "available_backends",
    "backend_class",
    "register_backend",
    "unregister_backend",
    "url_backend",
    "url_schemes_of",
]

#: The backends every installation has (they cannot be unregistered).
BUILTIN_BACKENDS: tuple[type[SlideBackend], ...] = (
    TiffFileBackend,
    OpenSlideBackend,
    ImageBackend,
    DicomWebBackend,
)

_REGISTRY: dict[str, type[SlideBackend]] = {cls.name: cls for cls in BUILTIN_BACKENDS}
_REGISTRY_LOCK = threading.Lock()


def register_backend(cls: type[SlideBackend]) -> type[SlideBackend]:
    """Register a backend class under ``cls.name`` (usable as a class decorator)."""
    with _REGISTRY_LOCK:
        _REGISTRY[cls.name] = cls
    return cls


def unregister_backend(name: str) -> None:
    """Remove a backend added with :func:`register_backend` (built-ins cannot be removed)."""
    if any(cls.name == name for cls in BUILTIN_BACKENDS):
        raise ValueError(f"the built-in backend {name!r} cannot be unregistered")
    with _REGISTRY_LOCK:
        _REGISTRY.pop(name, None)


def backend_class(name: str) -> type[SlideBackend]:
    """The registered backend class called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown slide backend {name!r}; known: {known}, auto") from None


def url_schemes_of(cls: type[SlideBackend]) -> tuple[str, ...]:
    """The URL schemes a backend reads (``()``: it reads files)."""
    return tuple(getattr(cls, "url_schemes", ()))


def url_backend(scheme: str) -> type[SlideBackend] | None:
    """The registered backend reading URLs of ``scheme`` (lowest priority first), or ``None``."""
    with _REGISTRY_LOCK:
        ordered = sorted(_REGISTRY.values(), key=lambda c: (c.priority, c.name))
    return next((c for c in ordered if scheme.lower() in url_schemes_of(c)), None)


def available_backends() -> tuple[str, ...]:
    """Names of the usable backends in priority order (file backends are tried in this order).

    Examples
    --------
    >>> available_backends()[:3]
    ('tifffile', 'openslide', 'image')
    """
    with _REGISTRY_LOCK:
        ordered = sorted(_REGISTRY.values(), key=lambda c: (c.priority, c.name))
    return tuple(c.name for c in ordered if c.available())
