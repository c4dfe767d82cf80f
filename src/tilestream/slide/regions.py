"""Regions of a slide at any magnification, in large_image's vocabulary.

:func:`region` (``getRegion``), :func:`convert_region_scale` and
:func:`region_at_another_scale`, and :func:`read_scaled`, the pixel stage they
and the tiles of :mod:`tilestream.slide.tiling` share. Regions, units and the
pixel semantics are described in :mod:`tilestream.slide.magnification`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import ConfigError, MissingMPPError
from tilestream.slide.scales import (
    Format,
    Region,
    Resample,
    ScalableSlide,
    Scale,
    native_magnification,
    scale_factor,
    slide_level,
)

__all__ = [
    "as_format",
    "convert_region_scale",
    "output_box",
    "read_scaled",
    "region",
    "region_at_another_scale",
    "resample_filter",
]

_UNITS = {
    None: "base_pixels",
    "base": "base_pixels",
    "base_pixel": "base_pixels",
    "base_pixels": "base_pixels",
    "pixel": "mag_pixels",
    "pixels": "mag_pixels",
    "mag_pixel": "mag_pixels",
    "mag_pixels": "mag_pixels",
    "magnification_pixel": "mag_pixels",
    "magnification_pixels": "mag_pixels",
    "mm": "mm",
    "millimeter": "mm",
    "millimeters": "mm",
    "um": "um",
    "micrometer": "um",
    "micrometers": "um",
    "micron": "um",
    "microns": "um",
    "nm": "nm",
    "nanometer": "nm",
    "nanometers": "nm",
    "fraction": "fraction",
}
_MM_PER_UNIT = {"mm": 1.0, "um": 1e-3, "nm": 1e-6}
_FILTERS: dict[str, tuple[Image.Resampling, float]] = {
    # PIL filter and its support radius in source pixels (at 1:1).
    "nearest": (Image.Resampling.NEAREST, 0.0),
    "box": (Image.Resampling.BOX, 0.0),
    "bilinear": (Image.Resampling.BILINEAR, 1.0),
    "hamming": (Image.Resampling.HAMMING, 1.0),
    "bicubic": (Image.Resampling.BICUBIC, 2.0),
    "lanczos": (Image.Resampling.LANCZOS, 3.0),
}


def _canonical_units(units: str | None) -> str:
    try:
        return _UNITS[units.lower() if isinstance(units, str) else units]
    except KeyError:
        names = sorted({"base_pixels", "mag_pixels", "mm", "um", "nm", "fraction"})
        raise ConfigError(f"invalid region units {units!r}; use one of {names}") from None


def _unit_scale(slide: ScalableSlide, units: str, s: float) -> tuple[float, float]:
    """Level-0 pixels per unit, horizontally and vertically."""
    if units == "base_pixels":
        return 1.0, 1.0
    if units == "mag_pixels":
        return s, s
    if units == "fraction":
        width, height = slide.dimensions
        return float(width), float(height)
    native = native_magnification(slide)
    if not native["mm_x"] or not native["mm_y"]:
        raise MissingMPPError(
            f"the slide has no resolution, so regions in {units} cannot be used; open it with mpp=",
            path=slide.path,
        )
    mm = _MM_PER_UNIT[units]
    return mm / native["mm_x"], mm / native["mm_y"]


_REGION_KEYS = {"left", "top", "right", "bottom", "width", "height", "units", "unitsWH"}


def _region_bounds(
    slide: ScalableSlide, region: Region | None, s: float, *, crop: bool = True
) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of a region in level-0 pixels."""
    region = region or {}
    if not isinstance(region, Mapping):
        raise ConfigError(f"region must be a mapping such as {{'left': 0, ...}}, not {region!r}")
    unknown = set(region) - _REGION_KEYS
    if unknown:
        raise ConfigError(f"unknown region keys {sorted(unknown)}; use {sorted(_REGION_KEYS)}")
    sx, sy = _unit_scale(slide, _canonical_units(region.get("units")), s)
    values = {
        k: float(region[k])
        for k in ("left", "top", "right", "bottom", "width", "height")
        if region.get(k) is not None
    }
    if region.get("unitsWH") is not None:
        sw, sh = _unit_scale(slide, _canonical_units(region["unitsWH"]), s)
        if "width" in values:
            values.pop("right", None)
        if "height" in values:
            values.pop("bottom", None)
    else:
        sw, sh = sx, sy
    width, height = slide.dimensions
    for key, factor in (("left", sx), ("right", sx), ("width", sw)):
        if key in values:
            values[key] *= factor
    for key, factor in (("top", sy), ("bottom", sy), ("height", sh)):
        if key in values:
            values[key] *= factor
    for key, size in (("left", width), ("right", width), ("top", height), ("bottom", height)):
        if key in values and values[key] < 0:
            values[key] += size
    left, right = _span(values, "left", "right", "width", width)
    top, bottom = _span(values, "top", "bottom", "height", height)
    if crop:
        left = min(width, max(0, round(left)))
        right = min(width, max(left, round(right)))
        top = min(height, max(0, round(top)))
        bottom = min(height, max(top, round(bottom)))
    return float(left), float(top), float(right), float(bottom)


