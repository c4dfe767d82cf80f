"""The Orthanc fixture itself: a real server on loopback, holding the shared and the dicomized series."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from tilestream.testing.orthanc import OrthancServer


def test_the_shared_series_are_found_through_qido_rs(orthanc) -> None:
    shared = {"openslide-boxes", "pathml-small_dicom", "highdicom-jpegls"}
    assert shared | {"cmu-small-region", "tcga-jp2k"} <= set(orthanc.series)
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


@pytest.mark.parametrize("key", ["cmu-small-region", "tcga-jp2k", "openslide-boxes"])
def test_wsidicom_reads_the_series_over_dicomweb_as_from_the_files(orthanc, key: str) -> None:
    """The issue's trial: the dicomized CMU series opens over DICOMweb (it did not by default)."""
    wsidicom = pytest.importorskip("wsidicom")
    ref = orthanc.series[key]
    client = wsidicom.WsiDicomWebClient.create_client(orthanc.server.dicomweb_url)
    folder = ref.files[0].parent
    with (
        wsidicom.WsiDicom.open_web(client, ref.study_uid, ref.series_uid) as remote,
        wsidicom.WsiDicom.open(folder) as local,
    ):
        assert [lv.size for lv in remote.levels] == [lv.size for lv in local.levels]
        size = (min(local.size.width, 600), min(local.size.height, 600))
        a = np.asarray(remote.read_region((0, 0), 0, size))
        b = np.asarray(local.read_region((0, 0), 0, size))
    assert np.array_equal(a, b)


def test_tilestream_reads_the_dicomized_cmu_from_orthanc_as_the_svs(orthanc, cmu_slide) -> None:
    """End to end: SVS -> dicomizer (tiles copied) -> Orthanc -> DICOMweb URL -> same pixels."""
    from tilestream.slide import open_slide

    with open_slide(orthanc.url("cmu-small-region")) as remote, open_slide(cmu_slide) as svs:
        assert remote.backend == "dicomweb"
        assert remote.dimensions == svs.dimensions == (2220, 2967)
        assert remote.mpp == pytest.approx((0.499, 0.499), rel=1e-6)
        region = ((1000, 1200), 0, (700, 500))
        assert np.array_equal(
            remote.read_region(*region, as_array=True), svs.read_region(*region, as_array=True)
        )
