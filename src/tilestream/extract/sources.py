"""Finding slides: files, folders (recursively, by extension), CSV lists and slide URLs.

A URL (``s3://bucket/a.svs``, ``https://...``,
``dicomweb+https://host/dicom-web/studies/<Study>/series/<Series>``, on the
command line or in a CSV's ``slide`` column) is one slide, named by the CSV's
``name`` or else by its file stem or series UID (:mod:`tilestream.extract.remote`).
An object-store prefix ending in ``/`` (``s3://bucket/cohort/``, ``gs://...``)
is searched like a folder.

Examples
--------
>>> slide_name("/data/TCGA-01.svs")
'TCGA-01'
>>> slide_name("/data/case-7/frame_0.dcm")
'case-7'
>>> slide_name("dicomweb+https://pacs.example/dicom-web/studies/1.2/series/1.2.840.5")
'1.2.840.5'
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tilestream._util.names import name_problem, portable_key
from tilestream.errors import ConfigError
from tilestream.extract.remote import check_slide_url, is_slide_url, redact_url, url_slide_name
from tilestream.extract.task import SlideTask
from tilestream.storage import store_for

log = logging.getLogger(__name__)

__all__ = ["SLIDE_EXTENSIONS", "check_slide_name", "discover_slides", "slide_name"]

#: Extensions searched for in folders. Plain images (.png, .jpg) are accepted
#: when named explicitly, not picked up from folders (where they are often previews).
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
)
ROI_EXTENSIONS = (".geojson", ".json", ".csv")


def slide_name(path: str | os.PathLike[str]) -> str:
    """The name of a slide: its file stem, its folder's name for a DICOM series, or a URL's series UID."""
    if is_slide_url(path):
        return url_slide_name(str(path))
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


#: Object stores whose prefixes can be listed (an HTTP server has no listing to rely on).
_LISTABLE = ("s3://", "s3a://", "gs://", "gcs://")


def _is_prefix(item: object) -> bool:
    return isinstance(item, str) and item.endswith("/") and item.startswith(_LISTABLE)


def _from_prefix(url: str, storage_options: Mapping[str, Any] | None) -> list[SlideTask]:
    """The slides under an object-store prefix, as a folder is searched (sorted keys).

    A DICOM series (``.dcm`` objects under one folder) is one slide named after the folder.
    """
    store, key = store_for(url, storage_options)
    found: list[SlideTask] = []
    dicom_dirs: set[str] = set()
    for k in store.list(key.rstrip("/")):
        folder, _, fname = k.rpartition("/")
        ext = os.path.splitext(fname)[1].lower()
        if ext == ".dcm":
            if folder not in dicom_dirs:
                dicom_dirs.add(folder)
                found.append(SlideTask(path=store.url_of(k), name=folder.rpartition("/")[2]))
        elif ext in SLIDE_EXTENSIONS and not fname.startswith("."):
            u = store.url_of(k)
            found.append(SlideTask(path=u, name=slide_name(u)))
    if not found:
        log.warning("%s: no slides under this prefix", redact_url(url))
    return found


def _float_or_none(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: mpp {value!r} is not a number") from exc


def _beside(csv_file: Path, value: str) -> Path:
    """``value`` as a path; a relative one is taken from the CSV file's folder."""
    p = Path(value)
    return p if p.is_absolute() else csv_file.parent / p