def _span(values: dict[str, float], lo: str, hi: str, size: str, full: int) -> tuple[float, float]:
    if lo in values:
        start = values[lo]
    elif hi in values and size in values:
        start = values[hi] - values[size]
    else:
        start = 0.0
    if hi in values:
        end = values[hi]
    elif size in values:
        end = start + values[size]
    else:
        end = float(full)
    return start, end


def convert_region_scale(
    slide: ScalableSlide,
    region: Region,
    *,
    source_scale: Scale | None = None,
    target_scale: Scale | None = None,
    target_units: str | None = None,
    crop_to_image: bool = True,
) -> dict[str, Any]:
    """Express a region given at one scale in other units or at another scale.

    As large_image's ``convertRegionScale``: a region in ``mag_pixels`` is
    relative to ``source_scale``; the result is in ``target_units`` (by
    default ``base_pixels``) and, for ``mag_pixels``, relative to
    ``target_scale``. Only the keys given in ``region`` are returned. A region
    not in ``mag_pixels`` whose units are already the target's is returned as is.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.slide import open_slide
    >>> from tilestream.testing.synthetic import make_synthetic_slide
    >>> path = make_synthetic_slide(pathlib.Path(tempfile.mkdtemp()) / "c.svs",
    ...                             width=2000, height=1000, mpp=0.5).path
    >>> with open_slide(path) as slide:
    ...     convert_region_scale(slide, {"left": 10, "top": 20, "width": 100, "height": 50,
    ...                                  "units": "mag_pixels"},
    ...                          source_scale={"magnification": 10}, target_units="um")
    {'left': 10.0, 'top': 20.0, 'width': 100.0, 'height': 50.0, 'units': 'um'}
    """
    units = _canonical_units(region.get("units"))
    target = None if target_units is None else _canonical_units(target_units)
    if units != "mag_pixels" and (target is None or target == units):
        return dict(region)
    target = target or "base_pixels"
    s_source = scale_factor(slide, source_scale)
    left, top, right, bottom = _region_bounds(slide, region, s_source, crop=crop_to_image)
    fx, fy = _unit_scale(slide, target, scale_factor(slide, target_scale))
    converted = {
        "left": left / fx,
        "top": top / fy,
        "right": right / fx,
        "bottom": bottom / fy,
        "width": (right - left) / fx,
        "height": (bottom - top) / fy,
    }
    out: dict[str, Any] = {k: v for k, v in converted.items() if k in region}
    out["units"] = target
    return out


def _virtual_size(slide: ScalableSlide, s: float) -> tuple[int, int]:
    width, height = slide.dimensions
    return max(1, math.floor(width / s + 1e-6)), max(1, math.floor(height / s + 1e-6))


def output_box(slide: ScalableSlide, region: Region | None, s: float) -> tuple[int, int, int, int]:
    """The region as ``[x0, x1) x [y0, y1)`` output pixels at scale ``s``."""
    left, top, right, bottom = _region_bounds(slide, region, s)
    vw, vh = _virtual_size(slide, s)

    def snap(v: float, hi: int) -> int:
        return min(hi, max(0, math.floor(v / s + 0.5)))

    x0, y0 = snap(left, vw), snap(top, vh)
    x1, y1 = max(x0, snap(right, vw)), max(y0, snap(bottom, vh))
    if x1 == x0 or y1 == y0:
        raise ConfigError(
            f"region {dict(region or {})} is empty at scale {s:g} (the slide is "
            f"{slide.dimensions[0]} x {slide.dimensions[1]} level-0 pixels)"
        )
    return x0, y0, x1, y1


def resample_filter(resample: str) -> tuple[Image.Resampling, float]:
    try:
        return _FILTERS[resample]
    except KeyError:
        raise ConfigError(f"resample must be one of {sorted(_FILTERS)}, not {resample!r}") from None


