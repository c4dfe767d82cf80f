"""The batch over every real slide, run again with the slides in S3 and the outputs in a bucket.

The shared folder (Aperio, NDPI, generic TIFF, DICOM series, and broken,
unopenable, tiny and resolution-less files) is uploaded to SeaweedFS as it is
on disk; an extraction of that prefix into another prefix gives every slide the
status and error type of the local batch, and each good slide's TFRecord,
index and coordinates byte for byte. TIFF-family slides are read by ranges,
DICOM series are staged; a failure names the URL, never the credentials.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tilestream.extract import extract_slides
from tilestream.runfolder import slide_output_names
from tilestream.storage import Store
from tilestream.testing.seaweedfs import SeaweedServer

BUCKET = "rbatch"  # the module's bucket (tests/conftest.py: bucket, store)

OPTIONS = {"tile_px": 128, "tile_um": "10x"}
LABEL = "128px_10x"


@pytest.fixture(scope="module")
def uploaded(slides_dir: Path, store: Store, bucket: str) -> str:
    """The shared slides folder under ``s3://<bucket>/testdata/``, file for file."""
    for path in sorted(slides_dir.rglob("*")):
        if path.is_file() and path.name != "SOURCES.md":
            store.write_atomic(
                f"testdata/{path.relative_to(slides_dir).as_posix()}", path.read_bytes()
            )
    return f"s3://{bucket}/testdata/"


def test_every_real_slide_from_a_bucket_into_a_bucket(
    slides_dir: Path,
    uploaded: str,
    store: Store,
    bucket: str,
    seaweed: SeaweedServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = extract_slides([slides_dir], tmp_path / "local", workers=2, **OPTIONS)
    remote = extract_slides(
        [uploaded], f"s3://{bucket}/out", workers=2, storage_options=seaweed.storage_options,
        scratch=tmp_path / "scratch", **OPTIONS,
    )  # fmt: skip
    mine = {r.slide: r for r in local.results}
    theirs = {r.slide: r for r in remote.results}
    assert set(theirs) == set(mine) and len(mine) >= 12
    for name, here in mine.items():
        there = theirs[name]
        assert (there.status, there.error_type, there.tiles) == (
            here.status, here.error_type, here.tiles,
        ), name  # fmt: skip
        if there.status == "failed":
            assert "tilestream-stage" not in (there.error or ""), there.error  # no scratch path
            if str(slides_dir) in (here.error or ""):  # where the local error names the file
                assert f"{uploaded}{name}" in (there.error or ""), there.error  # the URL
    done = [n for n, r in mine.items() if r.status == "done"]
    assert {"CMU-1-Small-Region", "test3-DAPI-2-387"} <= set(done)
    for name in done:
        rel = slide_output_names(name)
        for kind in ("tfrecord", "coords"):
            remote_bytes = store.read(f"out/{LABEL}/{rel[kind]}")
            assert remote_bytes == (local.run_dir / rel[kind]).read_bytes(), (name, kind)
        index = np.load(io.BytesIO(store.read(f"out/{LABEL}/{rel['index']}")))
        assert np.array_equal(index["arr_0"], np.load(local.run_dir / rel["index"])["arr_0"])
    summary = json.loads(store.read(f"out/{LABEL}/summary.json"))
    assert (summary["done"], summary["failed"]) == (local.done, len(local.failed))
    written = b"".join(store.read(k) for k in store.list(f"out/{LABEL}"))
    assert seaweed.secret_key.encode() not in written
    assert seaweed.secret_key not in caplog.text
    assert not any((tmp_path / "scratch").iterdir())
