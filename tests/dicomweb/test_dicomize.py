"""Slides converted with ``OrthancWSIDicomizer`` by :func:`tilestream.testing.orthanc.dicomize`.

The converted files must open locally with wsidicom and with OpenSlide (through
:func:`tilestream.slide.open_slide` on any file of the series), with the
source's dimensions and microns per pixel. CMU-1-Small-Region's JPEG tiles are
copied, so its pixels equal the SVS's and each DICOM frame holds the SVS tile's
JPEG scan byte for byte; the JPEG 2000 TCGA slide is decoded through OpenSlide
and re-encoded as JPEG (quality 90), so it is compared within a tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames

from tilestream.errors import UnsupportedSlideError
from tilestream.slide import open_slide
from tilestream.testing.orthanc import (
    COPIED_IMAGE_TYPE,
    REENCODED_IMAGE_TYPE,
    OrthancError,
    dicomize,
    dicomize_readable,
    dicomizer_binary,
)

wsidicom = pytest.importorskip("wsidicom")

CMU_SIZE = (2220, 2967)
#: The nominal mpp the fixture gives the TCGA slide (it states none).
TCGA_NOMINAL_MPP = 0.5
TCGA_LEVELS = ((4443, 3567), (2222, 1784), (1111, 892), (556, 446), (278, 223))
#: Re-encoding the TCGA slide's JPEG 2000 tiles as JPEG (quality 90) measured 37.1 dB here.
TCGA_MIN_PSNR = 35.0


def _level0(folder: Path) -> Path:
    return sorted(folder.glob("*.dcm"))[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_one_file_per_level_with_a_volume_image_type(dicomized: dict[str, Path]) -> None:
    expected = {"cmu-small-region": (1, COPIED_IMAGE_TYPE), "tcga-jp2k": (5, REENCODED_IMAGE_TYPE)}
    for key, (count, image_type) in expected.items():
        files = sorted(dicomized[key].iterdir())
        assert len(files) == count, key
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert "\\".join(ds.ImageType) == image_type
            assert "ConcatenationUID" not in ds  # OpenSlide refuses a one-instance concatenation


def test_cmu_opens_with_wsidicom_with_its_size_tiles_and_mpp(dicomized: dict[str, Path]) -> None:
    with wsidicom.WsiDicom.open(dicomized["cmu-small-region"]) as wsi:
        assert len(wsi.levels) == 1
        level = wsi.levels[0]
        assert (level.size.width, level.size.height) == CMU_SIZE
        assert (level.tile_size.width, level.tile_size.height) == (240, 240)
        assert level.mpp.width == pytest.approx(0.499, rel=1e-6)
        assert level.mpp.height == pytest.approx(0.499, rel=1e-6)


def test_cmu_opens_with_openslide_with_its_size_and_mpp(dicomized: dict[str, Path]) -> None:
    with open_slide(_level0(dicomized["cmu-small-region"])) as slide:
        assert slide.backend == "openslide"
        assert slide.dimensions == CMU_SIZE
        assert slide.level_count == 1
        assert slide.mpp == pytest.approx((0.499, 0.499), rel=1e-6)


def test_cmu_pixels_equal_the_svs(dicomized: dict[str, Path], cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as svs:
        expected = np.asarray(svs.read_region((0, 0), 0, CMU_SIZE).convert("RGB"))
    with open_slide(_level0(dicomized["cmu-small-region"])) as dcm:
        through_openslide = np.asarray(dcm.read_region((0, 0), 0, CMU_SIZE).convert("RGB"))
    with wsidicom.WsiDicom.open(dicomized["cmu-small-region"]) as wsi:
        through_wsidicom = np.asarray(wsi.read_region((0, 0), 0, CMU_SIZE).convert("RGB"))
    assert np.array_equal(through_openslide, expected)
    assert np.array_equal(through_wsidicom, expected)


def _scan(jpeg: bytes) -> bytes:
    """The entropy-coded data of a JPEG (after the SOS header), without frame padding."""
    sos = jpeg.index(b"\xff\xda")
    header = int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    return jpeg[sos + 2 + header :].rstrip(b"\x00")


def test_cmu_frames_hold_the_svs_tiles_jpeg_scans(
    dicomized: dict[str, Path], cmu_slide: Path
) -> None:
    ds = pydicom.dcmread(_level0(dicomized["cmu-small-region"]))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    with tifffile.TiffFile(cmu_slide) as tif:
        page = tif.pages.first
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
        across = -(-page.imagewidth // page.tilewidth)
    with cmu_slide.open("rb") as f:
        tiles = [f.read(n) for o, n in spans if f.seek(o) == o]
    assert len(frames) == len(tiles) == 130
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        position = group.PlanePositionSlideSequence[0]
        col = (int(position.ColumnPositionInTotalImagePixelMatrix) - 1) // 240
        row = (int(position.RowPositionInTotalImagePixelMatrix) - 1) // 240
        assert _scan(frame) == _scan(tiles[row * across + col]), (col, row)


def test_tcga_jp2k_opens_with_wsidicom_and_openslide(dicomized: dict[str, Path]) -> None:
    with wsidicom.WsiDicom.open(dicomized["tcga-jp2k"]) as wsi:
        sizes = tuple((lv.size.width, lv.size.height) for lv in wsi.levels)
        assert sizes == TCGA_LEVELS
        assert {(lv.tile_size.width, lv.tile_size.height) for lv in wsi.levels} == {(256, 256)}
        assert wsi.levels[0].mpp.width == pytest.approx(TCGA_NOMINAL_MPP, rel=1e-6)
        assert wsi.levels[0].mpp.height == pytest.approx(TCGA_NOMINAL_MPP, rel=1e-6)
    with open_slide(_level0(dicomized["tcga-jp2k"])) as slide:
        assert slide.backend == "openslide"
        assert slide.level_dimensions == TCGA_LEVELS
        assert slide.mpp == pytest.approx((TCGA_NOMINAL_MPP, TCGA_NOMINAL_MPP), rel=1e-6)


def test_tcga_jp2k_pixels_within_the_reencoding_tolerance(
    dicomized: dict[str, Path], slides_dir: Path
) -> None:
    size = TCGA_LEVELS[0]
    with open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as svs:
        expected = np.asarray(svs.read_region((0, 0), 0, size).convert("RGB"))
    with open_slide(_level0(dicomized["tcga-jp2k"])) as dcm:
        through_openslide = np.asarray(dcm.read_region((0, 0), 0, size).convert("RGB"))
    with wsidicom.WsiDicom.open(dicomized["tcga-jp2k"]) as wsi:
        through_wsidicom = np.asarray(wsi.read_region((0, 0), 0, size).convert("RGB"))
    assert _psnr(through_openslide, expected) >= TCGA_MIN_PSNR
    # The same JPEG frames through two decoders: at most an IDCT rounding apart.
    diff = np.abs(through_openslide.astype(int) - through_wsidicom.astype(int))
    assert int(diff.max()) <= 2


def test_the_dicomizers_default_output_is_not_read(
    tmp_path: Path, cmu_slide: Path, dicomized: dict[str, Path]
) -> None:
    """Why the recipe is needed: the dicomizer's own output has no ImageType, a concatenation
    and a 15 mm specimen's pixel spacing; wsidicom finds no level, OpenSlide no flavour."""
    folder = tmp_path / "default"
    dicomize(cmu_slide, folder)
    ds = pydicom.dcmread(_level0(folder), stop_before_pixels=True)
    assert "ImageType" not in ds
    assert "ConcatenationUID" in ds
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert float(spacing[0]) == pytest.approx(15 / CMU_SIZE[1])  # a 15 mm specimen, not 0.499 um
    with pytest.raises(wsidicom.errors.WsiDicomNotFoundError):
        wsidicom.WsiDicom.open(folder)
    with pytest.raises(UnsupportedSlideError, match="image flavor"):
        open_slide(_level0(folder), backend="openslide")


def test_a_slide_without_mpp_needs_one(tmp_path: Path, slides_dir: Path) -> None:
    if dicomizer_binary() is None:
        pytest.skip("OrthancWSIDicomizer is not installed")
    slide = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(OrthancError, match="states no microns per pixel") as info:
        dicomize_readable(slide, tmp_path / "out")
    assert str(slide) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_failing_conversion_names_the_slide(tmp_path: Path, slides_dir: Path) -> None:
    if dicomizer_binary() is None:
        pytest.skip("OrthancWSIDicomizer is not installed")
    slide = slides_dir / "openslide-python-boxes.tiff"  # deflate tiles, 72 dpi: mpp given
    with pytest.raises(OrthancError, match="OrthancWSIDicomizer failed on") as info:
        dicomize_readable(slide, tmp_path / "out", mpp=0.5, options=["--compression=nonsense"])
    assert str(slide) in str(info.value)
