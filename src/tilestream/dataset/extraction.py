"""Slides to TFRecords for a :class:`~tilestream.dataset.Dataset` (Slideflow's ``Dataset.extract_tiles``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tilestream.errors import ConfigError
from tilestream.runfolder import run_folder_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tilestream.dataset.kwargs import ExtractTilesKwargs
    from tilestream.extract.run import ExtractionRun

__all__ = ["extract_dataset_slides"]


def extract_dataset_slides(
    slide_sources: Sequence[Path],
    tfrecord_sources: Sequence[Path],
    tile_px: int,
    tile_um: str,
    wanted: Collection[str] | None = None,
    **kwargs: Unpack[ExtractTilesKwargs],
) -> ExtractionRun:
    """Extract the slides found in ``slide_sources`` (those named in ``wanted``, when given).

    The run folder is ``<root>/<tile_px>px_<tile_um>``, ``root`` the first of
    ``tfrecord_sources`` (or its parent, when it is that run folder already).

    Raises
    ------
    ConfigError
        No slide or TFRecord folder, or no slide file among ``wanted``.
    """
    from tilestream.extract import discover_slides, extract_slides

    if not slide_sources:
        raise ConfigError("extract_tiles needs a dataset with slides=")
    if not tfrecord_sources:
        raise ConfigError("extract_tiles needs a dataset with tfrecords= (the output folder)")
    root = tfrecord_sources[0]
    if root.name == run_folder_name(tile_px, tile_um):
        root = root.parent
    tasks = discover_slides(slide_sources)
    if wanted is not None:
        tasks = [t for t in tasks if t.name in wanted]
        if not tasks:
            raise ConfigError("no slide files match the annotated slides")
    return extract_slides(tasks, root, tile_px=tile_px, tile_um=tile_um, **kwargs)
