"""Which pyramid level to read for a downsample: the one rule every reader uses.

:func:`best_level` picks the coarsest level that is still at least as fine as
the wanted downsample (so pixels are never upsampled from a coarser level). It
is what :meth:`Slide.get_best_level_for_downsample
<tilestream.slide.Slide.get_best_level_for_downsample>`, Deep Zoom, the
magnification-aware regions and tiles and the extraction grid call.

A level's downsample is measured from its size rounded to whole pixels, so a
level meant to be 16x can measure 16.02x; :data:`LEVEL_TOLERANCE` lets such a
level count as 16x. The OpenSlide vocabulary (``get_best_level_for_downsample``
and Deep Zoom, whose output must equal OpenSlide's) uses ``tolerance=0``:
OpenSlide's own rule.

Examples
--------
>>> best_level((1.0, 4.0, 16.021), 16.0)
2
>>> best_level((1.0, 4.0, 16.021), 16.0, tolerance=0.0)
1
>>> best_level((1.0, 4.0, 16.0), 3.9999999)
1
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LEVEL_TOLERANCE", "best_level"]

LEVEL_TOLERANCE = 2e-3
"""How far (as a fraction) a level's downsample may exceed the target and still count as it.

Level sizes are whole pixels: a level meant to be 16x of a 3,000 x 2,000 px
slide is 187 x 125 px and measures 16.02x (0.13 % over). Counting it as 16x
reads that level's pixels as they are instead of resizing a four times larger
level. The rounding error is at most one pixel of the level's side, so this
covers it for levels at least 500 px on a side (coarser levels then resolve
to the next finer one: correct, only more pixels read), and stays well below
the gap between a level and a request that is meant to be finer than it (a
4x level is not read for a 3.99x request: 0.25 %). It also absorbs float noise
in the target (3.9999999 reads the 4x level).
"""


def best_level(
    downsamples: Sequence[float], target: float, tolerance: float = LEVEL_TOLERANCE
) -> int:
    """Index of the coarsest level whose downsample is at most ``target * (1 + tolerance)``.

    Parameters
    ----------
    downsamples
        Downsample of every level relative to level 0, in any order.
    target
        Wanted level-0 pixels per output pixel.
    tolerance
        Relative slack (see :data:`LEVEL_TOLERANCE`); ``0.0`` is OpenSlide's
        ``get_best_level_for_downsample``.

    Returns
    -------
    int
        Of equal downsamples the last level; when every level is coarser than
        ``target`` (or ``target`` is NaN), the finest level.

    Raises
    ------
    ValueError
        When ``downsamples`` is empty.

    Examples
    --------
    >>> best_level([1.0, 4.0, 16.0], 5.0), best_level([16.0, 1.0, 4.0], 5.0)
    (1, 2)
    >>> best_level([1.0, 4.0], 0.5), best_level([1.0, 4.0], 1e9)
    (0, 1)
    """
    if not downsamples:
        raise ValueError("best_level needs at least one level downsample")
    limit = target * (1.0 + tolerance)
    best = -1
    finest = 0
    for i, ds in enumerate(downsamples):
        if ds < downsamples[finest]:
            finest = i
        if ds <= limit and (best < 0 or ds >= downsamples[best]):
            best = i
    return finest if best < 0 else best
