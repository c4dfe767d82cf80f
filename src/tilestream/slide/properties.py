"""What a slide's OpenSlide-named properties say: resolution, objective power, bounds.

Backends report metadata under OpenSlide's property names; these functions
read the values a :class:`~tilestream.slide.Slide` exposes from them, checking
that they make sense (a resolution no microscope has is treated as missing).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from tilestream.slide._resolution import plausible_mpp

__all__ = ["file_mpp", "normalise_mpp", "objective_power", "slide_bounds"]

logger = logging.getLogger(__name__)


def file_mpp(props: Mapping[str, str], path: Path | str) -> tuple[float, float] | None:
    """Microns per pixel ``(x, y)`` from ``openslide.mpp-x/y``; ``None`` if missing or implausible.

    An implausible resolution (a screen or print one, or flagged
    ``tilestream.mpp-suspicious`` by the backend) is logged as a warning.

    Examples
    --------
    >>> file_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}, Path("s.svs"))
    (0.25, 0.25)
    >>> file_mpp({}, Path("s.svs")) is None
    True
    """
    try:
        mx = float(props["openslide.mpp-x"])
        my = float(props["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    if plausible_mpp(mx) and plausible_mpp(my) and not props.get("tilestream.mpp-suspicious"):
        return (mx, my)
    logger.warning(
        "%s: ignoring implausible resolution %.4g x %.4g um/px (a screen/print "
        "resolution, not a microscope's); pass mpp= to set it",
        path,
        mx,
        my,
    )
    return None


def normalise_mpp(
    mpp: float | tuple[float, float] | None, path: Path | str
) -> tuple[float, float] | None:
    """An ``mpp=`` override as ``(x, y)``; :class:`ValueError` unless positive and finite."""
    if mpp is None:
        return None
    pair = (float(mpp), float(mpp)) if isinstance(mpp, (int, float)) else tuple(map(float, mpp))
    if len(pair) != 2 or not all(v > 0 and math.isfinite(v) for v in pair):
        raise ValueError(f"{path}: mpp must be a positive number or (x, y) pair, not {mpp!r}")
    return (pair[0], pair[1])


def objective_power(props: Mapping[str, str]) -> float | None:
    """``openslide.objective-power`` as a positive number, else ``None``."""
    value = props.get("openslide.objective-power")
    try:
        power = float(value) if value is not None else None
    except ValueError:
        return None
    return power if power and power > 0 else None


def slide_bounds(
    props: Mapping[str, str], dimensions: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``openslide.bounds-*`` as ``(x, y, width, height)``, else the whole level 0."""
    try:
        return (
            int(props["openslide.bounds-x"]),
            int(props["openslide.bounds-y"]),
            int(props["openslide.bounds-width"]),
            int(props["openslide.bounds-height"]),
        )
    except (KeyError, ValueError):
        return (0, 0, *dimensions)