def read_scaled(
    slide: ScalableSlide,
    box: tuple[int, int, int, int],
    s: float,
    *,
    resample: str = "lanczos",
    level: int | None = None,
) -> NDArray[np.uint8]:
    """Output pixels ``[x0, x1) x [y0, y1)`` of the slide at scale ``s``, RGB.

    The building block of :func:`region` and of the tiles of
    :mod:`tilestream.slide.tiling`; ``level`` forces
    the pyramid level to read from (by default the best one for ``s``).
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if s == 1.0:
        return slide.read_region((x0, y0), 0, (w, h), as_array=True)
    pil_filter, support = resample_filter(resample)
    level = slide_level(slide, s) if level is None else level
    ds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    ratio = s / ds  # level pixels per output pixel
    # The box in the level's pixel frame, and a margin for the filter's support.
    bx0, by0, bx1, by1 = x0 * ratio, y0 * ratio, x1 * ratio, y1 * ratio
    factor = round(ratio)
    if (
        resample == "box"
        and factor >= 2
        and abs(ratio - factor) < 1e-9
        and ds == int(ds)
        and bx0 == int(bx0)
        and by0 == int(by0)
    ):
        # An integer box reduction from a whole level pixel: each output pixel is
        # the mean of a factor x factor block (Pillow's reduce(), as below), which
        # the tifffile backend computes tile by tile from its stored tiles.
        location = (int(bx0) * int(ds), int(by0) * int(ds))
        return slide.read_region_reduced(location, level, (w, h), factor)
    margin = math.ceil(support * max(ratio, 1.0))
    rx0 = max(0, math.floor(bx0 + 1e-9) - margin)
    ry0 = max(0, math.floor(by0 + 1e-9) - margin)
    rx1 = max(min(lw, math.ceil(bx1 - 1e-9) + margin), math.ceil(bx1 - 1e-9))
    ry1 = max(min(lh, math.ceil(by1 - 1e-9) + margin), math.ceil(by1 - 1e-9))
    # Level-0 location of the read; with a fractional downsample the read starts
    # between level pixels (OpenSlide's semantics) and the box shifts with it.
    loc_x, loc_y = math.floor(rx0 * ds + 1e-9), math.floor(ry0 * ds + 1e-9)
    ox, oy = loc_x / ds, loc_y / ds
    rw, rh = math.ceil(rx1 - ox - 1e-9), math.ceil(ry1 - oy - 1e-9)
    pixels = slide.read_region((loc_x, loc_y), level, (rw, rh), as_array=True)
    local = (bx0 - ox, by0 - oy, bx1 - ox, by1 - oy)
    if all(abs(v - round(v)) < 1e-6 for v in local):
        cx0, cy0, cx1, cy1 = (round(v) for v in local)
        if (cx1 - cx0, cy1 - cy0) == (w, h):
            return np.ascontiguousarray(pixels[cy0:cy1, cx0:cx1])
        factor = round(ratio)
        if (
            resample == "box"
            and abs(ratio - factor) < 1e-9
            and (cx1 - cx0, cy1 - cy0)
            == (
                w * factor,
                h * factor,
            )
        ):
            # An integer box reduction: Pillow's reduce() is the same mean, and faster.
            crop = np.ascontiguousarray(pixels[cy0:cy1, cx0:cx1])
            return np.array(Image.fromarray(crop).reduce(factor))
    image = Image.fromarray(pixels).resize((w, h), pil_filter, box=local)
    return np.array(image)


def as_format(pixels: NDArray[np.uint8], format: str) -> NDArray[np.uint8] | Image.Image:
    if format == "numpy":
        return pixels
    if format == "pil":
        return Image.fromarray(pixels)
    raise ConfigError(f"format must be 'numpy' or 'pil', not {format!r}")


def region(
    slide: ScalableSlide,
    region: Region | None = None,
    *,
    scale: Scale | None = None,
    format: Format = "numpy",
    resample: Resample = "lanczos",
) -> NDArray[np.uint8] | Image.Image:
    """Read any region at any magnification or pixel size.

    Parameters
    ----------
    slide
        The slide.
    region
        The region (see the module notes); ``None`` for the whole slide.
    scale
        Output scale, e.g. ``{"magnification": 10}``, ``{"mm_x": 0.001}``;
        ``None`` for full resolution.
    format
        ``"numpy"`` (RGB uint8 ``(h, w, 3)``) or ``"pil"`` (RGB image).
    resample
        Resize filter: ``lanczos`` (default), ``bicubic``, ``hamming``,
        ``bilinear``, ``box`` or ``nearest``.

    Returns
    -------
    numpy.ndarray or PIL.Image.Image
        ``round(width / s) x round(height / s)`` pixels (snapped to the output
        grid, within the slide) where ``s`` is level-0 pixels per output pixel.

    Raises
    ------
    ConfigError
        Invalid region, scale or format, or a region empty within the slide.
    MissingMPPError
        The region or scale needs a resolution the slide does not have.
    """
    return _region(slide, region, scale, format, resample)


def _region(
    slide: ScalableSlide, area: Region | None, scale: Scale | None, format: str, resample: str
) -> NDArray[np.uint8] | Image.Image:
    s = scale_factor(slide, scale)
    box = output_box(slide, area, s)
    return as_format(read_scaled(slide, box, s, resample=resample), format)


def region_at_another_scale(
    slide: ScalableSlide,
    region: Region,
    *,
    source_scale: Scale | None = None,
    target_scale: Scale | None = None,
    target_units: str | None = None,
    format: Format = "numpy",
    resample: Resample = "lanczos",
) -> NDArray[np.uint8] | Image.Image:
    """:func:`region` of a region given at ``source_scale``, read at ``target_scale``.

    As large_image's ``getRegionAtAnotherScale``: the region is converted with
    :func:`convert_region_scale`, then read with ``scale=target_scale``.
    """
    converted = convert_region_scale(
        slide,
        region,
        source_scale=source_scale,
        target_scale=target_scale,
        target_units=target_units,
    )
    return _region(slide, converted, target_scale, format, resample)
