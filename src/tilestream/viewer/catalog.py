"""What a viewer serves: the slides found under a path, with their extraction outputs.

``PATH`` may be a slide file, a folder of slides, an extraction run folder
(``<tile_px>px_<tile_um>/`` with ``config.json`` and ``state/``) or a folder
holding run folders. Every slide becomes a :class:`SlideEntry` with an ``id``
(its name, or ``<run>/<name>`` when several runs hold the same name): URLs name
slides by id only, never by file path, and nothing shown to the browser holds an
absolute path (file names and run-relative names only).

``PATH`` may also be a URL (with ``storage_options`` for its store): a
DICOMweb series, a slide object (``s3://bucket/slides/a.svs``,
``https://host/a.svs``, read by ranges) or a run folder in a store
(``s3://bucket/out/256px_128um``, as ``extract --out s3://bucket/out`` writes
it). A run folder in a store is listed once; its state objects are read once
and each slide's recorded outputs checked by one ``HEAD`` each
(:func:`tilestream.runfolder.store_slide_staleness`, the check extraction's
resume makes); its tables, preview and outlines are read from their objects
and its TFRecords by ranged reads (:class:`tilestream.tfrecord.TFRecord`). The
options are kept out of every page, reply, ``repr``, log line and error.
ROI files of such a run come from ``roi_dir`` only; one beside a slide object
(``<slide>.geojson``...) is found by a ``HEAD``. A folder of slides or of
runs in a store is not served (give one slide or one run folder).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tilestream.errors import ConfigError, SlideNotFoundError, StorageError, StorageNotFoundError
from tilestream.extract.remote import is_dicomweb_url, is_slide_url, redact_url, url_slide_name
from tilestream.extract.sources import ROI_EXTENSIONS, SLIDE_EXTENSIONS, discover_slides, slide_name
from tilestream.runfolder import (
    CONFIG_FILE,
    STATE_DIR,
    is_run_dir,
    read_state,
    run_config_hash,
    slide_names,
    slide_output_keys,
    slide_output_names,
    slide_outputs,
    slide_staleness,
    store_slide_staleness,
    tfrecord_slide,
)
from tilestream.storage import Store, store_for
from tilestream.viewer.access import public_text

__all__ = ["Catalog", "SlideEntry", "is_run_dir"]

log = logging.getLogger(__name__)


@dataclass
class SlideEntry:
    """One slide: its file (if known and present) and its extraction outputs (if any).

    ``slide_path`` is a local file, or a slide URL (a DICOMweb series, an object
    in a store) as a ``str``. The outputs of a run folder in a store are read
    from ``store`` under the key ``run_key`` (``objects``: the keys listed
    there); ``storage_options`` open the slide and the TFRecord, and are never
    shown (not in the ``repr`` either).
    """

    id: str
    name: str
    slide_path: Path | str | None
    run_dir: Path | None = None
    run: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: The slide's ROI file: a path, or the URL of an object beside a slide object.
    roi_path: Path | str | None = None
    #: Why the slide's outputs in its run folder are not current (``None``: they are).
    stale: str | None = None
    store: Store | None = field(default=None, repr=False, compare=False)
    run_key: str | None = None
    objects: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    #: The slide object's version (ETag, else size and time) when the catalogue read it.
    slide_version: str | None = None

    @property
    def has_run(self) -> bool:
        """Whether the slide belongs to a run folder (on disk or in a store)."""
        return self.run_dir is not None or self.store is not None

    def _out(self, kind: str) -> Path | str | None:
        # A current output of the slide (a key of runfolder.slide_outputs) that exists:
        # a path, or the URL of an object in the run folder's store.
        if self.stale is not None:
            return None
        if self.store is not None and self.run_key is not None:
            key = slide_output_keys(self.run_key, self.name)[kind]
            return self.store.url_of(key) if key in self.objects else None
        if self.run_dir is None:
            return None
        path = slide_outputs(self.run_dir, self.name)[kind]
        return path if path.is_file() else None

    def read_output(self, kind: str) -> bytes | None:
        """The bytes of a current output (``"coords"``, ``"preview"``...), ``None`` without one."""
        where = self._out(kind)
        if where is None:
            return None
        if isinstance(where, Path):
            return where.read_bytes()
        assert self.store is not None and self.run_key is not None
        return self.store.read(slide_output_keys(self.run_key, self.name)[kind])

    @property
    def tfrecord(self) -> Path | str | None:
        """The slide's TFRecord file (or object URL), if written."""
        return self._out("tfrecord")

    @property
    def coords(self) -> Path | str | None:
        """The kept tiles' coordinates table, if written."""
        return self._out("coords")

    @property
    def rejected(self) -> Path | str | None:
        """The rejected tiles' table, if written."""
        return self._out("rejected")

    @property
    def preview(self) -> Path | str | None:
        """The extraction's preview image, if written."""
        return self._out("preview")

    @property
    def outlines(self) -> Path | str | None:
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
    def roi_file(self) -> str | None:
        """The ROI file's name (never its folder)."""
        if isinstance(self.roi_path, str):
            return self.roi_path.rsplit("/", 1)[-1]
        return self.roi_path.name if self.roi_path is not None else None

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
        if self.preview is None or not self.has_run:
            return None
        prefix = "" if self.run in (None, ".") else f"{self.run}/"
        return prefix + slide_output_names(self.name)["preview"]

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
            "has_qc": self.has_run and self.stale is None and state.get("status") == "done",
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
    #: The served run folder's name when it is in a store (``root`` is then ``None``).
    label: str | None = None

    def get(self, slide_id: str) -> SlideEntry | None:
        """The entry with id ``slide_id``, or ``None``."""
        for entry in self.entries:
            if entry.id == slide_id:
                return entry
        return None

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        roi_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Catalog:
        """Catalogue a slide, a folder of slides, a run folder or a folder of run folders.

        ROI files (``<slide>.geojson``/``.json``/``.csv``) are looked for in
        ``roi_dir`` and beside each slide file (not beside a slide in a store).
        ``path`` may be a URL: a DICOMweb series, a slide object in a store
        (``s3://bucket/slides/a.svs``, ``https://host/a.svs``) or a run folder
        in a store (``s3://bucket/out/256px_128um``: a ``config.json`` object
        under it), read with ``storage_options``.

        Raises
        ------
        SlideNotFoundError
            When ``path`` does not exist (no file, folder or object there).
        ConfigError
            When a folder holds neither slides nor extraction outputs.
        StorageError
            When the store cannot be read (credentials, bucket...), naming the URL.
        """
        rois = [Path(roi_dir)] if roi_dir is not None else []
        if isinstance(path, str) and is_slide_url(path):
            url = redact_url(path)
            if url != path:  # the catalogue is shown: never with credentials in it
                raise ConfigError(
                    "a slide URL with credentials, a query string or a fragment in it is not "
                    "served: give credentials through the environment or --storage-option "
                    "(docs/dicomweb.md, docs/storage.md)",
                    path=url,
                )
            if not is_dicomweb_url(path):
                return _store_catalog(path, rois, storage_options)
            name = url_slide_name(path)
            entry = SlideEntry(id=name, name=name, slide_path=path)
            entry.roi_path = _find_roi(name, rois)
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


