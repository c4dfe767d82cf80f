"""Staging: remote slides no backend reads by byte ranges, copied to scratch and removed.

A real SeaweedFS holds a DICOM series (a format only OpenSlide reads here) and
an SVS. ``stage="auto"`` stages the DICOM file with its series, ``"always"``
stages even the SVS, ``"never"`` refuses the DICOM file with a clear error;
the scratch folder is gone after ``close`` and after any failure, a truncated
download is an error, and an object over the staging limit is refused before
a byte is copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tilestream.errors import (
    RemoteSlideError,
    SlideTooLargeError,
    UnsupportedSlideError,
)
from tilestream.slide import SlideLimits, open_slide
from tilestream.slide.remote import RemoteSource, open_source
from tilestream.slide.staging import SCRATCH_ENV, stage_source
from tilestream.storage import Stat, store_for
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

BUCKET = "slides-staging"
DICOM = "dicom-openslide-boxes"


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer, slides_dir: Path, cmu_slide: Path) -> str:
    name = seaweed.make_bucket(BUCKET)
    store, _ = store_for(f"s3://{name}", seaweed.storage_options)
    for dcm in sorted((slides_dir / DICOM).glob("*.dcm")):
        store.write_atomic(f"{DICOM}/{dcm.name}", dcm.read_bytes())
    store.write_atomic(f"{DICOM}/notes.txt", b"not part of the series")
    store.write_atomic(f"svs/{cmu_slide.name}", cmu_slide.read_bytes())
    store.write_atomic("junk/not-a-slide.svs", b"plain text, not a slide" * 100)
    # A MIRAX layout (only its listing is staged here): a.mrxs and its folder a/.
    store.write_atomic("mirax/a.mrxs", b"[GENERAL]\n")
    store.write_atomic("mirax/a/Index.dat", b"index")
    store.write_atomic("mirax/a/Data0000.dat", b"data")
    store.write_atomic("mirax/ab.mrxs", b"another slide")
    return name


def _leftovers(scratch: Path) -> list[Path]:
    return sorted(scratch.glob("tilestream-stage-*"))


def test_auto_stages_a_dicom_series_and_removes_it_on_close(
    seaweed: SeaweedServer, bucket: str, slides_dir: Path, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/{DICOM}/boxes_0.dcm"
    local_path = slides_dir / DICOM / "boxes_0.dcm"
    with open_slide(local_path) as local:
        slide = open_slide(url, storage_options=seaweed.storage_options, scratch=tmp_path)
    with open_slide(local_path) as local, slide:
        assert slide.backend == local.backend == "openslide"
        assert str(slide.path) == url
        assert slide.io_stats is None  # read locally, from the staged copy
        assert slide.source_version
        (folder,) = _leftovers(tmp_path)
        staged = sorted(p.name for p in folder.iterdir())
        assert staged == sorted(p.name for p in (slides_dir / DICOM).glob("*.dcm"))
        assert slide.level_dimensions == local.level_dimensions
        assert dict(slide.properties).keys() == dict(local.properties).keys()
        for level, size in enumerate(local.level_dimensions):
            assert np.array_equal(
                np.asarray(slide.read_region((0, 0), level, size)),
                np.asarray(local.read_region((0, 0), level, size)),
            )
    assert _leftovers(tmp_path) == []


def test_never_refuses_what_only_staging_reads(seaweed: SeaweedServer, bucket: str) -> None:
    url = f"s3://{bucket}/{DICOM}/boxes_0.dcm"
    with pytest.raises(UnsupportedSlideError, match=rf"^{url}: .*stage='auto'"):
        open_slide(url, storage_options=seaweed.storage_options, stage="never")


def test_always_stages_even_a_tiff_and_scratch_comes_from_the_environment(
    seaweed: SeaweedServer,
    bucket: str,
    cmu_slide: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path))
    url = f"s3://{bucket}/svs/{cmu_slide.name}"
    with (
        open_slide(url, storage_options=seaweed.storage_options, stage="always") as slide,
        open_slide(cmu_slide) as local,
    ):
        assert slide.io_stats is None
        assert len(_leftovers(tmp_path)) == 1
        assert np.array_equal(
            slide.read_region((0, 0), 0, (1000, 1000), as_array=True),
            local.read_region((0, 0), 0, (1000, 1000), as_array=True),
        )
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="stage must be one of"):
        open_slide(url, storage_options=seaweed.storage_options, stage="sometimes")  # type: ignore[arg-type]


def test_scratch_removed_when_the_staged_file_cannot_be_opened(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/junk/not-a-slide.svs"
    with pytest.raises(UnsupportedSlideError):
        open_slide(url, storage_options=seaweed.storage_options, scratch=tmp_path)
    assert _leftovers(tmp_path) == []


def test_over_the_limit_is_refused_before_copying(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/{DICOM}/boxes_0.dcm"
    with pytest.raises(SlideTooLargeError, match=rf"^{url}: .*over the staging limit"):
        open_slide(
            url,
            storage_options=seaweed.storage_options,
            scratch=tmp_path,
            limits=SlideLimits(stage_bytes=1000),
        )
    assert _leftovers(tmp_path) == []


def test_a_truncated_download_is_an_error_not_a_slide(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    source = open_source(f"s3://{bucket}/svs/CMU-1-Small-Region.svs", seaweed.storage_options)
    # What the store declared when the slide was opened, longer than what it now serves.
    longer = RemoteSource(
        source.url, source.store, source.key, Stat(source.stat.size + 1000, source.stat.etag)
    )
    with pytest.raises(RemoteSlideError, match="truncated download"):
        stage_source(longer, max_bytes=1 << 30, scratch=tmp_path)
    assert _leftovers(tmp_path) == []


def test_mirax_stages_its_folder(seaweed: SeaweedServer, bucket: str, tmp_path: Path) -> None:
    source = open_source(f"s3://{bucket}/mirax/a.mrxs", seaweed.storage_options)
    staged = stage_source(source, max_bytes=1 << 20, scratch=tmp_path)
    try:
        files = sorted(p.relative_to(staged.folder).as_posix() for p in staged.folder.rglob("*"))
        assert files == ["a", "a.mrxs", "a/Data0000.dat", "a/Index.dat"]
        assert staged.path == staged.folder / "a.mrxs"
        assert (staged.folder / "a" / "Index.dat").read_bytes() == b"index"
    finally:
        staged.remove()
    assert _leftovers(tmp_path) == []
