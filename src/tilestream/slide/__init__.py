"""Whole-slide images: one :class:`Slide` API over OpenSlide, tifffile, Pillow and DICOMweb.

>>> from tilestream.slide import open_slide, available_backends
>>> available_backends()[:3]
('tifffile', 'openslide', 'image')

``open_slide(path, *, backend="auto", mpp=None, color=None, limits=None)`` returns a
:class:`Slide` with OpenSlide's vocabulary (``dimensions``, ``level_count``,
``level_dimensions``, ``level_downsamples``, ``properties``,
``associated_images``, ``read_region``, ``get_thumbnail``,
``get_best_level_for_downsample``) plus ``mpp``, ``objective_power``,
``bounds``, ``background_color``, ``tile_size``, ``require_mpp()`` and the
stored-tile access used for JPEG pass-through (``stored_tile_grid``,
``read_stored_tile_bytes``) and large_image's magnification-aware ``metadata``,
``region``, ``tiles``... See :mod:`tilestream.slide.slide`. What one read
or decode may allocate is bounded by :class:`SlideLimits`
(:mod:`tilestream.slide.limits`).

Test slides are made by :func:`tilestream.testing.synthetic.make_synthetic_slide`
(still importable from its old module, ``tilestream.slide.synthetic``).
"""

from __future__ import annotations

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.deepzoom import DeepZoomGenerator
from tilestream.slide.limits import SlideLimits
from tilestream.slide.opening import detect_format
from tilestream.slide.registry import available_backends, register_backend, unregister_backend
from tilestream.slide.slide import Slide, open_slide

__all__ = [
    "DeepZoomGenerator",
    "Slide",
    "SlideBackend",
    "SlideLimits",
    "available_backends",
    "detect_format",
    "open_slide",
    "register_backend",
    "unregister_backend",
]