#: The outputs whose presence makes a slide's staleness worth telling.
_DATA_KINDS = ("tfrecord", "index", "coords", "rejected", "preview")


def _staleness(
    run_dir: Path, run: str, name: str, state: dict[str, Any], expected: str | None
) -> str | None:
    # Why the slide's outputs are stale, when it has outputs to leave out; logged.
    if expected is None:
        return None
    outputs = slide_outputs(run_dir, name)
    if not any(outputs[k].is_file() for k in _DATA_KINDS):
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


def _store_catalog(
    url: str, rois: list[Path], storage_options: Mapping[str, Any] | None
) -> Catalog:
    # A URL in a store: a run folder (a config.json object under it) or one slide object.
    store, key = store_for(url, storage_options)
    key = key.strip("/")
    label = key.rsplit("/", 1)[-1] or url
    is_slide = PurePosixPath(key).suffix.lower() in SLIDE_EXTENSIONS
    config = None if is_slide or not key else _object_json(store, f"{key}/{CONFIG_FILE}")
    if config is not None:
        entries = _store_run_entries(store, key, config, rois, storage_options)
        log.info("viewer: %d slides in the run folder %s", len(entries), store.url_of(key))
        return Catalog(root=None, mode="runs", entries=entries, label=label)
    try:
        version = store.stat(key).version
    except StorageNotFoundError as exc:
        if not is_slide and _has_objects(store, key):
            raise ConfigError(
                "a folder of slides or of run folders in a store is not served: give one "
                "slide's URL or one run folder's URL (<prefix>/<tile_px>px_<tile_um>)",
                path=store.url_of(key),
            ) from exc
        raise SlideNotFoundError(
            "no slide object and no run folder (config.json) there", path=store.url_of(key)
        ) from exc
    name = url_slide_name(url)
    entry = SlideEntry(
        id=name,
        name=name,
        slide_path=url,
        storage_options=storage_options,
        slide_version=version,
    )
    entry.roi_path = _find_roi(name, rois) or _store_roi(store, key, name)
    return Catalog(root=None, mode="slide", entries=[entry])


