"""The backend conformance suite again, with every slide in S3 (a real SeaweedFS) or over HTTP.

The tests of ``test_slide_conformance.py`` run unchanged; only the ``opened``
fixture differs: it uploads the case's file (with its DICOM series) and opens
it by URL with the case's backend. ``tifffile`` reads it by byte ranges; the
other backends (``openslide``, ``image``) get it staged to local scratch. The
references (OpenSlide on the local file, the decoded image) stay local, so a
remote read must give the local pixels and metadata exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slide.test_slide_conformance import (  # the suite, collected here again
    PAIRS,
    Case,
    _ids,
    case_path,  # noqa: F401 - fixtures
    generated_dir,  # noqa: F401
    real_pixels,  # noqa: F401
    test_associated_images,  # noqa: F401
    test_metadata,  # noqa: F401
    test_metadata_matches_openslide,  # noqa: F401
    test_pickle_and_close,  # noqa: F401
    test_read_region_arguments,  # noqa: F401
    test_read_region_as_array,  # noqa: F401
    test_read_region_fractional_matches_openslide,  # noqa: F401
    test_read_region_matches_reference,  # noqa: F401
    test_thumbnail_and_best_level,  # noqa: F401
)
from tilestream.slide import open_slide
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

BUCKET = "slides-conformance"

#: Every file case, in S3; the cases tifffile reads by byte ranges, over HTTP too.
REMOTE = [("s3", b, c) for b, c in PAIRS if not c.name.startswith("dicomweb:")] + [
    ("http", b, c) for b, c in PAIRS if b == "tifffile"
]


@pytest.fixture(scope="module")
def uploaded(seaweed: SeaweedServer) -> Callable[[Case, Path], str]:
    """Uploads a case's file (a DICOM file with its series) once; returns its key."""
    store, _ = store_for(f"s3://{seaweed.make_bucket(BUCKET)}", seaweed.storage_options)
    done: dict[str, str] = {}

    def upload(case: Case, path: Path) -> str:
        if case.name not in done:
            files = sorted(path.parent.glob("*.dcm")) if path.suffix == ".dcm" else [path]
            for f in files:
                key = f"{path.parent.name}/{f.name}"
                if not store.exists(key):
                    store.write_atomic(key, f.read_bytes())
            done[case.name] = f"{path.parent.name}/{path.name}"
        return done[case.name]

    return upload


@pytest.fixture(params=REMOTE, ids=[f"{s}-{_ids((b, c))}" for s, b, c in REMOTE])
def opened(
    request: pytest.FixtureRequest,
    seaweed: SeaweedServer,
    uploaded: Callable[[Case, Path], str],
    case_path: Callable[[Case], Path | str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[str, Case, Path | str, Any]]:
    storage, backend, case = request.param
    local = case_path(case)
    key = uploaded(case, Path(local))
    if storage == "s3":
        url, options = f"s3://{BUCKET}/{key}", seaweed.storage_options
    else:
        url, options = f"{seaweed.filer_url}/buckets/{BUCKET}/{key}", None
    with open_slide(
        url, backend=backend, storage_options=options, scratch=tmp_path, stage="auto"
    ) as slide:
        assert (slide.io_stats is not None) == (backend == "tifffile")
        yield backend, case, local, slide
    assert not list(tmp_path.glob("tilestream-stage-*"))  # a staged copy is gone on close
