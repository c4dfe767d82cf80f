"""Extraction of DICOMweb series: slide lists with URLs, the same TFRecords as the files on disk,
resume, and a server that stops mid-extraction.

The server is the real Orthanc of ``conftest.py`` (or one of the test's own
for the test that stops it); the slides are the shared DICOM series.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _outputs import comparable_state
from conftest import missing
from dicomweb.dicomweb_testing import dicomize_pyramid
from tilestream.errors import ConfigError
from tilestream.extract import ExtractionRun, RunProgress, SlideTask, extract_slides
from tilestream.extract.fingerprint import fingerprint_matches
from tilestream.extract.remote import series_fingerprint, url_fingerprint
from tilestream.extract.resume import is_complete
from tilestream.extract.sources import discover_slides
from tilestream.runfolder import slide_outputs
from tilestream.testing.orthanc import OrthancServer, SeriesRef
from tilestream.tfrecord import iter_records, parse_example

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
URL = f"dicomweb+http://127.0.0.1:8042/dicom-web/studies/{STUDY}/series/{SERIES}"


# -- slide lists and arguments (no server) ------------------------------------------------------


def test_a_url_argument_is_one_slide_named_by_its_series_uid() -> None:
    (task,) = discover_slides([URL])
    assert task == SlideTask(path=URL, name=SERIES)


def test_a_csv_takes_urls_and_their_names(tmp_path: Path) -> None:
    listing = tmp_path / "slides.csv"
    other = URL.replace(SERIES, SERIES + ".7")
    listing.write_text(f"slide,name\n{URL},case-1\n{other},\n")
    tasks = discover_slides([listing])
    assert [(t.path, t.name) for t in tasks] == [(URL, "case-1"), (other, SERIES + ".7")]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../up", "path separator"), ("..", "'..'"), (".hidden", "starts with '.'")],
)
def test_unsafe_names_of_urls_are_refused_naming_the_line(
    tmp_path: Path, name: str, problem: str
) -> None:
    listing = tmp_path / "slides.csv"
    listing.write_text(f"slide,name\n{URL},{name}\n")
    with pytest.raises(ConfigError, match=rf"{listing}: line 2: .*{problem}"):
        discover_slides([listing])


@pytest.mark.parametrize(
    "url",
    [
        URL.replace("http://", "http://ann:s3cret@"),
        URL + "?access_token=s3cret",
        URL + "#s3cret",
    ],
)
def test_secrets_in_a_slide_url_are_refused_without_showing_them(tmp_path: Path, url: str) -> None:
    listing = tmp_path / "slides.csv"
    listing.write_text(f"slide\n{url}\n")
    for source in ([url], [listing]):
        with pytest.raises(ConfigError, match="TILESTREAM_DICOMWEB_") as info:
            discover_slides(source)
        assert "s3cret" not in str(info.value) and "ann" not in str(info.value)


def test_a_dicomweb_url_without_a_series_is_refused() -> None:
    with pytest.raises(ConfigError, match="names no series"):
        discover_slides([f"dicomweb+http://127.0.0.1:8042/dicom-web/studies/{STUDY}"])


def test_two_urls_of_one_series_on_two_servers_collide_by_name() -> None:
    with pytest.raises(ConfigError, match="same name"):
        discover_slides([URL, URL.replace("8042", "8043")])


# -- the fingerprint of a series (no server) ----------------------------------------------------


def _instance(sop: str, **tags: object) -> dict[str, object]:
    out: dict[str, object] = {"00080018": {"vr": "UI", "Value": [sop]}}
    for tag, value in tags.items():
        out[tag] = {"vr": "US", "Value": [value]}
    return out


def test_the_series_fingerprint_sees_instances_and_attributes_not_the_server() -> None:
    a, b = _instance("1.1", **{"00280010": 256}), _instance("1.2")
    fp = series_fingerprint(SERIES, [a, b])
    assert fp == series_fingerprint(SERIES, [b, a])
    assert fp != series_fingerprint(SERIES, [a])  # an instance removed
    assert fp != series_fingerprint(SERIES, [a, b, _instance("1.3")])  # one added
    assert fp != series_fingerprint(SERIES, [_instance("1.1", **{"00280010": 512}), b])
    bulk = {**a, "7FE00010": {"vr": "OB", "BulkDataURI": "http://127.0.0.1:8042/x/frames/1"}}
    moved = {**a, "7FE00010": {"vr": "OB", "BulkDataURI": "https://pacs.example/y/frames/1"}}
    assert series_fingerprint(SERIES, [bulk, b]) == series_fingerprint(SERIES, [moved, b])
    assert "127.0.0.1" not in json.dumps(series_fingerprint(SERIES, [bulk, b]))


# -- extraction through a real server -----------------------------------------------------------

#: Per shared series: the extraction options (small slides, small tiles) and an mpp for
#: the series that state none.
SHARED = {
    "openslide-boxes": ({"tile_px": 8, "tile_um": 4, "tissue_method": "none"}, None),
    "pathml-small_dicom": ({"tile_px": 128, "tile_um": 128}, 0.5),
    "highdicom-jpegls": (
        {"tile_px": 8, "tile_um": 4, "tissue_method": "none", "grayspace_fraction": 1.0},
        None,
    ),
    "cmu-small-region": ({"tile_px": 128, "tile_um": 100}, None),
}
#: The dicomized CMU slide: stopped mid-extraction (64 px tiles: progress every 64 tiles
#: lands while most of its 256 px frames are still to be fetched).
STOP_OPTIONS = {"tile_px": 64, "tile_um": 32, "threads": 1}


@pytest.fixture(scope="module")
def cmu_pyramid(orthanc, cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> SeriesRef:
    """The dicomized CMU slide in the session's Orthanc: the fixture's, or a 3-level pyramid."""
    ref = orthanc.series.get("cmu-small-region")
    if ref is None:
        files = dicomize_pyramid(cmu_slide, tmp_path_factory.mktemp("cmu-pyramid"))
        (ref,) = orthanc.server.upload(files)
        orthanc.series["cmu-small-region"] = ref
    return ref


@pytest.fixture
def series(orthanc, request: pytest.FixtureRequest) -> Callable[[str], SeriesRef]:
    """The stored series of a name (the dicomized CMU slide made on first use)."""

    def get(name: str) -> SeriesRef:
        if name == "cmu-small-region":
            return request.getfixturevalue("cmu_pyramid")  # type: ignore[no-any-return]
        return orthanc.series[name]

    return get


#: The coordinates' columns that place a tile (the rest are QC fractions).
TILE_COLUMNS = 9


def _coords(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        header, *rows = csv.reader(f)
    assert header[:TILE_COLUMNS] == [
        "record", "loc_x", "loc_y", "x", "y", "width", "height", "level", "tile_um",
    ]  # fmt: skip
    return rows


def _records(path: Path) -> list[bytes]:
    return list(iter_records(path))


def _extract(slide: str, out: Path, name: str, options: dict[str, Any], mpp: float | None,
             **kwargs: Any) -> ExtractionRun:  # fmt: skip
    task = SlideTask(path=slide, name=name, mpp=mpp)
    return extract_slides([task], out, workers=1, **options, **kwargs)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_dicomweb_extraction_gives_the_records_of_the_files_on_disk(
    orthanc, series: Callable[[str], SeriesRef], name: str, tmp_path: Path
) -> None:
    ref = series(name)
    options, mpp = SHARED[name]
    # Every tile decoded and re-encoded on both sides: OpenSlide gives the files' pixels, not
    # their stored frames, so only the DICOMweb side could assemble tiles from the frames
    # losslessly (test_dicomweb_tiles_are_the_scanners_frames_assembled_losslessly).
    options = {**options, "jpeg_passthrough": False}
    local = _extract(str(sorted(ref.files)[0]), tmp_path / "local", "s", options, mpp)
    remote = _extract(orthanc.url(name), tmp_path / "remote", "s", options, mpp)
    (lr,), (rr,) = local.results, remote.results
    if lr.status == "failed":
        pytest.xfail(
            f"no backend reads {name} from disk, nothing to compare (over DICOMweb: "
            f"{rr.status}{f', {rr.error}' if rr.error else ''}): {lr.error}"
        )
    assert rr.status == "done", rr.error
    assert (rr.tiles, rr.grid, rr.level) == (lr.tiles, lr.grid, lr.level)
    # OpenSlide's mpp is the DICOM spacing (mm) times 1000 in binary floating point
    assert rr.mpp == pytest.approx(lr.mpp, rel=1e-12)
    assert rr.tiles > 0
    local_records = _records(local.run_dir / "s.tfrecords")
    remote_records = _records(remote.run_dir / "s.tfrecords")
    assert len(remote_records) == len(local_records)
    for i, (a, b) in enumerate(zip(local_records, remote_records, strict=True)):
        assert a == b, f"record {i} differs"
    assert (remote.run_dir / "state/s.rejected.csv").read_bytes() == (
        local.run_dir / "state/s.rejected.csv"
    ).read_bytes()
    # the tiles' places are the same; their QC fractions come from the low-resolution image,
    # which OpenSlide's read_level_resized of a finer DICOM level reads a little differently
    # from its own read_region (up to 40 levels on CMU's level 1; DICOMweb matches read_region)
    local_coords, remote_coords = (_coords(r.run_dir / "s.coords.csv") for r in (local, remote))
    assert [r[:TILE_COLUMNS] for r in remote_coords] == [r[:TILE_COLUMNS] for r in local_coords]
    for a, b in zip(local_coords, remote_coords, strict=True):
        qc_a, qc_b = (np.array([float(v or "nan") for v in r[TILE_COLUMNS:]]) for r in (a, b))
        np.testing.assert_allclose(qc_b, qc_a, atol=0.01, equal_nan=True)


def test_resume_skips_a_complete_dicomweb_slide_and_records_no_server(
    orthanc, tmp_path: Path
) -> None:
    ref = orthanc.series["openslide-boxes"]
    options, _ = SHARED["openslide-boxes"]
    first = extract_slides([orthanc.url("openslide-boxes")], tmp_path, workers=1, **options)
    assert [r.status for r in first.results] == ["done"]
    state_file = first.run_dir / "state" / f"{ref.series_uid}.json"
    source = json.loads(state_file.read_text())["source"]
    assert source == url_fingerprint(orthanc.url("openslide-boxes"))
    assert source["series_uid"] == ref.series_uid and source["instances"] == len(ref.files)
    assert str(orthanc.server.port) not in json.dumps(source)
    before = state_file.stat().st_mtime_ns
    again = extract_slides([orthanc.url("openslide-boxes")], tmp_path, workers=1, **options)
    assert [r.status for r in again.results] == ["skipped"]
    assert state_file.stat().st_mtime_ns == before
    # another series under the same name is not "complete": its fingerprint differs
    other = SlideTask(orthanc.url("highdicom-jpegls"), ref.series_uid)
    assert not fingerprint_matches(source, other.path)
    assert is_complete(first.run_dir, other, first.config) is None


def _leftovers(run_dir: Path, name: str) -> list[Path]:
    """The slide's outputs present under their final names, and any temporary file."""
    final = [
        p for kind, p in slide_outputs(run_dir, name).items() if kind != "state" and p.exists()
    ]
    return final + list(run_dir.rglob("*.tmp"))


