"""JPEG quality estimated from quantisation tables: Pillow's encodings and real scanners'."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tilestream.extract.quality import estimate_jpeg_quality, ijg_table, jpeg_quant_tables
from tilestream.slide import open_slide

_RNG = np.random.default_rng(0)
_RGB = Image.fromarray(_RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


@settings(max_examples=100, deadline=None)
@given(quality=st.integers(1, 100), gray=st.booleans())
def test_pillow_quality_is_recovered(quality: int, gray: bool) -> None:
    image = _RGB.convert("L") if gray else _RGB
    assert estimate_jpeg_quality(_jpeg(image, quality=quality)) == quality


def test_nonstandard_tables_give_none() -> None:
    flat = [[40] * 64, [40] * 64]
    data = _jpeg(_RGB, qtables=flat)
    assert jpeg_quant_tables(data)[0].tolist() == [40] * 64
    assert estimate_jpeg_quality(data) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_estimate_quietly(data: bytes) -> None:
    result = estimate_jpeg_quality(b"\xff\xd8" + data)
    assert result is None or 1 <= result <= 100


def test_truncated_jpeg_gives_none() -> None:
    data = _jpeg(_RGB, quality=80)
    start = data.index(b"\xff\xdb")
    assert estimate_jpeg_quality(data[: start + 20]) is None


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "openslide-python-small.svs"])
def test_scanner_tiles_match_the_quality_aperio_records(slides_dir: Path, name: str) -> None:
    path = slides_dir / name
    if not path.exists():
        pytest.skip(f"{name} not in the test data")
    with tifffile.TiffFile(path) as tif:
        recorded = int(re.search(r"Q=(\d+)", tif.pages[0].description).group(1))  # type: ignore[union-attr]
    with open_slide(path) as slide:
        data = slide.read_stored_tile_bytes(0, 0, 0)
    assert estimate_jpeg_quality(data) == recorded
    assert jpeg_quant_tables(data)[0].tolist() == ijg_table(0, recorded).tolist()
