"""The compiled core ``tilestream.tfrecord._native``, loaded in this one place.

``native`` is the extension module (typed by ``_native.pyi``), or ``None``
where it could not be compiled (the pure-Python paths then do all the work,
with the same results and errors). The readers, the index's location scan
and the CRC reach it through here.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["native"]

native: ModuleType | None
try:
    from tilestream.tfrecord import _native as native
except ImportError:  # pragma: no cover - exercised only where it could not be compiled
    native = None
