"""Slide URLs of stores in extraction: recognised, named, masked, fingerprinted (real SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilestream.errors import ConfigError, SlideNotFoundError
from tilestream.extract.fingerprint import object_fingerprint
from tilestream.extract.remote import (
    check_slide_url,
    is_dicomweb_url,
    is_slide_url,
    redact_url,
    url_slide_name,
)
from tilestream.slide import open_slide
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


def test_the_slide_version_follows_the_object(seaweed: SeaweedServer, cmu_slide: Path) -> None:
    """``remote_slide_version`` is what resume fingerprints an object by (``object_version``)."""
    bucket = seaweed.make_bucket(BUCKET)
    store, _ = store_for(f"s3://{bucket}", seaweed.storage_options)
    store.write_atomic("a.svs", cmu_slide.read_bytes())
    url, options = f"s3://{bucket}/a.svs", seaweed.storage_options
    version = remote_slide_version(url, options)
    assert version == store.stat("a.svs").version
    assert object_fingerprint(url, options)["object_version"] == version
    with open_slide(url, storage_options=options) as slide:
        assert slide.source_version == version
    assert remote_slide_version(url, options) == version  # unchanged: the same
    store.write_atomic("a.svs", cmu_slide.read_bytes()[:-10])  # replaced
    assert remote_slide_version(url, options) != version
    store.delete("a.svs")
    with pytest.raises(SlideNotFoundError, match=rf"^{url}: "):
        remote_slide_version(url, options)