def _has_objects(store: Store, prefix: str) -> bool:
    # Whether anything is stored under a prefix (False where the store cannot list).
    try:
        return next(iter(store.list(prefix)), None) is not None
    except StorageError:
        return False


def _store_roi(store: Store, key: str, name: str) -> str | None:
    # The URL of <name>.geojson/.json/.csv beside a slide object (one HEAD each, in order).
    folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    for ext in ROI_EXTENSIONS:
        candidate = f"{folder}{name}{ext}"
        try:
            if store.exists(candidate):
                return store.url_of(candidate)
        except StorageError as exc:
            log.info("viewer: cannot look for ROIs beside %s: %s", store.url_of(key), exc)
            return None
    return None


def _object_json(store: Store, key: str) -> dict[str, Any] | None:
    # A small JSON object; None when missing, logged when unreadable.
    try:
        data = json.loads(store.read(key))
    except StorageNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", store.url_of(key), exc)
        return None
    return data if isinstance(data, dict) else None


def _store_run_entries(
    store: Store,
    run: str,
    config: dict[str, Any],
    rois: list[Path],
    storage_options: Mapping[str, Any] | None,
) -> list[SlideEntry]:
    # The slides of a run folder in a store: one listing, one GET per state object and
    # the runfolder's store-aware staleness check (one HEAD per recorded output).
    objects = frozenset(store.list(run))
    names = set()
    for key in objects:
        rel = key[len(run) + 1 :]
        if rel.startswith(f"{STATE_DIR}/") and rel.endswith(".json") and rel.count("/") == 1:
            names.add(rel[len(STATE_DIR) + 1 : -len(".json")])
        elif (n := tfrecord_slide(rel)) is not None and "/" not in rel:
            names.add(n)
    expected = config.get("hash")
    settings = config.get("config", {})
    if not rois:
        log.info("viewer: ROI files of a run folder in a store are looked for in --roi-dir only")
    entries = []
    for name in sorted(n for n in names if n and not n.startswith(".")):
        keys = slide_output_keys(run, name)
        state = _object_json(store, keys["state"]) or {}
        recorded = state.get("path")
        sp: Path | str | None = None
        if isinstance(recorded, str) and recorded:
            sp = recorded if is_slide_url(recorded) else Path(recorded)
        stale = None
        if isinstance(expected, str) and any(keys[k] in objects for k in _DATA_KINDS):
            stale = store_slide_staleness(store, run, name, state or None, expected)
            if stale is not None:
                log.warning(
                    "viewer: the outputs of slide %s in run %s are stale and not shown as "
                    "its data (kept in the store): %s",
                    name,
                    store.url_of(run),
                    stale,
                )
        entries.append(
            SlideEntry(
                id=name,
                name=name,
                slide_path=sp,
                run=".",
                state=state,
                config=settings if isinstance(settings, dict) else {},
                roi_path=_find_roi(name, rois),
                stale=stale,
                store=store,
                run_key=run,
                objects=objects,
                storage_options=storage_options,
            )
        )
    return entries
