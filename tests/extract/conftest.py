"""Fixtures for extraction tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cmu_slide(slides_dir: Path) -> Path:
    """The CMU-1-Small-Region Aperio slide (JPEG tiles, 0.499 um/px)."""
    path = slides_dir / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.fail(f"{path} is missing from the shared test data")
    return path