def test_a_server_stopped_mid_extraction_fails_the_slide_and_a_rerun_completes_it(
    orthanc, cmu_pyramid: SeriesRef, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = cmu_pyramid
    clean = extract_slides([orthanc.url("cmu-small-region")], tmp_path / "clean", workers=1,
                           **STOP_OPTIONS)  # fmt: skip
    assert [r.status for r in clean.results] == ["done"]
    name = ref.series_uid
    server = OrthancServer(tmp_path / "own")
    with server:
        (mine,) = server.upload(ref.files)
        url = mine.url(server.dicomweb_url)
        stopped: list[int] = []

        def stop_mid_slide(p: RunProgress) -> None:
            if p.result is None and p.slide_tiles_done and not stopped:
                stopped.append(p.slide_tiles_done)
                assert p.slide_tiles_done < p.slide_tiles_total
                server.stop()

        with caplog.at_level(logging.WARNING, logger="tilestream"):
            run = extract_slides([url], tmp_path / "out", workers=1, progress=stop_mid_slide,
                                 **STOP_OPTIONS)  # fmt: skip
        assert stopped, "the server was not stopped mid-slide"
        (result,) = run.results
        assert result.status == "failed" and result.traceback is None
        assert result.error_type == "RemoteSlideError" and name in result.error
        state = json.loads((run.run_dir / "state" / f"{name}.json").read_text())
        assert state["status"] == "failed" and state["error"] == result.error
        assert _leftovers(run.run_dir, name) == []
        assert (
            not (run.run_dir / "manifest.json").exists()
            or name not in (run.run_dir / "manifest.json").read_text()
        )
        assert "Traceback" not in caplog.text

        server.start()  # a new port: the same series under another URL keeps its name
        url = mine.url(server.dicomweb_url)
        rerun = extract_slides([url], tmp_path / "out", workers=1, **STOP_OPTIONS)
        assert [r.status for r in rerun.results] == ["done"]

        # an outage while resuming leaves the complete slide complete, with a warning
        server.stop()
        state_file = rerun.run_dir / "state" / f"{name}.json"
        before = state_file.read_bytes()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tilestream"):
            again = extract_slides([url], tmp_path / "out", workers=1, **STOP_OPTIONS)
        assert [r.status for r in again.results] == ["skipped"]
        assert state_file.read_bytes() == before
        assert "cannot check the series on its server" in caplog.text
    assert not list(rerun.run_dir.rglob("*.tmp"))
    for rel in (f"{name}.tfrecords", f"{name}.coords.csv", f"state/{name}.rejected.csv",
                f"{name}.geojson", f"previews/{name}.jpg"):  # fmt: skip
        assert (rerun.run_dir / rel).read_bytes() == (clean.run_dir / rel).read_bytes(), rel
    done, reference = (
        comparable_state(r.run_dir / "state" / f"{name}.json") for r in (rerun, clean)
    )
    assert done.pop("path") == url and reference.pop("path") == orthanc.url("cmu-small-region")
    assert done == reference


def test_url_slides_run_in_worker_processes(orthanc, tmp_path: Path) -> None:
    """The default process pool (spawned workers) reads DICOMweb slides as the driver would."""
    url = orthanc.url("openslide-boxes")
    options, _ = SHARED["openslide-boxes"]
    tasks = [SlideTask(url, "a"), SlideTask(url, "b")]
    run = extract_slides(tasks, tmp_path, workers=2, **options)
    assert sorted((r.slide, r.status) for r in run.results) == [("a", "done"), ("b", "done")]
    a, b = (_records(run.run_dir / f"{n}.tfrecords") for n in "ab")
    assert len(a) == len(b) > 0


def test_dicomweb_tiles_are_the_scanners_frames_assembled_losslessly(
    orthanc, series: Callable[[str], SeriesRef], cmu_slide: Path, tmp_path: Path
) -> None:
    """The dicomized CMU slide holds the SVS's JPEG tiles as frames: tiles cut from them
    on the MCU grid are assembled from their coefficients, the SVS's pixels bit for bit."""
    from tilestream.slide import jpeg_mosaic, open_slide
    from tilestream.tfrecord import decode_image

    if not jpeg_mosaic.available():
        missing("the compiled extension tilestream.slide._jpegdct is not built")
    series("cmu-small-region")
    run = _extract(
        orthanc.url("cmu-small-region"), tmp_path, "s", {"tile_px": 256, "tile_um": 128}, None
    )
    (result,) = run.results
    assert result.status == "done", result.error
    assert result.tiles > 0 and result.assembled == result.tiles
    with open_slide(cmu_slide) as svs:
        for data, row in zip(
            _records(run.run_dir / "s.tfrecords"),
            _coords(run.run_dir / "s.coords.csv"),
            strict=True,
        ):
            x, y = int(row[3]), int(row[4])
            ref = svs.read_region((x, y), 0, (256, 256), as_array=True)
            rec = parse_example(data)
            assert np.array_equal(decode_image(rec["image_raw"]), ref), (x, y)
