"""Slide and ROI objects in a real S3 server (SeaweedFS): fingerprints for resume, ROI files by URL."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tilestream.errors import ROIError
from tilestream.extract.fingerprint import (
    fingerprint_matches,
    object_fingerprint,
    source_fingerprint,
)
from tilestream.extract.roi import load_rois
from tilestream.storage import Store, store_for
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer

BUCKET = "rextract-sources"  # the module's bucket (tests/conftest.py: bucket, store)


@pytest.fixture
def slide_url(store: Store, bucket: str, cmu_slide: Path, request: pytest.FixtureRequest) -> str:
    key = f"{request.node.name}-{os.getpid()}/CMU-1-Small-Region.svs"
    store.write_atomic(key, cmu_slide.read_bytes())
    return f"s3://{bucket}/{key}"


def test_object_fingerprint_sees_a_rewrite_and_a_removal(
    slide_url: str, store: Store, seaweed: SeaweedServer, cmu_slide: Path
) -> None:
    opts = seaweed.storage_options
    fp = source_fingerprint(slide_url, storage_options=opts)
    assert fp == object_fingerprint(slide_url, opts)
    assert fp["size"] == cmu_slide.stat().st_size and fp["object_version"]
    assert seaweed.secret_key not in json.dumps(fp) and seaweed.access_key not in json.dumps(fp)
    assert fingerprint_matches(fp, slide_url, storage_options=opts)
    key = slide_url.split("/", 3)[3]
    data = bytearray(cmu_slide.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside the file, same size
    store.write_atomic(key, bytes(data))
    assert not fingerprint_matches(fp, slide_url, storage_options=opts)
    store.delete(key)
    assert not fingerprint_matches(fp, slide_url, storage_options=opts)
    # a local file's fingerprint never matches an object's, nor the other way round
    assert not fingerprint_matches(fp, cmu_slide)
    assert not fingerprint_matches(source_fingerprint(cmu_slide), slide_url, storage_options=opts)


def test_store_that_cannot_answer_keeps_a_slide_complete(
    slide_url: str,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    fp = object_fingerprint(slide_url, opts)
    proxy.fail_next(1000, status=503)
    with caplog.at_level(logging.WARNING):
        assert fingerprint_matches(fp, slide_url, storage_options=opts)
    proxy.clear()
    assert "kept as complete" in caplog.text and seaweed.secret_key not in caplog.text


def test_roi_file_by_url(store: Store, bucket: str, seaweed: SeaweedServer, tmp_path: Path) -> None:
    left = [[0, 0], [1100, 0], [1100, 2967], [0, 2967], [0, 0]]
    geojson = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "left"},
         "geometry": {"type": "Polygon", "coordinates": [left]}},
    ]}  # fmt: skip
    local = tmp_path / "roi.geojson"
    local.write_text(json.dumps(geojson))
    key = f"rois-{os.getpid()}/roi.geojson"
    store.write_atomic(key, local.read_bytes())
    remote = load_rois(f"s3://{bucket}/{key}", storage_options=seaweed.storage_options)
    here = load_rois(local)
    assert [r.name for r in remote] == [r.name for r in here]
    assert all(np.array_equal(a.exterior, b.exterior) for a, b in zip(remote, here, strict=True))
    with pytest.raises(ROIError, match="not found") as info:
        load_rois(f"s3://{bucket}/nope/roi.geojson", storage_options=seaweed.storage_options)
    assert f"s3://{bucket}/nope/roi.geojson" in str(info.value)
    assert seaweed.secret_key not in str(info.value)


def test_resume_redoes_a_slide_object_that_changed(
    slide_url: str, store: Store, bucket: str, seaweed: SeaweedServer, cmu_slide: Path
) -> None:
    from tilestream.extract import extract_slides

    opts = seaweed.storage_options
    prefix = f"s3://{bucket}/resume-{os.getpid()}"
    kw = {"tile_px": 128, "tile_um": 256, "workers": 1, "storage_options": opts}
    first = extract_slides([slide_url], prefix, **kw)
    assert first.done == 1
    assert extract_slides([slide_url], prefix, **kw).skipped == 1
    key = slide_url.split("/", 3)[3]
    data = bytearray(cmu_slide.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside a tile's JPEG data, same size
    store.write_atomic(key, bytes(data))
    again = extract_slides([slide_url], prefix, **kw)
    assert [r.status for r in again.results] == ["done"]
    assert extract_slides([slide_url], prefix, **kw).skipped == 1


def test_a_missing_slide_object_is_one_failure_in_the_batch(
    slide_url: str, store: Store, bucket: str, seaweed: SeaweedServer
) -> None:
    from tilestream.extract import extract_slides

    opts = seaweed.storage_options
    missing = f"s3://{bucket}/nowhere-{os.getpid()}/gone.svs"
    prefix = f"s3://{bucket}/batch-{os.getpid()}"
    run = extract_slides([slide_url, missing], prefix, tile_px=128, tile_um=256, workers=1,
                         storage_options=opts)  # fmt: skip
    assert {r.slide: r.status for r in run.results} == {"CMU-1-Small-Region": "done",
                                                         "gone": "failed"}  # fmt: skip
    (failed,) = run.failed
    assert missing in (failed.error or "") and seaweed.secret_key not in (failed.error or "")
    _, key = store_for(prefix, opts)
    state = json.loads(store.read(f"{key}/128px_256um/state/gone.json"))
    assert state["status"] == "failed" and state["path"] == missing
