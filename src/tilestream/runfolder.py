"""The on-disk contract of an extraction run folder, and which of its slides are current.

An extraction writes one run folder (``<out>/<tile_px>px_<tile_um>/``)::

    config.json            {"config": ..., "hash": <config hash>, "versions": ...}
    <slide>.tfrecords  <slide>.index.npz  <slide>.coords.csv
    <slide>.geojson        tissue, pen and artifact outlines (QuPath GeoJSON, level-0 pixels)
    state/<slide>.json     the slide's record; written first as "running", last as "done"
    state/<slide>.rejected.csv   previews/<slide>.jpg

A slide's outputs are **current** when its state says ``"done"``, was made
under the config hash ``config.json`` names, and the sizes it recorded for its
outputs still match the files. Everything else in a run folder (a slide that
failed or was interrupted on a rerun, one extracted under another config, an
output changed since) is **stale**: readers (:mod:`tilestream.dataset`, the
loaders, the viewer, the manifest) leave it out with a warning naming it.
Nothing is ever deleted.

A folder without a ``config.json`` that names a hash is not a run folder (a
folder of TFRecords from elsewhere): all its TFRecords are current.

The same layout holds in an object store (``s3://bucket/prefix/<label>/``):
:func:`slide_output_names` states it once, :func:`slide_outputs` gives the
local paths and :func:`slide_output_keys` the object keys (with
:func:`run_key`). A run folder in a store also holds its lease objects
(``.lease/<n>``, in :data:`LEASE_DIR`; :mod:`tilestream.extract.lease`) and
its states record each output's ETag beside its size.

Examples
--------
>>> import json, tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = (run / "config.json").write_text(json.dumps({"hash": "h1"}))
>>> (run / "state").mkdir()
>>> _ = (run / "a.tfrecords").write_bytes(b"x" * 10)
>>> _ = (run / "b.tfrecords").write_bytes(b"y" * 10)
>>> state = {"status": "done", "config_hash": "h1", "outputs": {"tfrecord": {"size": 10}}}
>>> _ = (run / "state" / "a.json").write_text(json.dumps(state))
>>> _ = (run / "state" / "b.json").write_text(json.dumps({**state, "config_hash": "h0"}))
>>> stale_slides(run)
{'b': 'extracted under config h0, but the folder holds config h1'}
>>> [p.name for p in current_tfrecords([run / "a.tfrecords", run / "b.tfrecords"], warn=False)]
['a.tfrecords']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tilestream._util.atomic import is_temp_file
from tilestream.errors import StorageError, StorageNotFoundError
from tilestream.storage import Store, is_url, store_for

__all__ = [
    "CONFIG_FILE",
    "LEASE_DIR",
    "MANIFEST_FILE",
    "OUTPUT_KINDS",
    "REPORT_FILE",
    "RUN_FILES",
    "STATE_DIR",
    "SUMMARY_FILE",
    "TFRECORD_SUFFIX",
    "TFRECORD_SUFFIXES",
    "current_tfrecords",
    "find_tfrecords",
    "is_run_dir",
    "output_sizes",
    "read_state",
    "read_states",
    "run_config_hash",
    "run_folder_name",
    "run_key",
    "run_tfrecords",
    "slide_names",
    "slide_output_keys",
    "slide_output_names",
    "slide_outputs",
    "slide_staleness",
    "stale_files",
    "stale_slides",
    "store_slide_staleness",
    "tfrecord_slide",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
#: ``{tfrecord name: {"total": records}}`` of the current slides (Slideflow's manifest).
MANIFEST_FILE = "manifest.json"
#: The run's summary and its HTML report.
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
#: The files a run writes once for the whole folder.
RUN_FILES = (MANIFEST_FILE, CONFIG_FILE, SUMMARY_FILE, REPORT_FILE)
STATE_DIR = "state"
#: The folder of a run folder's lease objects in an object store (``.lease/<generation>``),
#: see :mod:`tilestream.extract.lease`: listed alone, without the run's outputs.
LEASE_DIR = ".lease"
#: The suffix of the TFRecords an extraction writes (``<slide>.tfrecords``).
TFRECORD_SUFFIX = ".tfrecords"
#: The suffixes :func:`find_tfrecords` takes for TFRecord files by default.
TFRECORD_SUFFIXES = (".tfrecords", ".tfrecord", ".record", ".tfrec", ".gz")
#: The outputs whose sizes a "done" state records (``state["outputs"][kind]["size"]``).
OUTPUT_KINDS = ("tfrecord", "index", "coords")


def slide_output_names(name: str, *, to_images: bool = False) -> dict[str, str]:
    """The names of a slide's outputs relative to the run folder (``/``-separated).

    The one statement of the layout: :func:`slide_outputs` (local paths) and
    :func:`slide_output_keys` (object keys) are built from it.

    >>> slide_output_names("s1")["state"], slide_output_names("s1", to_images=True)["images"]
    ('state/s1.json', 's1')
    """
    out = {
        "coords": f"{name}.coords.csv",
        "outlines": f"{name}.geojson",
        "preview": f"previews/{name}.jpg",
        "state": f"{STATE_DIR}/{name}.json",
        "rejected": f"{STATE_DIR}/{name}.rejected.csv",
    }
    if to_images:
        out["images"] = name
    else:
        out["tfrecord"] = f"{name}{TFRECORD_SUFFIX}"
        out["index"] = f"{name}.index.npz"
    return out


def slide_outputs(
    run_dir: str | os.PathLike[str], name: str, *, to_images: bool = False
) -> dict[str, Path]:
    """The paths of a slide's outputs in ``run_dir``.

    >>> sorted(slide_outputs("run", "s1"))
    ['coords', 'index', 'outlines', 'preview', 'rejected', 'state', 'tfrecord']

    The outlines file is not among :data:`OUTPUT_KINDS`: it is meant to be
    opened and corrected (in QuPath), and editing it leaves the slide current.
    """
    run = Path(run_dir)
    return {k: run / v for k, v in slide_output_names(name, to_images=to_images).items()}


def run_key(prefix: str, label: str) -> str:
    """The key of a run folder in a store: ``<prefix>/<label>`` (``label`` alone at the root).

    >>> run_key("cohort1/out", "256px_128um"), run_key("", "256px_128um")
    ('cohort1/out/256px_128um', '256px_128um')
    """
    prefix = prefix.strip("/")
    return f"{prefix}/{label}" if prefix else label


def slide_output_keys(run: str, name: str, *, to_images: bool = False) -> dict[str, str]:
    """The object keys of a slide's outputs under the run folder key ``run``.

    >>> slide_output_keys("out/256px_128um", "s1")["tfrecord"]
    'out/256px_128um/s1.tfrecords'
    """
    return {k: f"{run}/{v}" for k, v in slide_output_names(name, to_images=to_images).items()}


def run_folder_name(tile_px: int, tile_um: str | float) -> str:
    """The name of the run folder of a tile size: ``<tile_px>px_<tile_um>``.

    ``tile_um`` is a size label (``"302um"``, ``"10x"``) or a number of microns.

    >>> run_folder_name(299, 302), run_folder_name(256, "10x"), run_folder_name(256, 128.5)
    ('299px_302um', '256px_10x', '256px_128.5um')
    """
    if isinstance(tile_um, str):
        label = tile_um
    else:
        label = f"{int(tile_um)}um" if float(tile_um).is_integer() else f"{tile_um:g}um"
    return f"{tile_px}px_{label}"


def _visible(name: str) -> bool:
    return not name.startswith(".") and not is_temp_file(name)


def find_tfrecords(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    suffixes: Sequence[str] = TFRECORD_SUFFIXES,
) -> list[Path]:
    """The TFRecord files named by ``paths``: files as given, folders searched.

    A folder gives its files ending in one of ``suffixes``, sorted, without
    hidden files or temporary files left by an interrupted write; with
    ``recursive`` its sub-folders too (hidden ones skipped), depth first in
    sorted order. Paths that are not folders are returned as they are
    (opening them reports what is wrong).

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "sub").mkdir()
    >>> for n in ("b.tfrecords", ".hidden.tfrecords", "a.tfrecord", "sub/c.tfrecords", "x.csv"):
    ...     _ = (root / n).write_bytes(b"")
    >>> [p.relative_to(root).as_posix() for p in find_tfrecords(root)]
    ['a.tfrecord', 'b.tfrecords', 'sub/c.tfrecords']
    >>> [p.name for p in find_tfrecords(root, recursive=False, suffixes=[".tfrecords"])]
    ['b.tfrecords']
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    ends = tuple(suffixes)
    out: list[Path] = []
    for item in items:
        root = Path(item)
        if not root.is_dir():
            out.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            out.extend(
                Path(dirpath) / n for n in sorted(filenames) if _visible(n) and n.endswith(ends)
            )
    return out


