"""The :class:`DatasetSummary` that :meth:`tilestream.dataset.Dataset.summary` returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ROI_EXTENSIONS", "DatasetSummary", "slides_with_rois"]

#: The files of a ROI folder: ``<slide>.geojson``, ``.json`` or ``.csv``.
ROI_EXTENSIONS = (".geojson", ".json", ".csv")


def slides_with_rois(roi_sources: Sequence[Path], slides: Sequence[str]) -> int | None:
    """How many of ``slides`` have a ROI file in ``roi_sources`` (None without ROI folders)."""
    if not roi_sources:
        return None
    names: set[str] = set()
    for d in roi_sources:
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix.lower() in ROI_EXTENSIONS)
    return sum(1 for s in slides if s in names)


@dataclass
class DatasetSummary:
    """What :meth:`Dataset.summary` reports (Slideflow's summary, plus the problems found).

    ``stale`` is ``{path: reason}`` of the TFRecords of stale slides of run
    folders, left out of everything else here.
    """

    tile_px: int | None
    tile_um: str | None
    num_slides: int
    num_patients: int
    num_tfrecords: int
    num_tiles: int
    num_tiles_unclipped: int
    slides_with_rois: int | None
    filters: dict[str, list[str]]
    filter_blank: list[str]
    min_tiles: int
    clip: int | dict[str, int] | None
    tfrecord_sources: list[str]
    slide_sources: list[str]
    annotations: str | None
    annotation_columns: list[str]
    missing_sources: list[str] = field(default_factory=list)
    slides_without_tfrecords: list[str] = field(default_factory=list)
    tfrecords_without_annotations: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    below_min_tiles: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def lines(self) -> list[str]:
        """A plain-text rendering, one line per item."""
        size = f"{self.tile_px}px, {self.tile_um}" if self.tile_px else "(not set)"
        out = [
            f"Tile size: {size}",
            f"Slides: {self.num_slides}    Patients: {self.num_patients}",
            f"TFRecords: {self.num_tfrecords}    Tiles: {self.num_tiles}"
            + (f" (of {self.num_tiles_unclipped}, clipped)" if self.clip is not None else ""),
            f"Slides with ROIs: {'-' if self.slides_with_rois is None else self.slides_with_rois}",
            f"Filters: {self.filters or '-'}    Filter blank: {self.filter_blank or '-'}",
            f"Min tiles: {self.min_tiles}    Clip: {self.clip if self.clip is not None else '-'}",
            f"TFRecord sources: {', '.join(self.tfrecord_sources) or '-'}",
            f"Slide sources: {', '.join(self.slide_sources) or '-'}",
            f"Annotations: {self.annotations or '-'}",
            f"Annotation columns: {', '.join(self.annotation_columns) or '-'}",
        ]
        problems: list[tuple[str, Sequence[str]]] = [
            ("Missing sources", self.missing_sources),
            ("Annotated slides without a TFRecord", self.slides_without_tfrecords),
            ("TFRecords without an annotation", self.tfrecords_without_annotations),
            ("Slides below min_tiles", self.below_min_tiles),
            ("Unreadable TFRecords", [f"{k} ({v})" for k, v in self.unreadable.items()]),
            ("Stale TFRecords, left out", [f"{k} ({v})" for k, v in self.stale.items()]),
        ]
        for title, items in problems:
            if items:
                out.append(f"{title} ({len(items)}): {', '.join(items)}")
        return out
