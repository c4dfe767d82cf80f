"""What a conversion wrote: counts per split and class, and the problems it tolerated.

:class:`ConversionSummary` is returned by :func:`~tilestream.detection.convert`
and written beside the records as ``summary.json`` (:meth:`~ConversionSummary.to_dict`)
and ``README.md`` (:meth:`~ConversionSummary.to_markdown`).

Examples
--------
>>> from tilestream.detection.labelmap import LabelMap
>>> s = ConversionSummary("out", "l.csv", "csv", LabelMap.from_names(["cat"]),
...                       {"train": SplitSummary("train", ["train.tfrecord"], images=2)})
>>> s.images, s.to_dict()["splits"]["train"]["files"]
(2, ['train.tfrecord'])
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tilestream.detection.annotations import Problem
from tilestream.detection.labelmap import LabelMap

__all__ = ["ConversionSummary", "SplitSummary"]


@dataclass
class SplitSummary:
    """Counts for one split."""

    name: str
    files: list[str] = field(default_factory=list)
    images: int = 0
    objects: int = 0
    negatives: int = 0
    classes: Counter[str] = field(default_factory=Counter)


@dataclass
class ConversionSummary:
    """What a conversion wrote, and the problems it tolerated (``skip``/``clip``)."""

    out_dir: str
    source: str
    format: str
    label_map: LabelMap
    splits: dict[str, SplitSummary]
    problems: list[Problem] = field(default_factory=list)
    skipped_images: int = 0
    skipped_empty: int = 0
    dropped_objects: int = 0
    clipped_boxes: int = 0
    reencoded_images: int = 0
    seconds: float = 0.0

    @property
    def images(self) -> int:
        """Images written, over all splits."""
        return sum(s.images for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (as written to ``summary.json``)."""
        return {
            "source": self.source,
            "format": self.format,
            "images": self.images,
            "splits": {
                name: {
                    "files": s.files,
                    "images": s.images,
                    "objects": s.objects,
                    "negatives": s.negatives,
                    "classes": dict(sorted(s.classes.items())),
                }
                for name, s in self.splits.items()
            },
            "label_map": self.label_map.to_dict(),
            "skipped_images": self.skipped_images,
            "skipped_empty": self.skipped_empty,
            "dropped_objects": self.dropped_objects,
            "clipped_boxes": self.clipped_boxes,
            "reencoded_images": self.reencoded_images,
            "problems": [str(p) for p in self.problems],
        }

    def to_markdown(self) -> str:
        """The ``README.md`` written beside the records."""
        splits = list(self.splits.values())
        lines = [
            "# Object-detection TFRecords",
            "",
            f"Converted by tilestream from {self.format} annotations `{self.source}`.",
            "Schema: TF Object Detection API `tf.train.Example`; class ids in `label_map.pbtxt`.",
            "",
            "| split | files | images | negatives | objects |",
            "|---|---|---:|---:|---:|",
        ]
        for s in splits:
            files = (
                ", ".join(s.files) if len(s.files) <= 2 else f"{s.files[0]} ... ({len(s.files)})"
            )
            lines.append(f"| {s.name} | {files} | {s.images} | {s.negatives} | {s.objects} |")
        lines += [
            "",
            "| id | class | " + " | ".join(s.name for s in splits) + " |",
            "|---:|---|" + "---:|" * len(splits),
        ]
        for item in self.label_map:
            counts = " | ".join(str(s.classes.get(item.name, 0)) for s in splits)
            lines.append(f"| {item.id} | {item.name} | {counts} |")
        lines += [
            "",
            f"Skipped images: {self.skipped_images} (problems), {self.skipped_empty} (no objects);"
            f" dropped objects: {self.dropped_objects}; clipped boxes: {self.clipped_boxes};"
            f" images re-encoded to PNG: {self.reencoded_images}.",
        ]
        if self.problems:
            lines += ["", f"## Problems tolerated ({len(self.problems)})", ""]
            lines += [f"- {p}" for p in self.problems[:1000]]
            if len(self.problems) > 1000:
                lines.append(f"- ... and {len(self.problems) - 1000} more (see summary.json)")
        return "\n".join(lines) + "\n"
