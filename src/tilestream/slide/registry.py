"""The backend registry: which backends ``open_slide(..., backend="auto")`` tries, in order.

The built-in backends (``tifffile``, ``openslide``, ``image``) are registered
when this module is imported; :func:`register_backend` (usable as a class
decorator) adds others. ``backend="auto"`` tries :func:`available_backends`
in ``priority`` order (lower first).

Examples
--------
>>> available_backends()
('tifffile', 'openslide', 'image')
>>> backend_class("image").priority
30
"""

from __future__ import annotations

import threading

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.backends.image import ImageBackend
from tilestream.slide.backends.openslide_ import OpenSlideBackend
from tilestream.slide.backends.tifffile_ import TiffFileBackend

__all__ = [
    "BUILTIN_BACKENDS",
    "available_backends",
    "backend_class",
    "register_backend",
    "unregister_backend",
]

#: The backends every installation has (they cannot be unregistered).
BUILTIN_BACKENDS: tuple[type[SlideBackend], ...] = (
    TiffFileBackend,
    OpenSlideBackend,
    ImageBackend,
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


def available_backends() -> tuple[str, ...]:
    """Names of the usable backends, in the order ``backend="auto"`` tries them.

    Examples
    --------
    >>> available_backends()
    ('tifffile', 'openslide', 'image')
    """
    with _REGISTRY_LOCK:
        ordered = sorted(_REGISTRY.values(), key=lambda c: (c.priority, c.name))
    return tuple(c.name for c in ordered if c.available())
