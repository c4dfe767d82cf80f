"""DICOMweb series read as slides through a real Orthanc, against the same DICOM files read locally.

Every series is compared whole-level with OpenSlide (``open_slide`` on the
local file) and with wsidicom on the files; frame batching is proven by
counting requests through a forwarding proxy. The error cases are in
``test_dicomweb_errors.py``.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openslide
import pytest

from dicomweb.dicomweb_testing import (  # noqa: F401 - the *_fixture fixtures
    CMU_MPP,
    CountingProxy,
    frame_numbers,
    new_series,
    require_module,
    require_wsidicom,
    series_fixture,
    server_fixture,
    upload,
    whole_level,
)
from tilestream.errors import SlideError
from tilestream.slide import open_slide
from tilestream.slide.dicomweb import DicomWebOptions, list_series

pytestmark = pytest.mark.testdata
wsidicom = require_wsidicom()
pydicom = require_module("pydicom")
encapsulate = require_module("pydicom.encaps").encapsulate
generate_frames = require_module("pydicom.encaps").generate_frames
generate_uid = require_module("pydicom.uid").generate_uid


@pytest.mark.parametrize("name", ["openslide-boxes", "cmu-full", "cmu-sparse"])
def test_series_equals_openslide_and_wsidicom_on_the_files(series, name) -> None:
    stored = series[name]
    first = sorted(stored.folder.glob("*.dcm"))[0]  # OpenSlide opens the series from any file
    with open_slide(stored.url) as remote, open_slide(first) as local:
        assert remote.backend == "dicomweb" and local.backend == "openslide"
        assert remote.level_dimensions == local.level_dimensions
        assert remote.level_downsamples == local.level_downsamples
        assert remote.mpp == pytest.approx(local.mpp, rel=1e-9)
        assert remote.objective_power == local.objective_power
        assert remote.vendor == local.vendor == "dicom"
        assert remote.tile_size == local.tile_size
        # OpenSlide hands out the profile re-serialised by lcms; compare with the file's bytes
        icc = pydicom.dcmread(first, stop_before_pixels=True).OpticalPathSequence[0].ICCProfile
        assert remote.color_profile == icc
        assert remote.properties["openslide.icc-size"] == local.properties["openslide.icc-size"]
        assert set(remote.associated_images) == set(local.associated_images)
        for assoc in remote.associated_images:
            np.testing.assert_array_equal(
                np.asarray(remote.associated_images[assoc]),
                np.asarray(local.associated_images[assoc].convert("RGB")),
            )
        wsi = wsidicom.WsiDicom.open(stored.folder)
        try:
            for level in range(remote.level_count):
                got = whole_level(remote, level)
                np.testing.assert_array_equal(got, whole_level(local, level), err_msg=f"L{level}")
                w, h = remote.level_dimensions[level]
                theirs = np.asarray(wsi.read_region((0, 0), level, (w, h)).convert("RGB"))
                np.testing.assert_array_equal(got, theirs, err_msg=f"wsidicom L{level}")
        finally:
            wsi.close()


def test_cmu_pyramid_metadata(series) -> None:
    with open_slide(series["cmu-full"].url) as slide:
        assert slide.level_dimensions == ((2220, 2967), (1110, 1484), (555, 742))
        assert slide.mpp == pytest.approx((CMU_MPP, CMU_MPP), rel=1e-6)
        props = slide.properties
        assert props["openslide.level-count"] == "3"
        assert props["openslide.level[0].tile-width"] == "240"
        assert props["openslide.mpp-x"] == props["openslide.mpp-y"]


def test_jpeg_ls_series_equals_wsidicom_on_the_file(series) -> None:
    """OpenSlide cannot read JPEG-LS; the frames come as stored (not transcoded to JPEG)."""
    stored = series["highdicom-jpegls"]
    with open_slide(stored.url) as remote:
        wsi = wsidicom.WsiDicom.open(stored.folder)
        try:
            w, h = remote.dimensions
            theirs = np.asarray(wsi.read_region((0, 0), 0, (w, h)).convert("RGB"))
        finally:
            wsi.close()
        np.testing.assert_array_equal(whole_level(remote, 0), theirs)
        assert remote.level_count == 1 and remote.mpp is not None
        assert remote.stored_tile_grid(0) is None  # not JPEG baseline: no pass-through


def test_stored_tiles_are_the_frames_in_the_file(series) -> None:
    stored = series["cmu-full"]
    with open_slide(stored.url) as slide:
        assert slide.stored_tile_grid(0) == (240, 240)
        ds = pydicom.dcmread(sorted(stored.folder.glob("*.dcm"))[0])
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        cols = -(-ds.TotalPixelMatrixColumns // ds.Columns)
        for col, row in [(0, 0), (3, 2), (cols - 1, 12)]:
            data = slide.read_stored_tile_bytes(0, col, row)
            assert data == frames[row * cols + col]
            assert data[:2] == b"\xff\xd8"


def test_rgb_jpeg_frames_get_an_adobe_marker(series) -> None:
    """boxes stores RGB-coded JPEG frames: the pass-through tile says so (no YCbCr assumed)."""
    with open_slide(series["openslide-boxes"].url) as slide:
        data = slide.read_stored_tile_bytes(0, 0, 0)
        assert b"Adobe" in data[:64]
        with pytest.raises(IndexError, match="outside"):
            slide.read_stored_tile_bytes(0, 1, 0)


@pytest.mark.parametrize(("per_request", "per_row"), [(64, 1), (4, 3)])
def test_a_row_of_tiles_is_fetched_in_batched_requests(series, per_request, per_row) -> None:
    """Reading level 0 in 256 px tiles, row-major: each stored frame fetched once, a row at a time."""
    proxy = CountingProxy(series["cmu-full"].url.removeprefix("dicomweb+"))
    try:
        url = proxy.url(series["cmu-full"].url)
        options = DicomWebOptions(frames_per_request=per_request, concurrency=2)
        with open_slide(url, dicomweb=options) as slide:
            assert not proxy.frame_requests()  # opening reads metadata only
            assert len(proxy.paths) <= 8  # QIDO, instances, 3 x metadata, base metadata
            proxy.reset()
            w, h = slide.dimensions
            for y in range(0, h, 256):
                for x in range(0, w, 256):
                    slide.read_region((x, y), 0, (256, 256), as_array=True)
            requests = proxy.frame_requests()
        numbers = frame_numbers(requests)
        assert sorted(numbers) == list(range(1, 131))  # 10 x 13 frames, each fetched once
        # 13 stored rows of 10 frames; a read spanning two rows fetches both at once
        assert len(requests) <= 13 * per_row
        assert all(len(frame_numbers([r])) <= per_request for r in requests)
    finally:
        proxy.close()


def test_the_frame_cache_serves_repeated_reads(series) -> None:
    proxy = CountingProxy(series["cmu-full"].url.removeprefix("dicomweb+"))
    try:
        with open_slide(proxy.url(series["cmu-full"].url), cache_bytes=0) as slide:
            proxy.reset()
            first = slide.read_region((100, 100), 1, (300, 300), as_array=True)
            sent = len(proxy.frame_requests())
            again = slide.read_region((100, 100), 1, (300, 300), as_array=True)
            assert len(proxy.frame_requests()) == sent == 1
            np.testing.assert_array_equal(first, again)
            assert slide.cache_info()["frame_requests"] == 1
    finally:
        proxy.close()


def test_a_sparse_series_with_a_tile_missing_reads_white_there(server, series, tmp_path) -> None:
    level2 = sorted(series["cmu-sparse"].folder.glob("*.dcm"))[2]
    ds = pydicom.dcmread(level2)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    items = list(ds.PerFrameFunctionalGroupsSequence)
    position = items[4].PlanePositionSlideSequence[0]
    col = (int(position.ColumnPositionInTotalImagePixelMatrix) - 1) // 240
    row = (int(position.RowPositionInTotalImagePixelMatrix) - 1) // 240
    del frames[4], items[4]
    ds.PixelData = encapsulate(frames)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.NumberOfFrames = len(frames)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    new_series(ds)
    (tmp_path / "sparse").mkdir()
    ds.save_as(tmp_path / "sparse" / "level.dcm")
    stored = upload(server, tmp_path / "sparse")
    with open_slide(stored.url) as slide, open_slide(tmp_path / "sparse" / "level.dcm") as local:
        got = whole_level(slide, 0)
        np.testing.assert_array_equal(got, whole_level(local, 0))
        assert (got[row * 240 : row * 240 + 240, col * 240 : col * 240 + 240] == 255).all()
        assert (got != 255).any()


def test_list_series_finds_the_whole_slide_series(server, series) -> None:
    found = {s.series_uid: s for s in list_series(server.dicomweb_url)}
    full = series["cmu-full"].url.rsplit("/series/", 1)[1]
    info = found[full]
    assert info.url == series["cmu-full"].url
    assert info.levels == ((2220, 2967), (1110, 1484), (555, 742))
    assert info.dimensions == (2220, 2967)
    assert info.mpp == pytest.approx((CMU_MPP, CMU_MPP))
    assert info.instances == 3
    boxes = found[series["openslide-boxes"].url.rsplit("/series/", 1)[1]]
    assert boxes.associated == ("thumbnail",) and boxes.levels == ((16, 16),)
    in_study = list_series(server.dicomweb_url, study=info.study_uid)
    assert [s.series_uid for s in in_study] == [full]
    with open_slide(info.url) as slide:
        assert slide.dimensions == info.dimensions


def test_the_icc_profile_through_a_proxy(series) -> None:
    """Orthanc names its bulk data by its own address; the profile still comes from our server."""
    stored = series["openslide-boxes"]
    proxy = CountingProxy(stored.url.removeprefix("dicomweb+"))
    try:
        with open_slide(proxy.url(stored.url)) as slide:
            first = sorted(stored.folder.glob("*.dcm"))[0]
            icc = pydicom.dcmread(first, stop_before_pixels=True).OpticalPathSequence[0].ICCProfile
            assert slide.color_profile == icc
        assert any("/bulk" in p or "00282000" in p for p in proxy.paths)
    finally:
        proxy.close()


def test_list_series_on_a_server_that_does_not_search_across_studies(server, series) -> None:
    proxy = CountingProxy(server.dicomweb_url)
    try:
        direct = list_series(server.dicomweb_url)
        proxy.fail_next([400])  # the /series query
        through = list_series(proxy.url(server.dicomweb_url))
        assert proxy.failed == 1 and any("ModalitiesInStudy=SM" in p for p in proxy.paths)
        assert [s.series_uid for s in through] == [s.series_uid for s in direct]
        assert all(s.as_dict()["url"].startswith("dicomweb+http://127.0.0.1:") for s in through)
    finally:
        proxy.close()


def test_a_label_in_another_series_of_the_study(server, slides_dir, tmp_path) -> None:
    """The label is found in its own series of the study (same slide container)."""
    study = generate_uid()
    folder = tmp_path / "split"
    folder.mkdir()
    volume = pydicom.dcmread(slides_dir / "dicom-openslide-boxes" / "boxes_0.dcm")
    label = pydicom.dcmread(slides_dir / "dicom-openslide-boxes" / "boxes_1.dcm")
    label.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    for ds, name in ((volume, "volume.dcm"), (label, "label.dcm")):
        new_series(ds)
        ds.StudyInstanceUID = study
        ds.save_as(folder / name)
    refs = {r.series_uid: r for r in server.upload([folder])}
    url = refs[volume.SeriesInstanceUID].url(server.dicomweb_url)
    with open_slide(url) as slide:
        assert set(slide.associated_images) == {"label"}
        got = np.asarray(slide.associated_images["label"])
        np.testing.assert_array_equal(got, label.pixel_array)
        assert slide.properties["openslide.associated.label.width"] == "16"


def test_threads_reading_one_slide_fetch_each_frame_once(series) -> None:
    proxy = CountingProxy(series["cmu-full"].url.removeprefix("dicomweb+"))
    try:
        with open_slide(proxy.url(series["cmu-full"].url)) as slide:
            proxy.reset()
            spots = [(x, y) for y in range(0, 2967, 200) for x in range(0, 2220, 200)]
            random.Random(0).shuffle(spots)
            with ThreadPoolExecutor(8) as pool:
                tiles = list(pool.map(lambda p: slide.read_region(p, 0, (200, 200)), spots))
            assert len(tiles) == len(spots)
        assert sorted(frame_numbers(proxy.frame_requests())) == list(range(1, 131))
    finally:
        proxy.close()


def _wsidicom_local(files):
    try:
        return wsidicom.WsiDicom.open(list(files))
    except Exception:
        return None


def _openslide_local(files):
    try:
        return openslide.OpenSlide(files[0])
    except openslide.OpenSlideError:
        return None


def test_every_shared_series_equals_its_files(orthanc) -> None:
    """Each series of the shared fixture: whole levels equal wsidicom (and OpenSlide where it
    reads them) on the uploaded files; a series neither reads is refused with a SlideError."""
    assert orthanc.series
    for name, ref in orthanc.series.items():
        url = orthanc.url(name)
        local = _wsidicom_local(ref.files)
        osr = _openslide_local(ref.files)
        try:
            if local is None and osr is None:
                with pytest.raises(SlideError):
                    open_slide(url)
                continue
            with open_slide(url) as slide:
                for level in range(slide.level_count):
                    got = whole_level(slide, level)
                    w, h = slide.level_dimensions[level]
                    if local is not None:
                        theirs = local.read_region((0, 0), level, (w, h)).convert("RGB")
                        np.testing.assert_array_equal(got, np.asarray(theirs), err_msg=name)
                    if osr is not None:
                        assert slide.level_dimensions == osr.level_dimensions, name
                        rgba = np.asarray(osr.read_region((0, 0), level, (w, h)))
                        np.testing.assert_array_equal(got, rgba[..., :3], err_msg=name)
                        assert slide.properties.get("openslide.mpp-x") is not None or (
                            osr.properties.get("openslide.mpp-x") is None
                        )
        finally:
            if local is not None:
                local.close()
            if osr is not None:
                osr.close()


def test_a_random_read_prefetches_a_bounded_window(series, monkeypatch) -> None:
    """With a 3-frame prefetch window, a small read fetches 3 frames of its row, not all 10."""
    from tilestream.slide.dicomweb import _series

    monkeypatch.setattr(_series, "PREFETCH_FRAMES", 3)
    proxy = CountingProxy(series["cmu-full"].url.removeprefix("dicomweb+"))
    try:
        options = DicomWebOptions(frames_per_request=2, concurrency=1)
        with open_slide(proxy.url(series["cmu-full"].url), dicomweb=options) as slide:
            proxy.reset()
            slide.read_region((5 * 240 + 10, 10), 0, (20, 20))
            assert sorted(frame_numbers(proxy.frame_requests())) == [6, 7, 8]
    finally:
        proxy.close()
