"""Old home of the backend contract and registry, kept so that its imports go on working.

:class:`SlideBackend` is :mod:`tilestream.slide.backends.base`'s, the registry
functions :mod:`tilestream.slide.registry`'s and the cache budgets
:mod:`tilestream.slide.tilecache`'s. Nothing in :mod:`tilestream.slide`
imports this module.
"""

from __future__ import annotations

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.registry import (
    available_backends,
    backend_class,
    register_backend,
    unregister_backend,
)
from tilestream.slide.tilecache import DEFAULT_CACHE_BYTES, MAX_AUTO_CACHE_BYTES

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "MAX_AUTO_CACHE_BYTES",
    "SlideBackend",
    "available_backends",
    "backend_class",
    "register_backend",
    "unregister_backend",
]
