"""DICOMweb series read as slides through a real Orthanc, against the same DICOM files read locally.

Every series is compared whole-level with OpenSlide (``open_slide`` on the
local file) and with wsidicom on the files; frame batching is proven by
counting requests through a forwarding proxy; the error cases use real servers
(an unknown series, a CT series, a server that is not DICOMweb, one that is
down, a corrupt frame uploaded on purpose).
"""

from __future__ import annotations

import http.server
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import pytest

from conftest import missing
from dicomweb.dicomweb_testing import (
    CMU_MPP,
    CountingProxy,
    dicomize_pyramid,
    require_module,
    require_wsidicom,
)
from tilestream.errors import (
    CorruptSlideError,
    MissingMPPError,
    RemoteSlideError,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from tilestream.slide import open_slide
from tilestream.slide.dicomweb import DicomWebOptions, list_series
from tilestream.testing.orthanc import (
    OrthancServer,
    dicomizer_binary,
    free_port,
    orthanc_binary,
    plugin_path,
)

pytestmark = pytest.mark.testdata
wsidicom = require_wsidicom()
pydicom = require_module("pydicom")
encapsulate = require_module("pydicom.encaps").encapsulate
generate_frames = require_module("pydicom.encaps").generate_frames
get_testdata_file = require_module("pydicom.data").get_testdata_file
generate_uid = require_module("pydicom.uid").generate_uid


@dataclass
class Stored:
    """A series on our own server, and the local files it was uploaded from."""

    url: str
    folder: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    if orthanc_binary() is None or plugin_path("dicomweb") is None or dicomizer_binary() is None:
        missing("Orthanc, its DICOMweb plugin and OrthancWSIDicomizer are needed")
    with OrthancServer(tmp_path_factory.mktemp("orthanc-slide")) as srv:
        yield srv


def _upload(server: OrthancServer, folder: Path) -> Stored:
    refs = server.upload([folder])
    assert len(refs) == 1, folder
    return Stored(refs[0].url(server.dicomweb_url), folder)


@pytest.fixture(scope="module")
def series(
    server: OrthancServer,
    cmu_slide: Path,
    slides_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Stored]:
    """The shared DICOM series and a 3-level pyramid of CMU-1-Small-Region (full and sparse)."""
    root = tmp_path_factory.mktemp("dicom")
    out = {}
    for name in ("openslide-boxes", "highdicom-jpegls", "pathml-small_dicom"):
        out[name] = _upload(server, slides_dir / f"dicom-{name}")
    for name, sparse in (("cmu-full", False), ("cmu-sparse", True)):
        dicomize_pyramid(cmu_slide, root / name, sparse=sparse)
        out[name] = _upload(server, root / name)
    return out


def _whole_level(slide, level: int) -> np.ndarray:
    w, h = slide.level_dimensions[level]
    return slide.read_region((0, 0), level, (w, h), as_array=True)


# -- pixels and metadata against the files read locally ----------------------------------------
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
                got = _whole_level(remote, level)
                np.testing.assert_array_equal(got, _whole_level(local, level), err_msg=f"L{level}")
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
        np.testing.assert_array_equal(_whole_level(remote, 0), theirs)
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


# -- batching ---------------------------------------------------------------------------
def _frame_numbers(paths: list[str]) -> list[int]:
    return [int(n) for p in paths for n in p.rsplit("/frames/", 1)[1].split("?")[0].split(",")]


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
        numbers = _frame_numbers(requests)
        assert sorted(numbers) == list(range(1, 131))  # 10 x 13 frames, each fetched once
        # 13 stored rows of 10 frames; a read spanning two rows fetches both at once
        assert len(requests) <= 13 * per_row
        assert all(len(_frame_numbers([r])) <= per_request for r in requests)
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


# -- errors -------------------------------------------------------------------------------
def _with_secrets(url: str) -> str:
    return url.replace("http://", "http://someone:pa55word@", 1) + "?access_token=t0ken"


def _assert_no_secret(text: str) -> None:
    assert "pa55word" not in text and "t0ken" not in text and "someone" not in text


def test_unknown_series_and_study(series) -> None:
    url = series["openslide-boxes"].url
    bad_series = re.sub(r"/series/[^/]+$", "/series/1.2.3.4.5", url)
    with pytest.raises(SlideNotFoundError, match=r"no series 1\.2\.3\.4\.5 in study") as info:
        open_slide(_with_secrets(bad_series))
    assert bad_series in str(info.value)
    _assert_no_secret(str(info.value))
    bad_study = re.sub(r"/studies/[^/]+/", "/studies/9.9.9/", url)
    with pytest.raises(SlideNotFoundError, match=r"no study 9\.9\.9"):
        open_slide(bad_study)


def test_a_series_that_is_not_a_whole_slide_image(server, series) -> None:
    refs = server.upload([Path(get_testdata_file("CT_small.dcm"))])
    url = refs[0].url(server.dicomweb_url)
    with pytest.raises(UnsupportedSlideError, match=r"not a whole-slide image.*modality CT"):
        open_slide(url)
    with pytest.raises(UnsupportedSlideError, match="no whole-slide image level") as info:
        open_slide(series["pathml-small_dicom"].url)
    assert series["pathml-small_dicom"].url in str(info.value)


class _NotDicomWeb(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_server_that_does_not_speak_dicomweb() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotDicomWeb)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"dicomweb+http://127.0.0.1:{httpd.server_address[1]}/dw/studies/1.2/series/3.4"
        with pytest.raises(RemoteSlideError, match="does not speak DICOMweb") as info:
            open_slide(_with_secrets(url))
        assert url in str(info.value)
        _assert_no_secret(str(info.value))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_is_down_fails_after_bounded_retries(caplog) -> None:
    url = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/1.2/series/3.4"
    options = DicomWebOptions(retries=2, backoff=0.05, timeout=5)
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(RemoteSlideError, match="after retries"):
        open_slide(_with_secrets(url), dicomweb=options)
    assert time.monotonic() - start < 10
    _assert_no_secret(caplog.text)


def test_transient_5xx_and_429_are_retried(series) -> None:
    proxy = CountingProxy(series["openslide-boxes"].url.removeprefix("dicomweb+"))
    proxy.fail_next([503, 429, 502])
    try:
        options = DicomWebOptions(retries=4, backoff=0.01)
        with open_slide(proxy.url(series["openslide-boxes"].url), dicomweb=options) as slide:
            assert slide.dimensions == (16, 16)
        assert proxy.failed == 3
        proxy.fail_next([503] * 10)
        with pytest.raises(RemoteSlideError, match="HTTP 503"):
            open_slide(proxy.url(series["openslide-boxes"].url), dicomweb=options)
    finally:
        proxy.close()


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(SlideError, match="only allowed to a loopback host"):
        open_slide("dicomweb+http://pacs.example.org/dicom-web/studies/1/series/2")
    with pytest.raises(SlideError, match="names no /studies"):
        open_slide("dicomweb+https://pacs.example.org/dicom-web/studies/1")


def test_the_url_without_secrets_is_what_the_slide_shows(series) -> None:
    url = series["openslide-boxes"].url
    with open_slide(_with_secrets(url)) as slide:
        assert slide.path == url
        _assert_no_secret(repr(slide))
        _assert_no_secret(str(dict(slide.properties)))


def test_missing_pixel_spacing(server, slides_dir, tmp_path) -> None:
    ds = pydicom.dcmread(slides_dir / "dicom-openslide-boxes" / "boxes_0.dcm")
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    (tmp_path / "nospacing").mkdir()
    ds.save_as(tmp_path / "nospacing" / "boxes.dcm")
    stored = _upload(server, tmp_path / "nospacing")
    with open_slide(stored.url) as slide:
        assert slide.mpp is None
        with pytest.raises(MissingMPPError, match="mpp=") as info:
            slide.require_mpp()
        assert stored.url in str(info.value)
    with open_slide(stored.url, mpp=0.5) as slide:
        assert slide.require_mpp() == (0.5, 0.5)


def test_a_corrupt_frame(server, series, tmp_path) -> None:
    """A frame that cannot be decoded: CorruptSlideError naming the URL and frame, on every read
    that touches it (never cached, never latched); every other tile stays readable."""
    level2 = sorted(series["cmu-full"].folder.glob("*.dcm"))[2]
    ds = pydicom.dcmread(level2)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    frames[4] = b"\xff\xd8\xff\xe0 not a jpeg at all \xff\xd9"  # tile (1, 1) of a 3x4 grid
    ds.PixelData = encapsulate(frames)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    _new_series(ds)
    (tmp_path / "corrupt").mkdir()
    ds.save_as(tmp_path / "corrupt" / "level.dcm")
    stored = _upload(server, tmp_path / "corrupt")
    with open_slide(series["cmu-full"].url) as full:
        want = _whole_level(full, 2)
    with open_slide(stored.url) as slide:
        for _ in range(2):
            with pytest.raises(CorruptSlideError, match=r"frame 5 .*tile 1,1") as info:
                slide.read_region((240, 240), 0, (10, 10))
            assert stored.url in str(info.value)
        np.testing.assert_array_equal(
            slide.read_region((0, 0), 0, (240, 240), as_array=True), want[:240, :240]
        )
        with pytest.raises(CorruptSlideError):
            _whole_level(slide, 0)
        np.testing.assert_array_equal(
            slide.read_region((480, 480), 0, (75, 262), as_array=True), want[480:, 480:]
        )


def _new_series(ds: pydicom.Dataset) -> None:
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


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
    _new_series(ds)
    (tmp_path / "sparse").mkdir()
    ds.save_as(tmp_path / "sparse" / "level.dcm")
    stored = _upload(server, tmp_path / "sparse")
    with open_slide(stored.url) as slide, open_slide(tmp_path / "sparse" / "level.dcm") as local:
        got = _whole_level(slide, 0)
        np.testing.assert_array_equal(got, _whole_level(local, 0))
        assert (got[row * 240 : row * 240 + 240, col * 240 : col * 240 + 240] == 255).all()
        assert (got != 255).any()


def test_a_concatenation_is_refused(server, cmu_slide, tmp_path) -> None:
    dicomize_pyramid(cmu_slide, tmp_path / "concat", concatenated=True)
    stored = _upload(server, tmp_path / "concat")
    with pytest.raises(UnsupportedSlideError, match="concatenation") as info:
        open_slide(stored.url)
    assert stored.url in str(info.value)


# -- listing -----------------------------------------------------------------------------
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


def test_opening_without_the_extra(series, monkeypatch) -> None:
    import sys

    from tilestream.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(MissingDependencyError, match=r"tilestream\[dicomweb\]"):
        open_slide(series["openslide-boxes"].url)


def test_backend_auto_never_mixes_files_and_urls(series, cmu_slide) -> None:
    with pytest.raises(SlideError, match="reads URLs, not files"):
        open_slide(cmu_slide, backend="dicomweb")
    with pytest.raises(SlideError, match="does not read dicomweb"):
        open_slide(series["openslide-boxes"].url, backend="tifffile")
    with pytest.raises(UnsupportedSlideError, match="no slide backend reads s3:// URLs"):
        open_slide("s3://bucket/slide.svs")
    assert openslide is not None


def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"dicomweb+http://127.0.0.1:{listener.getsockname()[1]}/dw/studies/1.2/series/3.4"
        options = DicomWebOptions(timeout=0.5, retries=1, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(RemoteSlideError, match="Timeout"):
            open_slide(url, dicomweb=options)
        assert time.monotonic() - start < 5
    finally:
        listener.close()


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
        _new_series(ds)
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
        assert sorted(_frame_numbers(proxy.frame_requests())) == list(range(1, 131))
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
                    got = _whole_level(slide, level)
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
            assert sorted(_frame_numbers(proxy.frame_requests())) == [6, 7, 8]
    finally:
        proxy.close()
