"""What one slide's extraction takes and gives back: small picklable records, never pixels.

:class:`SlideTask` names a slide and its options; :class:`SlideResult` is the
record of its extraction, the same one its state file holds
(:mod:`tilestream.runfolder`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SlideResult", "SlideTask", "TileProgress"]

#: Called with (slide name, tiles done so far, tiles to do) while a slide is extracted.
TileProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SlideTask:
    """What one extraction task needs: picklable, holds paths only.

    Attributes
    ----------
    path
        The slide file (for DICOM, any file of the series).
    name
        The slide name used for outputs and in the ``slide`` feature.
    mpp
        Microns per pixel overriding the file's, for this slide.
    roi
        An ROI file (QuPath CSV or GeoJSON) for this slide.
    storage_options
        Options of the store a slide or ROI URL is read from (credentials,
        endpoint): sent to the worker with the task, never recorded, never in
        the ``repr``.
    stage
        How a slide URL is opened: ``"auto"`` (ranged reads where the format
        allows, else staged to local scratch), ``"never"`` or ``"always"``.
    """

    path: str
    name: str
    mpp: float | None = None
    roi: str | None = None
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    stage: str = "auto"


@dataclass
class SlideResult:
    """A small record of one slide's extraction (never pixels)."""

    slide: str
    path: str
    status: str  # "done" | "failed" | "skipped" | "running" (in a state file only)
    config_hash: str = ""
    tiles: int = 0
    grid: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    blurry: int = 0
    blurry_slide: bool = False
    passthrough: int = 0
    #: of ``passthrough``, the tiles assembled losslessly from several stored tiles' MCUs
    assembled: int = 0
    stored_quality: int | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None  # a failure that is a bug in tilestream: where it happened
    mpp: float | None = None
    level: int | None = None
    extract_px: int | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    qc: dict[str, float | None] = field(default_factory=dict)  # mm² per QC mask, tissue_mm2
    #: what the slide's tile grid became (``engine.tile_grid_record``); None before it existed
    tile_grid: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideResult:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
