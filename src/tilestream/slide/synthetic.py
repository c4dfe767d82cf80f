"""Old home of the synthetic-slide generator, now :mod:`tilestream.testing.synthetic`.

Kept so that ``from tilestream.slide.synthetic import make_synthetic_slide``
goes on working. Nothing in :mod:`tilestream.slide` imports this module (the
generator's package, :mod:`tilestream.testing`, builds on the slide reader,
not the other way round).
"""

from __future__ import annotations

from tilestream.testing.synthetic import (
    BACKGROUND,
    PATCH,
    SyntheticSlide,
    make_synthetic_slide,
    tissue_patches_from_slide,
)

__all__ = [
    "BACKGROUND",
    "PATCH",
    "SyntheticSlide",
    "make_synthetic_slide",
    "tissue_patches_from_slide",
]
