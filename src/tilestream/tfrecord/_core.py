"""The compiled core ``tilestream.tfrecord._native``, loaded in this one place.

``native`` is the extension module, or ``None`` where it could not be
compiled (the pure-Python paths then do all the work, with the same
results and errors). The readers, the index's location scan and the writer
reach it through here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["native"]


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("tilestream.tfrecord._native")
    except ImportError:  # pragma: no cover - exercised only where it could not be compiled
        return None


native: ModuleType | None = _load()
