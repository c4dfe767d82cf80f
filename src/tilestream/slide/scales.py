"""Magnifications, pixel sizes and scales of a slide, in large_image's vocabulary.

large_image's metadata (:func:`metadata`), its virtual power-of-two levels
(:func:`magnification_for_level`, :func:`level_for_magnification`) and the
``scale`` mappings regions and tiles are read at (:func:`scale_factor`: level-0
pixels per output pixel). The functions take any object with the members of
:class:`ScalableSlide` (a :class:`~tilestream.slide.Slide` has them). See
:mod:`tilestream.slide.magnification` for the vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ConfigError, MissingMPPError
from tilestream.slide.levels import best_level

__all__ = [
    "Format",
    "Region",
    "Resample",
    "ScalableSlide",
    "Scale",
    "level_for_magnification",
    "magnification_for_level",
    "metadata",
    "native_magnification",
    "scale_factor",
    "slide_level",
    "virtual_levels",
    "virtual_tile_size",
]

Scale = Mapping[str, Any]
Region = Mapping[str, Any]
Format = Literal["numpy", "pil"]
Resample = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]

_SCALE_KEYS = {"magnification", "mm_x", "mm_y", "scale", "exact"}


class ScalableSlide(Protocol):
    """What magnification-aware reads need of a slide (a :class:`~tilestream.slide.Slide`)."""

    @property
    def path(self) -> Path | str: ...

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def tile_size(self) -> tuple[int, int] | None: ...

    @property
    def mpp(self) -> tuple[float, float] | None: ...

    @property
    def objective_power(self) -> float | None: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def background_color(self) -> tuple[int, int, int]: ...

    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        as_array: Literal[True],
    ) -> NDArray[np.uint8]: ...

    def read_region_reduced(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        factor: int,
        *,
        scaled_decoding: bool = False,
    ) -> NDArray[np.uint8]: ...


def virtual_tile_size(slide: ScalableSlide) -> tuple[int, int]:
    """large_image's tile size: the stored one, else 256, within the image."""
    width, height = slide.dimensions
    tw, th = slide.tile_size or (256, 256)
    if tw < 4 or th < 4 or max(tw, th) / min(tw, th) >= 4:
        tw = th = 256
    return min(tw, width), min(th, height)


def virtual_levels(slide: ScalableSlide) -> int:
    width, height = slide.dimensions
    tw, th = virtual_tile_size(slide)
    steps = math.ceil(max(math.log2(width / tw), math.log2(height / th)) - 1e-12)
    return max(1, steps + 1)


def native_magnification(slide: ScalableSlide) -> dict[str, float | None]:
    """Magnification and pixel size (mm) of full resolution.

    ``magnification`` is the objective power, else ``0.01 / mm_x`` (large_image's
    estimate from the resolution), else ``None``; ``mm_x``/``mm_y`` are
    ``mpp / 1000`` or ``None``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.slide import open_slide
    >>> from tilestream.testing.synthetic import make_synthetic_slide
    >>> path = make_synthetic_slide(pathlib.Path(tempfile.mkdtemp()) / "n.svs",
    ...                             width=300, height=200, mpp=0.25, objective_power=40).path
    >>> with open_slide(path) as slide:
    ...     native_magnification(slide)
    {'magnification': 40.0, 'mm_x': 0.00025, 'mm_y': 0.00025}
    """
    mpp = slide.mpp
    mm_x = mpp[0] * 0.001 if mpp else None
    mm_y = mpp[1] * 0.001 if mpp else None
    magnification = slide.objective_power
    if magnification is None and mm_x:
        magnification = 0.01 / mm_x
    return {"magnification": magnification, "mm_x": mm_x, "mm_y": mm_y}


def metadata(slide: ScalableSlide) -> dict[str, Any]:
    """large_image's ``getMetadata()``: size, tile size, levels, magnification.

    Returns
    -------
    dict
        ``levels`` (virtual power-of-two levels down to one tile), ``sizeX``,
        ``sizeY``, ``tileWidth``, ``tileHeight`` (the stored tile size, else
        256), ``magnification``, ``mm_x``, ``mm_y`` (``None`` when unknown),
        ``dtype`` (``"uint8"``) and ``bandCount`` (3).
    """
    width, height = slide.dimensions
    tw, th = virtual_tile_size(slide)
    return {
        "levels": virtual_levels(slide),
        "sizeX": width,
        "sizeY": height,
        "tileWidth": tw,
        "tileHeight": th,
        **native_magnification(slide),
        "dtype": "uint8",
        "bandCount": 3,
    }


