"""Helpers for testing and evaluating tilestream on data with known ground truth.

:mod:`tilestream.testing.pen` paints marker strokes onto slide images in
optical-density space, returning the stroke mask as ground truth.
:mod:`tilestream.testing.synthetic` writes Aperio-style SVS slides of any size
whose pixels are known exactly (the tissue is :mod:`tilestream.testing.tissue`).

These modules build on :mod:`tilestream.slide`; the slide package never
imports them (``tilestream.slide.synthetic`` is an alias kept for user code).
"""

from __future__ import annotations

__all__: list[str] = []
