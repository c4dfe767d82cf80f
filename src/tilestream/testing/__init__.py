"""Helpers for testing and evaluating tilestream on data with known ground truth.

:mod:`tilestream.testing.pen` paints marker strokes onto slide images in
optical-density space, returning the stroke mask as ground truth.
"""

from __future__ import annotations

__all__: list[str] = []
