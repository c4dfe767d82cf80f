"""Stored JPEG tiles copied into TFRecords without re-encoding, where the grid aligns.

Run again with the slide read from SeaweedFS (``storage``): the same tiles copied, the
same outputs byte for byte (``tests/extract/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from _remote import Remote, storage_kinds
from tilestream.extract import extract_tiles
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.tfrecord import TFRecord, decode_image


@pytest.fixture(scope="module")
def aligned_slide(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """A generated Aperio-style slide with 256 px JPEG tiles at 0.5 um/px."""
    path = tmp_path_factory.mktemp("synthetic") / "aligned.svs"
    make_synthetic_slide(
        path, width=3072, height=2048, tile_size=256, mpp=0.5, source_tiles=cmu_slide, seed=1
    )
    return path


def test_passthrough_bytes_decode_to_openslide_pixels(
    aligned_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(aligned_slide)
    r = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)
    assert r.status == "done", r.error
    assert r.passthrough == r.tiles > 0
    osr = openslide.OpenSlide(str(aligned_slide))
    with TFRecord(tmp_path / "256px_128um" / "aligned.tfrecords") as tfr:
        for i in range(len(tfr)):
            rec = tfr[i]
            x, y = int(rec["loc_x"]) - 128, int(rec["loc_y"]) - 128
            assert x % 256 == 0 and y % 256 == 0
            ref = np.asarray(osr.read_region((x, y), 0, (256, 256)).convert("RGB"), dtype=np.int16)
            got = decode_image(rec["image_raw"]).astype(np.int16)
            assert np.abs(got - ref).max() <= 1, f"tile at {x},{y}"
    osr.close()


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_passthrough_off_or_misaligned_reencodes(
    aligned_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide, kw = storage.name(aligned_slide), storage.kw
    off = extract_tiles(
        slide, tmp_path / "off", tile_px=256, tile_um=128, jpeg_passthrough=False, **kw
    )
    assert off.status == "done" and off.passthrough == 0
    shifted = extract_tiles(
        slide, tmp_path / "shift", tile_px=256, tile_um=128, randomize_origin=True, seed=5, **kw
    )
    # off the stored tiles: nothing copied whole (tiles on the 8 px MCU grid are assembled
    # from the stored tiles' MCUs instead: tests/extract/test_extract_assemble.py)
    assert shifted.status == "done" and shifted.passthrough == shifted.assembled
    half = extract_tiles(slide, tmp_path / "half", tile_px=256, tile_um=128, stride_div=2, **kw)
    assert half.passthrough == half.assembled  # a half-tile stride: no stored tile is a tile
    assert half.assembled in (0, half.tiles)
    on = extract_tiles(slide, tmp_path / "on", tile_px=256, tile_um=128, **kw)
    assert on.tiles == off.tiles  # same selection either way
