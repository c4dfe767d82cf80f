"""Old home of the slide core, kept so that its imports go on working.

:class:`Slide` and :func:`open_slide` are :mod:`tilestream.slide.slide`'s, the
backend contract :class:`SlideBackend` is :mod:`tilestream.slide.backends.base`'s,
the registry :mod:`tilestream.slide.registry`'s, :func:`detect_format`
:mod:`tilestream.slide.opening`'s and the cache budgets
:mod:`tilestream.slide.tilecache`'s. Nothing in :mod:`tilestream.slide`
imports this module.
"""

from __future__ import annotations

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.opening import detect_format
from tilestream.slide.registry import (
    available_backends,
    backend_class,
    register_backend,
    unregister_backend,
)
from tilestream.slide.slide import THUMBNAIL_WHOLE_BYTES, Slide, open_slide
from tilestream.slide.tilecache import DEFAULT_CACHE_BYTES, MAX_AUTO_CACHE_BYTES

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "MAX_AUTO_CACHE_BYTES",
    "THUMBNAIL_WHOLE_BYTES",
    "Slide",
    "SlideBackend",
    "available_backends",
    "backend_class",
    "detect_format",
    "open_slide",
    "register_backend",
    "unregister_backend",
]
