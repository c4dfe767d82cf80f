"""Remote slides when the network or the store misbehaves: retried, or a clear slide error.

A real SeaweedFS behind :class:`FaultProxy`: connections reset mid-response
and 503s are retried by the storage layer and give the local file's pixels;
a fault that persists is a :class:`RemoteSlideError` naming the URL (not a
hang, not a "corrupt slide"); a missing object, a missing bucket and refused
credentials are their own errors. No secret reaches a message, a traceback
or a log line.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tilestream.errors import (
    ConfigError,
    CorruptSlideError,
    RemoteSlideError,
    SlideAccessDeniedError,
    SlideNotFoundError,
)
from tilestream.slide import open_slide
from tilestream.slide.remote import remote_slide_version
from tilestream.storage import store_for
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

BUCKET = "slides-faults"
NAME = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer, cmu_slide: Path) -> str:
    name = seaweed.make_bucket(BUCKET)
    store, _ = store_for(f"s3://{name}", seaweed.storage_options)
    store.write_atomic(f"slides/{NAME}", cmu_slide.read_bytes())
    return name


@pytest.fixture
def options(seaweed: SeaweedServer, proxy: FaultProxy) -> dict[str, Any]:
    return {**seaweed.storage_options, "endpoint_url": proxy.url}


def _secrets_absent(seaweed: SeaweedServer, *texts: str) -> None:
    for text in texts:
        assert seaweed.secret_key not in text
        assert seaweed.read_only_secret not in text


def test_resets_and_503s_are_retried_to_the_same_pixels(
    bucket: str, proxy: FaultProxy, options: dict[str, Any], cmu_slide: Path
) -> None:
    url = f"s3://{bucket}/slides/{NAME}"
    with open_slide(cmu_slide) as local:
        expected = local.read_region((0, 0), 0, local.dimensions, as_array=True)
    proxy.reset_next(1)
    proxy.fail_next(1)
    with open_slide(url, storage_options=options) as slide:
        stats = slide.io_stats
        assert stats is not None and stats.retries >= 1
        width = slide.dimensions[0]
        for i in range(4):  # a band of stored tiles not fetched yet, after a fault each
            if i % 2:
                proxy.reset_next(1)
            else:
                proxy.fail_next(2)
            got = slide.read_region((0, 720 * i), 0, (width, 720), as_array=True)
            assert np.array_equal(got, expected[720 * i : 720 * (i + 1)])
        assert stats.retries >= 6
    assert proxy.counters.resets >= 2 and proxy.counters.failures == 5


def test_a_persistent_fault_is_a_remote_slide_error_naming_the_url(
    seaweed: SeaweedServer,
    bucket: str,
    proxy: FaultProxy,
    options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"s3://{bucket}/slides/{NAME}"
    with (
        caplog.at_level(logging.DEBUG, logger="tilestream"),
        open_slide(url, storage_options=options, cache_bytes=0) as slide,
    ):
        proxy.fail_next(1000)
        t0 = time.monotonic()
        with pytest.raises(RemoteSlideError) as info:
            slide.read_region((0, 0), 0, (500, 500), as_array=True)
        assert time.monotonic() - t0 < 60
        assert not isinstance(info.value, CorruptSlideError)
        assert str(info.value).startswith(f"{url}: ")
        assert "503" in str(info.value)
        _secrets_absent(seaweed, "".join(traceback.format_exception(info.value)), caplog.text)
        proxy.clear()  # the server answers again: the same handle reads on
        assert slide.read_region((0, 0), 0, (500, 500), as_array=True).shape == (500, 500, 3)
    proxy.reset_next(1000)
    with pytest.raises(RemoteSlideError, match=rf"^{url}: ") as info:
        open_slide(url, storage_options=options)
    _secrets_absent(seaweed, "".join(traceback.format_exception(info.value)), caplog.text)


def test_missing_object_bucket_and_refused_credentials(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = seaweed.storage_options
    missing = f"s3://{bucket}/slides/nope.svs"
    with caplog.at_level(logging.DEBUG, logger="tilestream"):
        with pytest.raises(SlideNotFoundError, match=rf"^{missing}: ") as info:
            open_slide(missing, storage_options=good)
        texts = ["".join(traceback.format_exception(info.value))]
        with pytest.raises(SlideNotFoundError, match=r"^s3://no-such-bucket-x/a\.svs: "):
            open_slide("s3://no-such-bucket-x/a.svs", storage_options=good)
        url = f"s3://{bucket}/slides/{NAME}"
        wrong = {**good, "secret": "not-" + seaweed.secret_key}
        with pytest.raises(SlideAccessDeniedError, match=rf"^{url}: ") as denied:
            open_slide(url, storage_options=wrong)
        texts.append("".join(traceback.format_exception(denied.value)))
        assert isinstance(denied.value, PermissionError)
        with pytest.raises(SlideAccessDeniedError):
            remote_slide_version(url, wrong)
        # A read-only identity reads slides.
        with open_slide(url, storage_options=seaweed.read_only_options) as slide:
            assert slide.dimensions == (2220, 2967)
            texts.append(repr(slide))
    _secrets_absent(seaweed, *texts, caplog.text)
    assert "not-" + seaweed.secret_key not in "".join(texts) + caplog.text


def test_missing_http_slide(seaweed: SeaweedServer, bucket: str) -> None:
    url = f"{seaweed.filer_url}/buckets/{bucket}/slides/nope.svs"
    with pytest.raises(SlideNotFoundError, match=rf"^{url}: "):
        open_slide(url)


def test_credentials_in_the_url_are_refused_without_echo(seaweed: SeaweedServer) -> None:
    url = f"s3://{seaweed.access_key}:{seaweed.secret_key}@{BUCKET}/slides/{NAME}"
    with pytest.raises(ConfigError, match="credentials in a URL are refused") as info:
        open_slide(url, storage_options=seaweed.storage_options)
    _secrets_absent(seaweed, "".join(traceback.format_exception(info.value)))
    with pytest.raises(SlideNotFoundError, match="names no object"):
        open_slide(f"s3://{BUCKET}/", storage_options=seaweed.storage_options)
