"""Magnification-aware regions and tiles, in large_image's vocabulary.

These functions take a :class:`~tilestream.slide.Slide` (they are also its
methods: ``slide.metadata()``, ``slide.region(...)``, ``slide.tiles(...)``...)
and speak the language of `large_image <https://girder.github.io/large_image/>`_
tile sources, so code written against ``getMetadata``, ``getRegion`` or
``tileIterator`` maps over one to one:

============================  =========================================
large_image                   tilestream
============================  =========================================
``getMetadata()``             :func:`metadata`
``getNativeMagnification()``  :func:`native_magnification`
``getMagnificationForLevel``  :func:`magnification_for_level`
``getLevelForMagnification``  :func:`level_for_magnification`
``getRegion``                 :func:`region` (returns the image only)
``convertRegionScale``        :func:`convert_region_scale`
``getRegionAtAnotherScale``   :func:`region_at_another_scale`
``tileIterator``              :func:`~tilestream.slide.tiling.tiles`
``getSingleTile``             :func:`~tilestream.slide.tiling.single_tile`
============================  =========================================

Levels
    As in large_image, a *level* here is a power-of-two step of a virtual
    pyramid: level ``metadata()["levels"] - 1`` is full resolution, each level
    below halves it, and level 0 fits in one tile. (OpenSlide-style pyramid
    levels, 0 = full resolution, are :attr:`Slide.level_count` & co.; tiles
    report the one they were read from as ``slide_level``.)

Scales
    A ``scale`` is a mapping with ``magnification`` (e.g. ``{"magnification":
    10}``) and/or ``mm_x`` / ``mm_y`` (millimetres per pixel), like
    large_image; tilestream also accepts ``{"scale": 2.0}`` (level-0 pixels per
    output pixel), which needs no resolution metadata. ``None`` means full
    resolution. A magnification is the objective power, or ``10 / mpp`` when
    the slide only records its resolution (large_image's estimate).

Regions
    A mapping with any of ``left``, ``top``, ``right``, ``bottom``, ``width``,
    ``height`` and ``units``: ``base_pixels`` (level 0, the default),
    ``mag_pixels`` (pixels at the given scale), ``mm``, ``um``, ``nm`` or
    ``fraction`` (0..1 of the slide); ``unitsWH`` optionally gives other units
    for ``width``/``height``. Negative edges count from the right / bottom.

Pixels
    At scale ``s`` (level-0 pixels per output pixel) the slide is a virtual
    image of ``floor(width / s) x floor(height / s)`` pixels, output pixel
    ``(i, j)`` covering level-0 ``[i*s, (i+1)*s) x [j*s, (j+1)*s)``. Regions and
    tiles are crops of that image: they are read from the coarsest pyramid level
    that is at least as fine as ``s`` (never upsampled from a coarser level; a
    level whose downsample differs from ``s`` only through the rounding of its
    size to whole pixels counts as equal), then resized with an antialiasing filter (Lanczos by
    default) that also sees the pixels around the crop, so tiles join without
    seams. At a scale that is a pyramid level's downsample the pixels are that
    level's, untouched.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.slide import open_slide
>>> from tilestream.testing.synthetic import make_synthetic_slide
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.svs"
>>> _ = make_synthetic_slide(path, width=2000, height=1500, levels=2, mpp=0.5)
>>> with open_slide(path) as slide:
...     meta = metadata(slide)
...     print(meta["levels"], meta["magnification"], meta["mm_x"])
...     print(region(slide, {"left": 0, "top": 0, "width": 800, "height": 400},
...                  scale={"magnification": 5}).shape)
5 20.0 0.0005
(100, 200, 3)
"""

from __future__ import annotations

from tilestream.slide.regions import (
    convert_region_scale,
    read_scaled,
    region,
    region_at_another_scale,
)
from tilestream.slide.scales import (
    level_for_magnification,
    magnification_for_level,
    metadata,
    native_magnification,
)

__all__ = [
    "convert_region_scale",
    "level_for_magnification",
    "magnification_for_level",
    "metadata",
    "native_magnification",
    "read_scaled",
    "region",
    "region_at_another_scale",
]
