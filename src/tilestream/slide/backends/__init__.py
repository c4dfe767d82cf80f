"""The built-in slide backends (:mod:`tilestream.slide.registry` registers them).

``tifffile`` (priority 10: fastest, reads SVS incl. JPEG 2000, NDPI, generic,
OME and flat TIFF), ``openslide`` (20: every vendor format OpenSlide reads,
including DICOM and MIRAX), ``image`` (30: plain images through Pillow). Each
subclasses :class:`~tilestream.slide.backends.base.SlideBackend`.

Examples
--------
>>> from tilestream.slide.registry import available_backends
>>> "openslide" in available_backends()
True
"""

from __future__ import annotations

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.backends.image import ImageBackend
from tilestream.slide.backends.openslide_ import OpenSlideBackend
from tilestream.slide.backends.tifffile_ import TiffFileBackend

__all__ = ["ImageBackend", "OpenSlideBackend", "SlideBackend", "TiffFileBackend"]
