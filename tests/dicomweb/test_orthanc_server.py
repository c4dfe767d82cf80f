"""The Orthanc fixture itself: a real server on loopback, holding the shared DICOM series."""

from __future__ import annotations

import json
import urllib.request

from tilestream.testing.orthanc import OrthancServer


def test_the_shared_series_are_found_through_qido_rs(orthanc) -> None:
    assert {"openslide-boxes", "pathml-small_dicom", "highdicom-jpegls"} <= set(orthanc.series)
    ref = orthanc.series["openslide-boxes"]
    url = f"{orthanc.server.dicomweb_url}/studies/{ref.study_uid}/series"
    with urllib.request.urlopen(url, timeout=30) as response:
        found = json.loads(response.read())
    assert ref.series_uid in {s["0020000E"]["Value"][0] for s in found}


def test_the_server_starts_answers_and_stops(tmp_path) -> None:
    server = OrthancServer(tmp_path / "srv").start()
    try:
        assert server.running
        assert server.get("/system")["Name"] == "tilestream-test"
        assert server.dicomweb_url.startswith("http://127.0.0.1:")
    finally:
        server.stop()
    assert not server.running
