"""Extraction of DICOMweb series: slide lists with URLs, the same TFRecords as the files on disk,
resume, and a server that stops mid-extraction.

The server is the real Orthanc of ``conftest.py`` (or one of the test's own
for the test that stops it); the slides are the shared DICOM series.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tilestream.errors import ConfigError
from tilestream.extract import SlideTask
from tilestream.extract.remote import series_fingerprint
from tilestream.extract.sources import discover_slides

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