def magnification_for_level(slide: ScalableSlide, level: float | None = None) -> dict[str, Any]:
    """Magnification, pixel size and ``scale`` of a large_image level.

    Parameters
    ----------
    slide
        The slide.
    level
        A level in large_image numbering (``levels - 1`` = full resolution,
        fractional allowed); ``None`` for full resolution.

    Returns
    -------
    dict
        ``magnification``, ``mm_x``, ``mm_y`` (``None`` when unknown), ``level``
        and ``scale`` (level-0 pixels per pixel of that level).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.slide import open_slide
    >>> from tilestream.testing.synthetic import make_synthetic_slide
    >>> path = make_synthetic_slide(pathlib.Path(tempfile.mkdtemp()) / "l.svs",
    ...                             width=2000, height=1000, mpp=0.5).path
    >>> with open_slide(path) as slide:
    ...     magnification_for_level(slide, 2)
    {'magnification': 5.0, 'mm_x': 0.002, 'mm_y': 0.002, 'level': 2, 'scale': 4.0}
    """
    levels = virtual_levels(slide)
    mag: dict[str, Any] = dict(native_magnification(slide))
    if level is None or level == levels - 1:
        mag["level"] = levels - 1 if level is None else level
        mag["scale"] = 1.0
        return mag
    scale = 2.0 ** (levels - 1 - level)
    if mag["magnification"]:
        mag["magnification"] /= scale
    if mag["mm_x"] and mag["mm_y"]:
        mag["mm_x"] *= scale
        mag["mm_y"] *= scale
    mag["level"] = level
    mag["scale"] = scale
    return mag


def level_for_magnification(
    slide: ScalableSlide,
    magnification: float | None = None,
    *,
    mm_x: float | None = None,
    mm_y: float | None = None,
    exact: bool = False,
    rounding: Literal["round", "ceil"] | bool | None = "round",
) -> int | float | None:
    """The large_image level of a magnification or pixel size.

    Works as large_image's ``getLevelForMagnification``: with several of
    ``magnification``, ``mm_x``, ``mm_y`` the (log) average is used; with none,
    or when the slide's own values are unknown, full resolution is returned.

    Parameters
    ----------
    slide
        The slide.
    magnification
        Wanted magnification.
    mm_x, mm_y
        Wanted pixel size in millimetres.
    exact
        Return ``None`` unless a level matches exactly.
    rounding
        ``"round"`` or ``"ceil"``: an integer level within the pyramid;
        ``False``: a fractional level within the pyramid; ``None``: fractional
        and unclamped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from tilestream.slide import open_slide
    >>> from tilestream.testing.synthetic import make_synthetic_slide
    >>> path = make_synthetic_slide(pathlib.Path(tempfile.mkdtemp()) / "m.svs",
    ...                             width=2000, height=1000, mpp=0.5).path
    >>> with open_slide(path) as slide:
    ...     (level_for_magnification(slide, 10), level_for_magnification(slide, mm_x=0.002),
    ...      round(level_for_magnification(slide, 7, rounding=None), 4))
    (3, 2, 2.4854)
    """
    native = magnification_for_level(slide)
    ratios = []
    if magnification and native["magnification"]:
        ratios.append(float(magnification) / native["magnification"])
    if mm_x and native["mm_x"]:
        ratios.append(native["mm_x"] / mm_x)
    if mm_y and native["mm_y"]:
        ratios.append(native["mm_y"] / mm_y)
    top = native["level"]
    if not ratios:
        return top
    logs = [round(math.log2(r), 4) for r in ratios]
    if exact and any(int(v) != v or v != logs[0] for v in logs):
        return None
    level: int | float = top + round(sum(logs) / len(logs), 4)
    if rounding:
        level = int(math.ceil(level) if rounding == "ceil" else round(level))
    if (exact and (level > top or level < 0)) or (rounding == "ceil" and level > top):
        return None
    if rounding is not None:
        level = max(0, min(top, level))
    return level


def scale_factor(slide: ScalableSlide, scale: Scale | None) -> float:
    """Level-0 pixels per output pixel for a ``scale`` mapping."""
    if not scale:
        return 1.0
    if not isinstance(scale, Mapping):
        raise ConfigError(f"scale must be a mapping such as {{'magnification': 10}}, not {scale!r}")
    unknown = set(scale) - _SCALE_KEYS
    if unknown:
        raise ConfigError(f"unknown scale keys {sorted(unknown)}; use {sorted(_SCALE_KEYS)}")
    native = native_magnification(slide)
    logs = []
    if scale.get("magnification") is not None:
        if not native["magnification"]:
            raise MissingMPPError(
                "the slide records neither objective power nor resolution, so a "
                "magnification cannot be read; open it with mpp= or use {'scale': ...}",
                path=slide.path,
            )
        logs.append(math.log2(native["magnification"] / _positive(scale, "magnification")))
    for key in ("mm_x", "mm_y"):
        if scale.get(key) is not None:
            native_mm = native[key]
            if not native_mm:
                raise MissingMPPError(
                    f"the slide has no resolution, so {key} cannot be used; open it with mpp=",
                    path=slide.path,
                )
            logs.append(math.log2(_positive(scale, key) / native_mm))
    if logs:
        log = sum(logs) / len(logs)
    elif scale.get("scale") is not None:
        log = math.log2(_positive(scale, "scale"))
    else:
        return 1.0
    if abs(log - round(log)) < 1e-4:  # an exact power of two up to float noise
        log = round(log)
    if scale.get("exact") and (log != int(log) or log < 0 or log > virtual_levels(slide) - 1):
        raise ConfigError(f"no level matches scale {dict(scale)} exactly")
    return float(2.0**log)


def _positive(scale: Scale, key: str) -> float:
    try:
        value = float(scale[key])
    except (TypeError, ValueError):
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"scale {key} must be a positive number, not {scale[key]!r}")
    return value


def slide_level(slide: ScalableSlide, s: float) -> int:
    """The coarsest pyramid level at least as fine as scale ``s`` (:func:`best_level`)."""
    return best_level(slide.level_downsamples, s)
