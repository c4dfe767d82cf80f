"""What a viewer serves: the slides found under a path, with their extraction outputs.

``PATH`` may be a slide file, a folder of slides, an extraction run folder
(``<tile_px>px_<tile_um>/`` with ``config.json`` and ``state/``) or a folder
holding run folders. Every slide becomes a :class:`SlideEntry` with an ``id``
(its name, or ``<run>/<name>`` when several runs hold the same name): URLs name
slides by id only, never by file path, and nothing shown to the browser holds an
absolute path (file names and run-relative names only).

A slide whose outputs in its run folder are **stale** (:mod:`tilestream.runfolder`:
a failed or interrupted rerun, another config, files changed since) is listed
with the reason, logged as a warning, and none of its outputs (TFRecord, tile
tables, preview) are served as the run's data. TFRecords without a state
record are listed that way too.

Examples
--------
>>> import tempfile
>>> from tilestream.extract import demo_slide_path
>>> catalog = Catalog.from_path(demo_slide_path())
>>> catalog.mode, [e.id for e in catalog.entries], catalog.root is None
('slide', ['CMU-1-Small-Region'], True)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream.errors import ConfigError, SlideNotFoundError
from tilestream.extract.remote import is_slide_url, redact_url, url_slide_name
from tilestream.extract.sources import ROI_EXTENSIONS, SLIDE_EXTENSIONS, discover_slides, slide_name
from tilestream.runfolder import (
    CONFIG_FILE,
    is_run_dir,
    read_state,
    run_config_hash,
    slide_names,
    slide_outputs,
    slide_staleness,
)
from tilestream.viewer.access import public_text

__all__ = ["Catalog", "SlideEntry", "is_run_dir"]

log = logging.getLogger(__name__)


@dataclass
class SlideEntry:
    """One slide: its file (if known and present) and its extraction outputs (if any).

    ``slide_path`` is a local file, or a slide URL (a DICOMweb series) as a ``str``.
    """

    id: str
    name: str
    slide_path: Path | str | None
    run_dir: Path | None = None
    run: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    roi_path: Path | None = None
    #: Why the slide's outputs in its run folder are not current (``None``: they are).
    stale: str | None = None

    def _out(self, kind: str) -> Path | None:
        # A current output of the slide (a key of runfolder.slide_outputs) that exists.
        if self.run_dir is None or self.stale is not None:
            return None
        path = slide_outputs(self.run_dir, self.name)[kind]
        return path if path.is_file() else None

    @property
    def tfrecord(self) -> Path | None:
        """The slide's TFRecord file, if written."""
        return self._out("tfrecord")

    @property
    def coords(self) -> Path | None:
        """The kept tiles' coordinates table, if written."""
        return self._out("coords")

    @property
    def rejected(self) -> Path | None:
        """The rejected tiles' table, if written."""
        return self._out("rejected")

    @property
    def preview(self) -> Path | None:
        """The extraction's preview image, if written."""
        return self._out("preview")

    @property
    def outlines(self) -> Path | None:
        """The tissue, pen and artifact outlines (``<slide>.geojson``), if written."""
        return self._out("outlines")

    @property
    def slide_file(self) -> str | None:
        """The slide file's name (what the browser is shown; never its folder).

        For a URL slide, the last segment of its path (a DICOMweb series' UID).
        """
        if isinstance(self.slide_path, str):
            return self.slide_path.rstrip("/").rsplit("/", 1)[-1]
        return self.slide_path.name if self.slide_path is not None else None

    @property
    def has_slide(self) -> bool:
        """Whether the slide file exists (Deep Zoom, metadata and tissue need it).

        A URL slide is taken to exist; a server that cannot serve it fails its reads.
        """
        if isinstance(self.slide_path, str):
            return True
        return self.slide_path is not None and self.slide_path.exists()

    def _preview_url(self) -> str | None:
        # The preview's path under the served folder (what /files/ is asked for).
        preview = self.preview
        if preview is None or self.run_dir is None:
            return None
        prefix = "" if self.run in (None, ".") else f"{self.run}/"
        return prefix + preview.relative_to(self.run_dir).as_posix()

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts for the dataset view (no absolute paths)."""
        state = self.state
        error = state.get("error")
        return {
            "id": self.id,
            "name": self.name,
            "run": self.run,
            "has_slide": self.has_slide,
            "slide_file": self.slide_file,
            "status": state.get("status"),
            "stale": self.stale,
            "tiles": state.get("tiles"),
            "grid": state.get("grid"),
            "rejected": state.get("rejected"),
            "error": public_text(error, root=self.run_dir) if isinstance(error, str) else error,
            "error_type": state.get("error_type"),
            "mpp": state.get("mpp"),
            "has_tfrecord": self.tfrecord is not None,
            "has_grid": self.coords is not None or self.rejected is not None,
            "has_roi": self.roi_path is not None,
            "has_qc": self.run_dir is not None
            and self.stale is None
            and state.get("status") == "done",
            "preview": self._preview_url(),
            "tile_px": self.config.get("tile_px"),
            "tile_um": self.config.get("tile_um"),
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _state(run_dir: Path, name: str) -> dict[str, Any]:
    # The slide's state record; {} when it has none (one that cannot be read is logged).
    state = read_state(run_dir, name)
    if state is None:
        path = slide_outputs(run_dir, name)["state"]
        if path.is_file():
            log.warning("cannot read %s: unreadable or not a JSON object", path)
        return {}
    return state


def _find_roi(name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for ext in ROI_EXTENSIONS:
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    return None


@dataclass
class Catalog:
    """The slides a viewer serves.

    Attributes
    ----------
    root
        The served folder (files under it may be fetched; nothing outside), or
        ``None`` when a single slide is served.
    mode
        ``"slide"``, ``"slides"`` (a folder of slides) or ``"runs"`` (extraction outputs).
    entries
        The slides, in order.
    """

    root: Path | None
    mode: str
    entries: list[SlideEntry]

    def get(self, slide_id: str) -> SlideEntry | None:
        """The entry with id ``slide_id``, or ``None``."""
        for entry in self.entries:
            if entry.id == slide_id:
                return entry
        return None

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, roi_dir: str | os.PathLike[str] | None = None
    ) -> Catalog:
        """Catalogue a slide, a folder of slides, a run folder or a folder of run folders.

        ROI files (``<slide>.geojson``/``.json``/``.csv``) are looked for in
        ``roi_dir`` and beside each slide file.

        Raises
        ------
        SlideNotFoundError
            When ``path`` does not exist.
        ConfigError
            When a folder holds neither slides nor extraction outputs.
        """
        rois = [Path(roi_dir)] if roi_dir is not None else []
        if isinstance(path, str) and is_slide_url(path):
            url = redact_url(path)
            name = url_slide_name(path)
            entry = SlideEntry(id=name, name=name, slide_path=path)
            entry.roi_path = _find_roi(name, rois)
            if url != path:  # the catalogue is shown: never with credentials in it
                raise ConfigError(
                    "a slide URL with credentials, a query string or a fragment in it is not "
                    "served: give credentials through the environment (docs/dicomweb.md)",
                    path=url,
                )
            return cls(root=None, mode="slide", entries=[entry])
        p = Path(path)
        if not p.exists():
            raise SlideNotFoundError("no such file or folder", path=p)
        if p.is_file():
            entry = SlideEntry(id=slide_name(p), name=slide_name(p), slide_path=p.resolve())
            entry.roi_path = _find_roi(entry.name, [*rois, p.parent])
            return cls(root=None, mode="slide", entries=[entry])
        root = p.resolve()
        runs = [root] if is_run_dir(root) else sorted(d for d in root.iterdir() if is_run_dir(d))
        if runs:
            return cls(root=root, mode="runs", entries=_run_entries(root, runs, rois))
        entries = []
        for task in discover_slides([root]):
            sp = Path(task.path)
            roi = _find_roi(task.name, [*rois, sp.parent])
            entries.append(SlideEntry(id=task.name, name=task.name, slide_path=sp, roi_path=roi))
        if not entries:
            exts = ", ".join(sorted(SLIDE_EXTENSIONS))
            raise ConfigError(
                f"no slides ({exts}) and no extraction outputs (config.json and state/) found",
                path=p,
            )
        return cls(root=root, mode="slides", entries=entries)


def _staleness(
    run_dir: Path, run: str, name: str, state: dict[str, Any], expected: str | None
) -> str | None:
    # Why the slide's outputs are stale, when it has outputs to leave out; logged.
    if expected is None:
        return None
    outputs = slide_outputs(run_dir, name)
    if not any(
        outputs[k].is_file() for k in ("tfrecord", "index", "coords", "rejected", "preview")
    ):
        return None
    reason = slide_staleness(run_dir, name, config_hash=expected, state=state or None)
    if reason is not None:
        log.warning(
            "viewer: the outputs of slide %s in run %s are stale and not shown as its data "
            "(kept on disk): %s",
            name,
            run,
            reason,
        )
    return reason


def _run_entries(root: Path, runs: list[Path], rois: list[Path]) -> list[SlideEntry]:
    entries: list[SlideEntry] = []
    for run_dir in runs:
        config = _read_json(run_dir / CONFIG_FILE).get("config", {})
        expected = run_config_hash(run_dir)
        run = run_dir.relative_to(root).as_posix() if run_dir != root else "."
        for name in slide_names(run_dir):
            state = _state(run_dir, name)
            recorded = state.get("path")
            sp: Path | str | None = None
            if isinstance(recorded, str) and recorded:
                sp = recorded if is_slide_url(recorded) else Path(recorded)
            folders = [*rois] + ([sp.parent] if isinstance(sp, Path) else [])
            entries.append(
                SlideEntry(
                    id=name,
                    name=name,
                    slide_path=sp,
                    run_dir=run_dir,
                    run=run,
                    state=state,
                    config=config if isinstance(config, dict) else {},
                    roi_path=_find_roi(name, folders),
                    stale=_staleness(run_dir, run, name, state, expected),
                )
            )
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    for e in entries:
        if counts[e.name] > 1:
            e.id = f"{e.run}/{e.name}"
    return entries