def run_tfrecords(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The slides' TFRecords in ``run_dir`` (``<slide>.tfrecords``, top level, sorted)."""
    return find_tfrecords(run_dir, recursive=False, suffixes=(TFRECORD_SUFFIX,))


def slide_names(run_dir: str | os.PathLike[str]) -> list[str]:
    """The slides of a run folder: those with a state record or a TFRecord, sorted."""
    run = Path(run_dir)
    names = {s.name[: -len(".json")] for s in (run / STATE_DIR).glob("*.json") if _visible(s.name)}
    names.update(n for p in run_tfrecords(run) if (n := tfrecord_slide(p)) is not None)
    return sorted(names)


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an extraction run folder (a ``config.json`` and a ``state/``)."""
    run = Path(path)
    return (run / CONFIG_FILE).is_file() and (run / STATE_DIR).is_dir()


def tfrecord_slide(path: str | os.PathLike[str]) -> str | None:
    """The slide of a run folder's ``<slide>.tfrecords``; ``None`` for another file.

    >>> tfrecord_slide("run/s1.tfrecords"), tfrecord_slide("run/s1.index.npz")
    ('s1', None)
    """
    name = Path(path).name
    return name[: -len(TFRECORD_SUFFIX)] if name.endswith(TFRECORD_SUFFIX) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def run_config_hash(run_dir: str | os.PathLike[str]) -> str | None:
    """The config hash ``run_dir/config.json`` names; ``None`` when it is not a run folder."""
    data = _read_json(Path(run_dir) / CONFIG_FILE)
    value = data.get("hash") if data is not None else None
    return value if isinstance(value, str) and value else None


def read_state(run_dir: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """A slide's state record, or ``None`` when it is missing or unreadable."""
    return _read_json(Path(run_dir) / STATE_DIR / f"{name}.json")


def read_states(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable state record of ``run_dir``, in slide-name order."""
    return [s for n in slide_names(run_dir) if (s := read_state(run_dir, n)) is not None]


def output_sizes(outputs: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``{kind: {"size": bytes}}`` of the outputs a "done" state records (those that exist)."""
    sizes: dict[str, dict[str, int]] = {}
    for kind in OUTPUT_KINDS:
        path = outputs.get(kind)
        if path is not None and path.is_file():
            sizes[kind] = {"size": path.stat().st_size}
    return sizes


def slide_staleness(
    run_dir: str | os.PathLike[str],
    name: str,
    *,
    config_hash: str | None = None,
    state: dict[str, Any] | None = None,
) -> str | None:
    """Why slide ``name``'s outputs in ``run_dir`` are not current; ``None`` when they are.

    ``config_hash`` defaults to the one in ``run_dir/config.json``; with
    neither, the folder is not a run folder and every slide is current.
    """
    run = Path(run_dir)
    expected = config_hash if config_hash is not None else run_config_hash(run)
    if expected is None:
        return None
    if state is None:
        state = read_state(run, name)
    if state is None:
        return "no record of a completed extraction (state file missing or unreadable)"
    status = state.get("status")
    if status != "done":
        error = state.get("error")
        what = "failed" if status == "failed" else f"did not complete (state {status!r})"
        return f"its last extraction {what}" + (f": {error}" if error else "")
    recorded = state.get("config_hash")
    if recorded != expected:
        return f"extracted under config {recorded}, but the folder holds config {expected}"
    outputs = slide_outputs(run, name)
    for kind, meta in (state.get("outputs") or {}).items():
        path = outputs.get(kind)
        if path is None or not isinstance(meta, dict):
            continue
        try:
            size = path.stat().st_size
        except OSError:
            return f"its {kind} file {path.name} is missing"
        if meta.get("size") is not None and size != meta["size"]:
            return f"its {kind} file {path.name} changed since extraction ({size} bytes, recorded {meta['size']})"
    return None


def stale_slides(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{slide: reason}`` for every TFRecord in ``run_dir`` whose slide is not current.

    Empty for a folder that is not a run folder.
    """
    run = Path(run_dir)
    expected = run_config_hash(run)
    if expected is None:
        return {}
    out: dict[str, str] = {}
    for path in run_tfrecords(run):
        name = path.name[: -len(TFRECORD_SUFFIX)]
        reason = slide_staleness(run, name, config_hash=expected)
        if reason is not None:
            out[name] = reason
    return out


def store_slide_staleness(
    store: Store, run: str, name: str, state: dict[str, Any] | None, config_hash: str
) -> str | None:
    """Why slide ``name``'s outputs under run folder key ``run`` in ``store`` are not current.

    ``None`` when they are: a ``"done"`` state under ``config_hash`` whose
    recorded outputs (:data:`OUTPUT_KINDS`) are stored with the recorded size
    and, where it recorded one, ETag (one ``HEAD`` each).
    """
    if state is None:
        return "no record of a completed extraction (state object missing or unreadable)"
    if state.get("status") != "done":
        return f"its last extraction did not complete (state {state.get('status')!r})"
    if state.get("config_hash") != config_hash:
        return f"extracted under config {state.get('config_hash')}, but the run is {config_hash}"
    keys = slide_output_keys(run, name)
    recorded = state.get("outputs")
    if not isinstance(recorded, dict) or "coords" not in recorded:
        return "its state records no outputs"
    for kind in OUTPUT_KINDS:
        meta = recorded.get(kind)
        if not isinstance(meta, dict):
            continue
        try:
            stat = store.stat(keys[kind])
        except StorageNotFoundError:
            return f"its {kind} object {store.url_of(keys[kind])} is missing"
        if stat.size != meta.get("size") or ("etag" in meta and stat.etag != meta["etag"]):
            return f"its {kind} object {store.url_of(keys[kind])} changed since extraction"
    return None


def _object_json(store: Store, key: str) -> dict[str, Any] | None:
    """A small JSON object of a store, ``None`` when missing or unreadable as JSON."""
    try:
        data = json.loads(store.read(key))
    except (StorageNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _stale_in_store(
    folder: str, names: Iterable[str], storage_options: Mapping[str, Any] | None
) -> dict[str, str]:
    """``{slide: reason}`` of the stale ones of ``names`` in the run folder at URL ``folder``."""
    store, run = store_for(folder, storage_options)
    run = run.strip("/")
    try:
        config = _object_json(store, f"{run}/{CONFIG_FILE}")
    except StorageError as exc:  # e.g. credentials not given here: the reader will say
        log.info("cannot tell whether %s is a run folder (%s); its TFRecords count as current",
                 store.url_of(run), exc)  # fmt: skip
        return {}
    expected = config.get("hash") if config is not None else None
    if not isinstance(expected, str) or not expected:
        return {}  # not a run folder: every TFRecord is current
    out: dict[str, str] = {}
    for name in names:
        state = _object_json(store, f"{run}/{STATE_DIR}/{name}.json")
        reason = store_slide_staleness(store, run, name, state, expected)
        if reason is not None:
            out[name] = reason
    return out


def _stale_urls(urls: Iterable[str], storage_options: Mapping[str, Any] | None) -> dict[str, str]:
    """``{url: reason}`` for the TFRecord URLs of stale slides, judged per run folder."""
    folders: dict[str, dict[str, str]] = {}
    for url in urls:
        name = tfrecord_slide(url)
        if name is not None:
            folders.setdefault(url.rsplit("/", 1)[0], {})[name] = url
    stale: dict[str, str] = {}
    for folder, by_name in folders.items():
        for name, reason in _stale_in_store(folder, by_name, storage_options).items():
            stale[by_name[name]] = reason
    return stale


def stale_files(
    paths: Iterable[str | os.PathLike[str]], *, storage_options: Mapping[str, Any] | None = None
) -> dict[Path, str]:
    """``{path: reason}`` for those of ``paths`` that are TFRecords of stale slides.

    Each path is judged against the run folder it sits in (see the module
    doc); files outside run folders, and other files, are never stale. A URL
    (``s3://bucket/prefix/<label>/S.tfrecords``) is judged against the run
    folder in its store (its ``config.json`` and state objects, the outputs'
    sizes and ETags), read with ``storage_options``; it is keyed by
    ``Path(url)``, as the callers compare.
    """
    stale: dict[Path, str] = {}
    hashes: dict[Path, str | None] = {}
    items = list(paths)
    urls = [p for p in items if isinstance(p, str) and is_url(p)]
    for url, why in _stale_urls(urls, storage_options).items():
        stale[Path(url)] = why
    for p in items:
        if isinstance(p, str) and is_url(p):
            continue
        path = Path(p)
        folder = path.parent
        if folder not in hashes:
            hashes[folder] = run_config_hash(folder)
        expected = hashes[folder]
        name = tfrecord_slide(path)
        if expected is not None and name is not None:
            reason = slide_staleness(folder, name, config_hash=expected)
            if reason is not None:
                stale[path] = reason
    return stale


def current_tfrecords(
    paths: Sequence[str | os.PathLike[str]],
    *,
    warn: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path]:
    """``paths`` without the TFRecords of stale slides in run folders (see the module doc).

    Each one left out is logged at WARNING with its reason when ``warn``.
    URLs are judged in their store (:func:`stale_files`) and returned as
    ``Path(url)``, as the callers compare them.
    """
    stale = stale_files(paths, storage_options=storage_options)
    current = [path for path in map(Path, paths) if path not in stale]
    if warn:
        shown = {Path(p): os.fspath(p) for p in paths}
        for path, reason in stale.items():
            log.warning("leaving out %s: %s (outputs kept, not deleted)", shown[path], reason)
    return current
