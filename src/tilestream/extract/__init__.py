"""Extraction: slides to per-slide TFRecords with tissue detection, filters, ROIs and previews.

Examples
--------
>>> import tempfile
>>> from tilestream.extract import demo_slide_path, extract_slides
>>> run = extract_slides([demo_slide_path()], tempfile.mkdtemp(), tile_px=128, tile_um=256, workers=1)
>>> run.done, run.failed
(1, [])
"""

from __future__ import annotations

from tilestream.extract.config import ExtractConfig, TileSize, parse_tile_um
from tilestream.extract.demo import DemoResult, demo_slide_path, run_demo
from tilestream.extract.engine import SlideResult, SlideTask
from tilestream.extract.grid import Grid, plan_grid
from tilestream.extract.roi import ROI, load_rois
from tilestream.extract.run import ExtractionRun, RunProgress, extract_slides, extract_tiles
from tilestream.extract.sources import SLIDE_EXTENSIONS, discover_slides, slide_name

__all__ = [
    "ROI",
    "SLIDE_EXTENSIONS",
    "DemoResult",
    "ExtractConfig",
    "ExtractionRun",
    "Grid",
    "RunProgress",
    "SlideResult",
    "SlideTask",
    "TileSize",
    "demo_slide_path",
    "discover_slides",
    "extract_slides",
    "extract_tiles",
    "load_rois",
    "parse_tile_um",
    "plan_grid",
    "run_demo",
    "slide_name",
]
