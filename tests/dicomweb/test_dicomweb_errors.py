"""DICOMweb slides: bad input gets a clear SlideError naming the URL, never a secret.

Real servers throughout: an unknown study or series, a CT series, a series
without a pixel spacing, a corrupt frame and a concatenation uploaded to
Orthanc on purpose, a server that is not DICOMweb, one that is down, one that
never answers, and transient 5xx / 429 answers through a proxy.
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dicomweb.dicomweb_testing import (  # noqa: F401 - the *_fixture fixtures
    CountingProxy,
    dicomize_pyramid,
    new_series,
    require_module,
    require_wsidicom,
    series_fixture,
    server_fixture,
    upload,
    whole_level,
)
from tilestream.errors import (
    CorruptSlideError,
    MissingDependencyError,
    MissingMPPError,
    RemoteSlideError,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from tilestream.slide import open_slide
from tilestream.slide.dicomweb import DicomWebOptions
from tilestream.testing.orthanc import free_port

pytestmark = pytest.mark.testdata
require_wsidicom()
pydicom = require_module("pydicom")
encapsulate = require_module("pydicom.encaps").encapsulate
generate_frames = require_module("pydicom.encaps").generate_frames
get_testdata_file = require_module("pydicom.data").get_testdata_file
generate_uid = require_module("pydicom.uid").generate_uid


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
    stored = upload(server, tmp_path / "nospacing")
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
    new_series(ds)
    (tmp_path / "corrupt").mkdir()
    ds.save_as(tmp_path / "corrupt" / "level.dcm")
    stored = upload(server, tmp_path / "corrupt")
    with open_slide(series["cmu-full"].url) as full:
        want = whole_level(full, 2)
    with open_slide(stored.url) as slide:
        for _ in range(2):
            with pytest.raises(CorruptSlideError, match=r"frame 5 .*tile 1,1") as info:
                slide.read_region((240, 240), 0, (10, 10))
            assert stored.url in str(info.value)
        np.testing.assert_array_equal(
            slide.read_region((0, 0), 0, (240, 240), as_array=True), want[:240, :240]
        )
        with pytest.raises(CorruptSlideError):
            whole_level(slide, 0)
        np.testing.assert_array_equal(
            slide.read_region((480, 480), 0, (75, 262), as_array=True), want[480:, 480:]
        )


def test_a_concatenation_is_refused(server, cmu_slide, tmp_path) -> None:
    dicomize_pyramid(cmu_slide, tmp_path / "concat", concatenated=True)
    stored = upload(server, tmp_path / "concat")
    with pytest.raises(UnsupportedSlideError, match="concatenation") as info:
        open_slide(stored.url)
    assert stored.url in str(info.value)


def test_opening_without_the_extra(series, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(MissingDependencyError, match=r"tilestream\[dicomweb\]"):
        open_slide(series["openslide-boxes"].url)


def test_backend_auto_never_mixes_files_and_urls(series, cmu_slide) -> None:
    with pytest.raises(SlideError, match="reads URLs, not files"):
        open_slide(cmu_slide, backend="dicomweb")
    with pytest.raises(SlideError, match="does not read dicomweb"):
        open_slide(series["openslide-boxes"].url, backend="tifffile")
    with pytest.raises(UnsupportedSlideError, match="no slide backend reads nosuch:// URLs"):
        open_slide("nosuch://bucket/slide.svs")


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
