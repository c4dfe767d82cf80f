"""``manifest.json`` of a run folder: the record count of each current slide's TFRecord.

The manifest lists only the slides whose outputs are current under the run's
config hash (:mod:`tilestream.runfolder`): a slide that failed, was
interrupted, was extracted under another config or changed since gets no
entry, nor does a slide while it is being extracted again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tilestream._util.atomic import write_json_atomic
from tilestream.runfolder import (
    MANIFEST_FILE,
    read_state,
    slide_names,
    slide_outputs,
    slide_staleness,
)

__all__ = ["MANIFEST_FILE", "RunManifest", "current_manifest", "manifest_entry"]


def manifest_entry(run_dir: Path, name: str, config_hash: str) -> dict[str, int] | None:
    """Slide ``name``'s manifest entry (``{"total": records}``), ``None`` unless it is current."""
    state = read_state(run_dir, name)
    if state is None or slide_staleness(run_dir, name, config_hash=config_hash, state=state):
        return None
    tiles = state.get("tiles")
    return {"total": tiles} if isinstance(tiles, int) else None


def current_manifest(
    run_dir: Path, config_hash: str, *, exclude: set[str] | frozenset[str] = frozenset()
) -> dict[str, dict[str, int]]:
    """The manifest of the slides in ``run_dir`` current under ``config_hash``, less ``exclude``.

    Keyed by TFRecord file name; slides without a TFRecord have no entry.
    """
    manifest: dict[str, dict[str, int]] = {}
    for name in slide_names(run_dir):
        tfrecord = slide_outputs(run_dir, name)["tfrecord"]
        if name in exclude or not tfrecord.is_file():
            continue
        entry = manifest_entry(run_dir, name, config_hash)
        if entry is not None:
            manifest[tfrecord.name] = entry
    return manifest


class RunManifest:
    """``manifest.json`` of a run folder under one config hash, rewritten (atomically) only when it changes."""

    def __init__(self, run_dir: Path, config_hash: str) -> None:
        self.run_dir = run_dir
        self.config_hash = config_hash
        self.path = run_dir / MANIFEST_FILE
        self.entries: dict[str, dict[str, int]] = {}
        try:
            self.on_disk: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.on_disk = None

    def rebuild(self, *, exclude: set[str] | frozenset[str] = frozenset()) -> None:
        """List the folder's current slides, less ``exclude`` (see :func:`current_manifest`)."""
        self.entries = current_manifest(self.run_dir, self.config_hash, exclude=exclude)
        self._write()

    def update(self, name: str, *, listed: bool = True) -> None:
        """Bring slide ``name``'s entry up to date; with ``listed`` false, drop it."""
        key = slide_outputs(self.run_dir, name)["tfrecord"].name
        entry = manifest_entry(self.run_dir, name, self.config_hash) if listed else None
        if entry is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = entry
        self._write()

    def _write(self) -> None:
        content = dict(sorted(self.entries.items()))
        if content != self.on_disk:
            write_json_atomic(self.path, content)
            self.on_disk = content
