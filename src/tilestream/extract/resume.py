"""Whether a slide is already extracted: what lets a rerun skip it.

A slide is complete when its state says ``"done"`` under the run's config
hash (current in the sense of :func:`tilestream.runfolder.slide_staleness`),
every output is there with the size (and, for the coordinates, the SHA-256)
the state recorded, and the slide file still has the fingerprint the state
recorded (:mod:`tilestream.extract.fingerprint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tilestream.extract.config import ExtractConfig
from tilestream.extract.fingerprint import file_sha256, fingerprint_matches
from tilestream.extract.task import SlideResult, SlideTask
from tilestream.runfolder import read_state, slide_outputs, slide_staleness

__all__ = ["is_complete", "outputs_match"]


def outputs_match(state: dict[str, Any], outputs: dict[str, Path]) -> bool:
    """Every output exists and matches the sizes and digests its "done" state recorded."""
    if not all(p.exists() for p in outputs.values()):
        return False
    recorded = state.get("outputs")
    if not isinstance(recorded, dict) or "coords" not in recorded:
        return False
    for kind, meta in recorded.items():
        path = outputs.get(kind)
        if path is None or not isinstance(meta, dict):
            return False
        try:
            if path.stat().st_size != meta.get("size"):
                return False
            if "sha256" in meta and file_sha256(path) != meta["sha256"]:
                return False
        except OSError:
            return False
    return True


def is_complete(
    run_dir: Path, task: SlideTask, config: ExtractConfig, *, to_images: bool = False
) -> SlideResult | None:
    """The stored result (status ``"skipped"``) if ``task`` is complete in ``run_dir`` under ``config``.

    See the module doc for what complete means.
    """
    outputs = slide_outputs(run_dir, task.name, to_images=to_images)
    state = read_state(run_dir, task.name)
    if state is None:
        return None
    if slide_staleness(run_dir, task.name, config_hash=config.hash(), state=state) is not None:
        return None
    if not outputs_match(state, outputs):
        return None
    if not fingerprint_matches(
        state.get("source"), task.path, storage_options=task.storage_options
    ):
        return None
    result = SlideResult.from_dict(state)
    result.status = "skipped"
    return result
