"""The slide package's module layout: old import paths still work, no dependency on testing."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_reading_slides_never_imports_the_testing_helpers() -> None:
    code = (
        "import sys, tilestream.slide, tilestream.slide.magnification, tilestream.slide.tiling; "
        "print(sorted(m for m in sys.modules if m.startswith('tilestream.testing')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        (
            "tilestream.slide.base",
            "tilestream.slide.slide",
            ["Slide", "open_slide", "THUMBNAIL_WHOLE_BYTES"],
        ),
        ("tilestream.slide.base", "tilestream.slide.backends.base", ["SlideBackend"]),
        (
            "tilestream.slide.base",
            "tilestream.slide.registry",
            ["available_backends", "backend_class", "register_backend", "unregister_backend"],
        ),
        ("tilestream.slide.base", "tilestream.slide.opening", ["detect_format"]),
        (
            "tilestream.slide.backend",
            "tilestream.slide.tilecache",
            ["DEFAULT_CACHE_BYTES", "MAX_AUTO_CACHE_BYTES"],
        ),
        ("tilestream.slide.backend", "tilestream.slide.registry", ["available_backends"]),
        (
            "tilestream.slide.synthetic",
            "tilestream.testing.synthetic",
            ["make_synthetic_slide", "SyntheticSlide", "tissue_patches_from_slide"],
        ),
        ("tilestream.slide.magnification", "tilestream.slide.regions", ["region", "read_scaled"]),
        ("tilestream.slide.magnification", "tilestream.slide.scales", ["metadata"]),
        ("tilestream.slide.fastpath", "tilestream.slide.tilecache", ["TileCache"]),
        ("tilestream.slide.fastpath", "tilestream.slide.tile_codecs", ["merge_jpeg_tables"]),
    ],
)
def test_old_module_paths_are_aliases(old: str, new: str, names: list[str]) -> None:
    import importlib

    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name)
        assert name in old_module.__all__


def test_slide_methods_have_the_functions_signatures() -> None:
    import inspect

    from tilestream.slide import Slide, regions, scales, tiling

    for method, function in [
        (Slide.region, regions.region),
        (Slide.convert_region_scale, regions.convert_region_scale),
        (Slide.region_at_another_scale, regions.region_at_another_scale),
        (Slide.level_for_magnification, scales.level_for_magnification),
        (Slide.magnification_for_level, scales.magnification_for_level),
        (Slide.tiles, tiling.tiles),
        (Slide.single_tile, tiling.single_tile),
    ]:
        got = list(inspect.signature(method).parameters.values())[1:]
        want = list(inspect.signature(function).parameters.values())[1:]
        assert [(p.name, p.kind, p.default) for p in got] == [
            (p.name, p.kind, p.default) for p in want
        ], method.__name__
