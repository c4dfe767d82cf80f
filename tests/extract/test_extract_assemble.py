"""Tiles assembled losslessly from the stored JPEG tiles' MCUs (the DCT-domain mosaic).

At 256 px / 128 um on an Aperio 20x slide (240 px stored tiles, 0.499 um/px) the
snapped grid reads 256 native pixels on a 256 px stride: every output tile is a
mosaic of whole MCUs of up to four stored tiles. Those tiles are assembled from
the stored coefficients (no decode, no re-encode): their pixels are the
scanner's, bit for bit.

Run again with the slides read from SeaweedFS (``storage``): the same tiles assembled,
the same outputs byte for byte (``tests/extract/conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _remote import Remote, storage_kinds
from conftest import missing
from tilestream.extract import extract_tiles
from tilestream.slide import jpeg_mosaic, open_slide
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.tfrecord import TFRecord, decode_image


@pytest.fixture(autouse=True)
def _needs_extension() -> None:
    if not jpeg_mosaic.available():
        missing("the compiled extension tilestream.slide._jpegdct is not built")


@pytest.fixture(scope="module")
def aperio_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("assemble") / "aperio-20x.svs"
    make_synthetic_slide(
        path, width=2400, height=1920, tile_size=240, mpp=0.499, tissue_fraction=0.6, seed=3
    )
    return path


def _tiles(out: Path) -> list[tuple[int, int, bytes]]:
    (path,) = out.rglob("*.tfrecords")
    return [(int(r["loc_x"]), int(r["loc_y"]), bytes(r["image_raw"])) for r in TFRecord(path)]


def test_tiles_are_assembled_with_the_scanners_pixels(
    aperio_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(aperio_slide)
    result = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, threads=2, **storage.kw)
    assert result.status == "done" and result.tiles > 10
    assert result.tile_grid is not None and result.tile_grid["read_px"] == 256
    assert result.assembled == result.passthrough == result.tiles
    assert result.timings["assemble"] > 0 and result.timings.get("encode", 0) == 0
    report = (tmp_path / "256px_128um" / "report.html").read_text(encoding="utf-8")
    assert f"{result.tiles} assembled losslessly from several stored tiles" in report
    summary = json.loads((tmp_path / "256px_128um" / "summary.json").read_text(encoding="utf-8"))
    assert summary["assembled"] == summary["passthrough"] == result.tiles
    with open_slide(aperio_slide) as slide:
        for cx, cy, data in _tiles(tmp_path):
            ref = slide.read_region((cx - 128, cy - 128), 0, (256, 256), as_array=True)
            assert np.array_equal(decode_image(data), ref), (cx, cy)


def test_the_real_aperio_slide_is_assembled_bit_for_bit(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    result = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)
    assert result.tiles > 0 and result.assembled == result.tiles
    with open_slide(cmu_slide) as slide:
        for cx, cy, data in _tiles(tmp_path):
            ref = slide.read_region((cx - 128, cy - 128), 0, (256, 256), as_array=True)
            assert np.array_equal(decode_image(data), ref), (cx, cy)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_without_passthrough_every_tile_is_reencoded(
    aperio_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(aperio_slide)
    lossless = extract_tiles(slide, tmp_path / "a", tile_px=256, tile_um=128, **storage.kw)
    encoded = extract_tiles(
        slide, tmp_path / "b", tile_px=256, tile_um=128, jpeg_passthrough=False, **storage.kw
    )
    assert encoded.assembled == encoded.passthrough == 0
    assert encoded.tiles == lossless.tiles
    a, b = _tiles(tmp_path / "a"), _tiles(tmp_path / "b")
    assert [t[:2] for t in a] == [t[:2] for t in b]  # the same grid, the same tiles kept
    assert any(x[2] != y[2] for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"tile_px": 299, "tile_um": 302}, "resized"),
        ({"tile_px": 256, "tile_um": 128, "grid": "exact"}, "257 px resized to 256"),
        ({"tile_px": 256, "tile_um": 128, "img_format": "png"}, "PNG output"),
        ({"tile_px": 256, "tile_um": 128, "blur_threshold": 50.0}, "blur scores need pixels"),
    ],
)
def test_no_assembly_where_pixels_must_change(
    aperio_slide: Path, tmp_path: Path, options: dict[str, object], why: str
) -> None:
    result = extract_tiles(aperio_slide, tmp_path, **options)  # type: ignore[arg-type]
    assert result.status == "done" and result.tiles > 0, why
    assert result.assembled == 0, why


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_an_off_grid_origin_is_reencoded(
    aperio_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    # a random origin off the 8 px MCU grid: the tiles cannot be cut from whole MCUs
    slide = storage.name(aperio_slide)
    result = extract_tiles(
        slide, tmp_path, tile_px=256, tile_um=128, randomize_origin=True, seed=5, **storage.kw
    )
    assert result.status == "done"
    assert result.assembled == 0 or result.assembled == result.tiles


def _corrupt_one_tile(src: Path, dst: Path) -> None:
    """Copy ``src`` with garbage in the middle of one stored level-0 tile's entropy data."""
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        i = int(np.argmax(counts))  # a tissue tile (the largest), surely kept
        start = offsets[i] + counts[i] // 2
    data[start : start + 64] = b"\xff\xd9" * 32  # EOI markers inside the scan
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_a_corrupt_stored_tile_fails_as_it_does_without_assembly(
    aperio_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    broken = tmp_path / "broken.svs"
    _corrupt_one_tile(aperio_slide, broken)
    slide = storage.name(broken)
    results = [
        extract_tiles(slide, tmp_path / name, tile_px=256, tile_um=128, **opts, **storage.kw)  # type: ignore[arg-type]
        for name, opts in (("a", {}), ("b", {"jpeg_passthrough": False}))
    ]
    lossless, encoded = results
    assert (lossless.status, lossless.error_type) == (encoded.status, encoded.error_type)
    if lossless.status == "failed":
        assert "broken.svs" in str(lossless.error) or lossless.error
    else:  # libjpeg-turbo decodes past a damaged scan with a warning: the same tiles kept
        assert lossless.tiles == encoded.tiles
        # the tiles over the damaged one went the decoding path, the others were assembled
        assert 0 < lossless.assembled < lossless.tiles
