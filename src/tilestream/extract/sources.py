"""Finding slides: files, folders (recursively, by extension) and CSV lists.

Examples
--------
>>> slide_name("/data/TCGA-01.svs")
'TCGA-01'
>>> slide_name("/data/case-7/frame_0.dcm")
'case-7'
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tilestream.errors import ConfigError
from tilestream.extract.engine import SlideTask

__all__ = ["SLIDE_EXTENSIONS", "discover_slides", "slide_name"]

#: Extensions searched for in folders. Plain images (.png, .jpg) are accepted
#: when named explicitly, not picked up from folders (where they are often previews).
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
)
ROI_EXTENSIONS = (".geojson", ".json", ".csv")


def slide_name(path: str | os.PathLike[str]) -> str:
    """The name of a slide: its file stem, or its folder's name for a DICOM series."""
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        return p.parent.name
    return p.stem


def _from_folder(folder: Path) -> list[Path]:
    found: list[Path] = []
    dicom_dirs: set[Path] = set()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for fname in sorted(files):
            p = Path(root) / fname
            ext = p.suffix.lower()
            if ext == ".dcm":
                if p.parent not in dicom_dirs:
                    dicom_dirs.add(p.parent)
                    found.append(p)
            elif ext in SLIDE_EXTENSIONS and not fname.startswith("."):
                found.append(p)
    return found


def _float_or_none(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: mpp {value!r} is not a number") from exc


def _from_csv(path: Path) -> list[SlideTask]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read slide list: {exc}", path=path) from exc
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "slide" not in reader.fieldnames:
        raise ConfigError("a slide list CSV needs a 'slide' column", path=path)
    tasks = []
    for lineno, row in enumerate(reader, start=2):
        value = (row.get("slide") or "").strip()
        if not value:
            raise ConfigError(f"line {lineno}: empty 'slide'", path=path)
        p = Path(value)
        if not p.is_absolute():
            p = path.parent / p
        roi = (row.get("roi") or "").strip() or None
        if roi and not Path(roi).is_absolute():
            roi = str(path.parent / roi)
        name = (row.get("name") or "").strip() or slide_name(p)
        mpp = _float_or_none(row.get("mpp"), f"{path}: line {lineno}")
        tasks.append(SlideTask(path=str(p), name=name, mpp=mpp, roi=roi))
    return tasks


def discover_slides(
    inputs: Iterable[str | os.PathLike[str] | SlideTask],
    *,
    roi_dir: str | os.PathLike[str] | None = None,
) -> list[SlideTask]:
    """Turn files, folders and CSV lists into extraction tasks, one per slide.

    Parameters
    ----------
    inputs
        Slide files, folders (searched recursively for :data:`SLIDE_EXTENSIONS`;
        a folder of DICOM files is one slide), CSV files with a ``slide`` column
        (and optional ``mpp``, ``roi``, ``name`` columns), or tasks.
    roi_dir
        A folder holding ``<slide>.geojson``/``.json``/``.csv`` ROI files.

    Raises
    ------
    ConfigError
        When two slides share a name (their outputs would collide), or a CSV is malformed.
    """
    tasks: list[SlideTask] = []
    for item in inputs:
        if isinstance(item, SlideTask):
            tasks.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            tasks.extend(SlideTask(path=str(f), name=slide_name(f)) for f in _from_folder(p))
        elif p.suffix.lower() == ".csv":
            tasks.extend(_from_csv(p))
        else:
            # Missing files are kept: they fail as slides, recorded, without stopping the batch.
            tasks.append(SlideTask(path=str(p), name=slide_name(p)))
    if roi_dir is not None:
        tasks = [_with_roi(t, Path(roi_dir)) for t in tasks]
    _check_unique(tasks)
    unique: dict[str, SlideTask] = {}
    for t in tasks:
        unique.setdefault(t.name, t)
    return list(unique.values())


def _with_roi(task: SlideTask, roi_dir: Path) -> SlideTask:
    if task.roi is not None:
        return task
    for ext in ROI_EXTENSIONS:
        candidate = roi_dir / f"{task.name}{ext}"
        if candidate.is_file():
            return SlideTask(path=task.path, name=task.name, mpp=task.mpp, roi=str(candidate))
    return task


def _check_unique(tasks: Sequence[SlideTask]) -> None:
    seen: dict[str, str] = {}
    dupes: list[str] = []
    for t in tasks:
        if t.name in seen and seen[t.name] != t.path:
            dupes.append(f"{t.name!r} ({seen[t.name]} and {t.path})")
        seen.setdefault(t.name, t.path)
    if dupes:
        raise ConfigError(
            "slides with the same name would overwrite each other: " + "; ".join(dupes)
        )
