"""Resolution (microns per pixel) sanity checks shared by every backend.

Flat TIFFs and screenshots often carry resolution tags that mean nothing under
a microscope (72, 96 or 300 dots per inch, i.e. hundreds of microns per
pixel). Such a value is reported (logged) and treated as missing rather than
trusted.

Examples
--------
>>> plausible_mpp(0.25)
True
>>> plausible_mpp(352.78)
False
>>> mpp, suspicious = mpp_from_tiff_resolution(28.3465, "CENTIMETER")  # 72 dpi, per cm
>>> round(mpp, 2), suspicious
(352.78, True)
"""

from __future__ import annotations

import math

__all__ = ["MAX_PLAUSIBLE_MPP", "MIN_PLAUSIBLE_MPP", "mpp_from_tiff_resolution", "plausible_mpp"]

#: Coarsest resolution accepted as a microscope's (microns per pixel). A 1.25x
#: objective scans at about 8 um/px; anything coarser is not a slide scan.
MAX_PLAUSIBLE_MPP = 10.0
#: Finest resolution accepted (microns per pixel).
MIN_PLAUSIBLE_MPP = 0.01

# Screen/print resolutions that image editors write by default (dots per inch).
_DEFAULT_DPIS = (72.0, 96.0, 150.0, 300.0, 600.0)


def plausible_mpp(mpp: float | None) -> bool:
    """Whether ``mpp`` (microns per pixel) is a believable microscope resolution."""
    if mpp is None or not math.isfinite(mpp):
        return False
    return MIN_PLAUSIBLE_MPP <= mpp <= MAX_PLAUSIBLE_MPP


def mpp_from_tiff_resolution(resolution: float, unit: str) -> tuple[float, bool] | None:
    """Microns per pixel from a TIFF ``XResolution`` and ``ResolutionUnit``.

    Parameters
    ----------
    resolution
        Pixels per ``unit``.
    unit
        ``"INCH"``, ``"CENTIMETER"`` (or ``"MILLIMETER"``/``"MICROMETER"``, as
        tifffile names some vendor units); anything else has no physical size.

    Returns
    -------
    tuple or None
        ``(mpp, suspicious)``: ``suspicious`` is true when the value is
        implausible for a microscope or is a default screen/print resolution
        (72/96/300 dpi...). ``None`` when there is no physical unit.
    """
    unit = unit.upper()
    per_unit_um = {"INCH": 25400.0, "CENTIMETER": 10000.0, "MILLIMETER": 1000.0}
    if unit == "MICROMETER":
        per_unit_um["MICROMETER"] = 1.0
    if unit not in per_unit_um or not resolution or not math.isfinite(resolution):
        return None
    mpp = per_unit_um[unit] / resolution
    dpi = 25400.0 / mpp
    default_dpi = any(abs(dpi - d) < 0.05 for d in _DEFAULT_DPIS)
    return mpp, default_dpi or not plausible_mpp(mpp)