def _from_csv(path: Path) -> list[tuple[SlideTask, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read slide list: {exc}", path=path) from exc
    # newline="": a quoted name holding a line break stays one field (and is refused)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "slide" not in reader.fieldnames:
        raise ConfigError("a slide list CSV needs a 'slide' column", path=path)
    tasks = []
    end = reader.line_num  # the header's
    for row in reader:
        lineno, end = end + 1, reader.line_num  # the line the row starts on
        value = (row.get("slide") or "").strip()
        if not value:
            raise ConfigError(f"line {lineno}: empty 'slide'", path=path)
        slide = value if is_slide_url(value) else str(_beside(path, value))
        roi = (row.get("roi") or "").strip() or None
        if roi:
            roi = str(_beside(path, roi))
        name = (row.get("name") or "").strip() or slide_name(slide)
        mpp = _float_or_none(row.get("mpp"), f"{path}: line {lineno}")
        tasks.append((SlideTask(path=slide, name=name, mpp=mpp, roi=roi), f"{path}: line {lineno}"))
    return tasks


def discover_slides(
    inputs: Iterable[str | os.PathLike[str] | SlideTask],
    *,
    roi_dir: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[SlideTask]:
    """Turn files, folders and CSV lists into extraction tasks, one per slide.

    Parameters
    ----------
    inputs
        Slide files, folders (searched recursively for :data:`SLIDE_EXTENSIONS`;
        a folder of DICOM files is one slide), slide URLs (``str``; a DICOMweb
        series each), CSV files with a ``slide`` column of files or URLs (and
        optional ``mpp``, ``roi``, ``name`` columns), object-store prefixes
        ending in ``/`` (searched like folders), or tasks.
    roi_dir
        A folder holding ``<slide>.geojson``/``.json``/``.csv`` ROI files.
    storage_options
        Options of the store a prefix is listed in (credentials, endpoint).

    Raises
    ------
    ConfigError
        When a slide's name cannot name files (it contains ``/``, ``\\``,
        ``..``, a control character, starts with ``.``, or is too long: it
        would write outside the output folder), when two slides share a name,
        or names that differ only by case (their outputs would collide, or do
        on case-insensitive file systems), a CSV is malformed, or a slide URL
        holds credentials or names no DICOMweb series. The message names the
        CSV file and line, or the slide (a URL with its credentials redacted).
    """
    found: list[tuple[SlideTask, str]] = []
    for item in inputs:
        if isinstance(item, SlideTask):
            found.append((item, f"slide {redact_url(item.path)}"))
            continue
        if _is_prefix(item):
            found.extend((t, redact_url(t.path)) for t in _from_prefix(str(item), storage_options))
            continue
        if is_slide_url(item):
            url = str(item)
            found.append((SlideTask(path=url, name=slide_name(url)), redact_url(url)))
            continue
        p = Path(item)
        if p.is_dir():
            found.extend(
                (SlideTask(path=str(f), name=slide_name(f)), str(f)) for f in _from_folder(p)
            )
        elif p.suffix.lower() == ".csv":
            found.extend(_from_csv(p))
        else:
            # Missing files are kept: they fail as slides, recorded, without stopping the batch.
            found.append((SlideTask(path=str(p), name=slide_name(p)), str(p)))
    for t, where in found:
        if is_slide_url(t.path):
            check_slide_url(t.path, where)
        check_slide_name(t.name, where)
        if t.mpp is not None and not (isinstance(t.mpp, (int, float)) and 0 < t.mpp < math.inf):
            raise ConfigError(f"{where}: mpp must be a positive number, not {t.mpp!r}")
    if roi_dir is not None:
        found = [(_with_roi(t, Path(roi_dir)), where) for t, where in found]
    _check_unique(found)
    unique: dict[str, SlideTask] = {}
    for t, _ in found:
        unique.setdefault(t.name, t)
    return list(unique.values())


def check_slide_name(name: str, where: str) -> None:
    """Raise :class:`ConfigError` when ``name`` cannot name a slide's output files.

    ``where`` says where the name came from (``"slides.csv: line 3"``).

    >>> check_slide_name("../../escape", "slides.csv: line 3")
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: slides.csv: line 3: slide name '../../escape' contains a path separator; \
a slide name is part of its output files' names and must stay a plain file name
    """
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(
            f"{where}: slide name {name!r} {problem}; a slide name is part of its "
            "output files' names and must stay a plain file name"
        )


def _with_roi(task: SlideTask, roi_dir: Path) -> SlideTask:
    if task.roi is not None:
        return task
    for ext in ROI_EXTENSIONS:
        candidate = roi_dir / f"{task.name}{ext}"
        if candidate.is_file():
            return SlideTask(path=task.path, name=task.name, mpp=task.mpp, roi=str(candidate))
    return task


def _check_unique(found: Sequence[tuple[SlideTask, str]]) -> None:
    seen: dict[str, tuple[SlideTask, str]] = {}
    dupes: list[str] = []
    for t, where in found:
        key = portable_key(t.name)
        if key not in seen:
            seen[key] = (t, where)
            continue
        first, first_where = seen[key]
        if first.name != t.name:
            dupes.append(
                f"{first.name!r} ({first_where}) and {t.name!r} ({where}) differ only by case "
                "(or Unicode normalisation) and collide on case-insensitive file systems"
            )
        elif first.path != t.path:
            dupes.append(f"{t.name!r} ({first_where}: {first.path}; {where}: {t.path})")
    if dupes:
        raise ConfigError(
            "slides with the same name would overwrite each other: " + "; ".join(dupes)
        )
