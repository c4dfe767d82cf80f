"""Slide URLs of stores in extraction: recognised, named, masked, fingerprinted (real SeaweedFS)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tilestream.errors import ConfigError
from tilestream.extract.remote import (
    check_slide_url,
    is_dicomweb_url,
    is_slide_url,
    redact_url,
    url_fingerprint,
    url_fingerprint_matches,
    url_slide_name,
)
from tilestream.slide.remote import is_storage_url, remote_slide_version
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer

BUCKET = "slides-urls"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("s3://b/dir/a.svs", "a"),
        ("gs://b/cohort/case-7.ndpi", "case-7"),
        ("https://h/slides/x.ome.tiff", "x.ome"),
        ("http://h:8080/buckets/b/k/CMU-1.svs", "CMU-1"),
        ("s3://b/no-extension", "no-extension"),
    ],
)
def test_storage_urls_are_slide_urls_with_their_stem_as_name(url: str, name: str) -> None:
    assert is_slide_url(url) and is_storage_url(url) and not is_dicomweb_url(url)
    assert url_slide_name(url) == name
    check_slide_url(url, "slides.csv: line 2")  # nothing secret: accepted


def test_dicomweb_and_paths_are_unchanged() -> None:
    url = "dicomweb+https://pacs/dicom-web/studies/1.2/series/1.2.3"
    assert is_slide_url(url) and not is_storage_url(url) and url_slide_name(url) == "1.2.3"
    assert not is_slide_url("/data/a.svs") and not is_storage_url("file:///data/a.svs")


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:s3cr3t-value@bucket/a.svs",
        "https://h/a.svs?X-Amz-Signature=s3cr3t-value&X-Amz-Credential=AKIA",
        "gs://bucket/a.svs#s3cr3t-value",
    ],
)
def test_credentials_in_a_storage_url_are_refused_and_masked(url: str) -> None:
    with pytest.raises(ConfigError, match="storage_options") as info:
        check_slide_url(url, "slides.csv: line 3")
    assert "s3cr3t-value" not in str(info.value)
    assert "s3cr3t-value" not in redact_url(url)


def test_object_fingerprint_follows_the_object(
    seaweed: SeaweedServer, cmu_slide: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = seaweed.make_bucket(BUCKET)
    store, _ = store_for(f"s3://{bucket}", seaweed.storage_options)
    store.write_atomic("a.svs", cmu_slide.read_bytes())
    url, options = f"s3://{bucket}/a.svs", seaweed.storage_options
    fp = url_fingerprint(url, options)
    assert fp["kind"] == "object" and fp["size"] == cmu_slide.stat().st_size
    assert fp["object"] == remote_slide_version(url, options)
    assert seaweed.endpoint_url not in str(fp) and seaweed.secret_key not in str(fp)
    assert url_fingerprint_matches(fp, url, options)
    store.write_atomic("a.svs", cmu_slide.read_bytes()[:-10])  # replaced
    assert not url_fingerprint_matches(fp, url, options)
    store.delete("a.svs")
    assert not url_fingerprint_matches(fp, url, options)  # gone
    store.write_atomic("a.svs", cmu_slide.read_bytes())
    fp = url_fingerprint(url, options)
    unreachable = {**options, "endpoint_url": "http://127.0.0.1:9"}
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        assert url_fingerprint_matches(fp, url, unreachable)  # cannot ask now: it stands
    assert "cannot check the object in its store" in caplog.text
    assert seaweed.secret_key not in caplog.text
    assert not url_fingerprint_matches({**fp, "version": 0}, url, options)
