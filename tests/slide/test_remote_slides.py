"""Slides in S3 (a real SeaweedFS) and over HTTP read by byte ranges: the local file's pixels.

Each slide is uploaded once per session to the bucket ``slides-remote``; the
local file is the reference (its metadata, whole levels, regions, stored
tiles, thumbnails, Deep Zoom tiles). The request counters show that the stored
tiles a region needs come in one coalesced request set, not one per tile.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tilestream.slide import DeepZoomGenerator, Slide, open_slide
from tilestream.slide.remote import remote_slide_version
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

BUCKET = "slides-remote"
SLIDES = [
    "CMU-1-Small-Region.svs",
    "tcga-cr-7395-01a-01-ts1.svs",
    "test3-DAPI-2-387.ndpi",
    "openslide-python-boxes.tiff",
    "kidney-48-5.tif",
]


@pytest.fixture(scope="session")
def remote_bucket(seaweed: SeaweedServer, slides_dir: Path) -> str:
    """The bucket holding the test slides under ``slides/`` (uploaded once)."""
    bucket = seaweed.make_bucket(BUCKET)
    store, _ = store_for(f"s3://{bucket}", seaweed.storage_options)
    for name in SLIDES:
        store.write_atomic(f"slides/{name}", (slides_dir / name).read_bytes())
    return bucket


@pytest.fixture(params=SLIDES)
def pair(
    request: pytest.FixtureRequest, seaweed: SeaweedServer, remote_bucket: str, slides_dir: Path
) -> Iterator[tuple[Slide, Slide]]:
    """(remote, local) handles on one slide."""
    name = request.param
    url = f"s3://{remote_bucket}/slides/{name}"
    with (
        open_slide(url, storage_options=seaweed.storage_options) as remote,
        open_slide(slides_dir / name) as local,
    ):
        yield remote, local


def _same_metadata(remote: Slide, local: Slide) -> None:
    assert remote.backend == local.backend == "tifffile"
    assert remote.level_dimensions == local.level_dimensions
    assert remote.level_downsamples == local.level_downsamples
    assert dict(remote.properties) == dict(local.properties)
    assert remote.mpp == local.mpp
    assert remote.color_profile == local.color_profile
    assert sorted(remote.associated_images) == sorted(local.associated_images)
    for level in range(local.level_count):
        assert remote.level_tile_size(level) == local.level_tile_size(level)
        assert remote.stored_tile_grid(level) == local.stored_tile_grid(level)


def test_metadata_and_whole_levels_equal_the_local_file(pair: tuple[Slide, Slide]) -> None:
    remote, local = pair
    _same_metadata(remote, local)
    for level, (w, h) in enumerate(local.level_dimensions):
        if w * h > 12_000_000:
            continue
        got = remote.read_region((0, 0), level, (w, h), as_array=True)
        assert np.array_equal(got, local.read_region((0, 0), level, (w, h), as_array=True))
    for name, image in local.associated_images.items():
        assert np.array_equal(np.asarray(remote.associated_images[name]), np.asarray(image))
    stats = remote.io_stats
    assert stats is not None and stats.requests > 0 and stats.bytes_read > 0
    assert local.io_stats is None


def test_regions_tiles_thumbnail_and_deepzoom_equal_the_local_file(
    pair: tuple[Slide, Slide],
) -> None:
    remote, local = pair
    rng = np.random.default_rng(7)
    for level, (w, h) in enumerate(local.level_dimensions):
        ds = local.level_downsamples[level]
        for _ in range(8):
            rw, rh = int(rng.integers(1, 700)), int(rng.integers(1, 700))
            x, y = int(rng.integers(-50, w)), int(rng.integers(-50, h))
            loc = (int(x * ds), int(y * ds))
            assert np.array_equal(
                np.asarray(remote.read_region(loc, level, (rw, rh))),
                np.asarray(local.read_region(loc, level, (rw, rh))),
            )
            assert np.array_equal(
                remote.read_region_reduced((0, 0), level, (64, 64), 2),
                local.read_region_reduced((0, 0), level, (64, 64), 2),
            )
        grid = local.stored_tile_grid(level)
        if grid is not None:
            assert remote.read_stored_tile_bytes(level, 0, 0) == local.read_stored_tile_bytes(
                level, 0, 0
            )
    assert np.array_equal(
        np.asarray(remote.get_thumbnail((300, 300))), np.asarray(local.get_thumbnail((300, 300)))
    )
    dz_remote, dz_local = DeepZoomGenerator(remote), DeepZoomGenerator(local)
    top = dz_local.level_count - 1
    for address in [(0, 0), (1, 1), (2, 0)]:
        cols, rows = dz_local.level_tiles[top]
        if address[0] < cols and address[1] < rows:
            assert np.array_equal(
                np.asarray(dz_remote.get_tile(top, address)),
                np.asarray(dz_local.get_tile(top, address)),
            )


def test_http_url_reads_the_same_pixels(
    seaweed: SeaweedServer, remote_bucket: str, cmu_slide: Path
) -> None:
    url = f"{seaweed.filer_url}/buckets/{remote_bucket}/slides/CMU-1-Small-Region.svs"
    with open_slide(url) as remote, open_slide(cmu_slide) as local:
        _same_metadata(remote, local)
        w, h = local.dimensions
        assert np.array_equal(
            remote.read_region((0, 0), 0, (w, h), as_array=True),
            local.read_region((0, 0), 0, (w, h), as_array=True),
        )
        assert str(remote.path) == url


def test_one_coalesced_request_per_region(
    seaweed: SeaweedServer, remote_bucket: str, cmu_slide: Path
) -> None:
    url = f"s3://{remote_bucket}/slides/CMU-1-Small-Region.svs"
    with open_slide(url, storage_options=seaweed.storage_options) as slide:
        stats = slide.io_stats
        assert stats is not None
        opened = stats.requests
        assert opened <= 6, f"opening took {opened} requests"
        before = stats.requests
        # 960 x 480 px at (0, 0): 4 x 2 stored 240 px tiles, two runs of contiguous bytes.
        slide.read_region((0, 0), 0, (960, 480), as_array=True)
        assert stats.requests - before <= 2
        before = stats.requests
        slide.read_region((0, 0), 0, (960, 480), as_array=True)  # decoded: nothing fetched
        assert stats.requests == before


def test_prefetch_reads_ahead_and_is_free_for_files(
    seaweed: SeaweedServer, remote_bucket: str, cmu_slide: Path
) -> None:
    url = f"s3://{remote_bucket}/slides/CMU-1-Small-Region.svs"
    with open_slide(url, storage_options=seaweed.storage_options) as slide:
        stats = slide.io_stats
        assert stats is not None
        slide.prefetch(0, [((0, 480), (960, 240))])
        import time

        deadline = time.monotonic() + 10
        requests = stats.requests
        while time.monotonic() < deadline:  # the background fetch lands
            time.sleep(0.05)
            if stats.requests > requests and stats.bytes_read:
                break
        time.sleep(0.2)
        before = stats.requests
        slide.read_region((0, 480), 0, (960, 240), as_array=True)
        assert stats.requests == before
    with open_slide(cmu_slide) as local:
        local.prefetch(0, [((0, 0), (960, 480))])
        assert local.io_stats is None


def test_version_and_pickle(seaweed: SeaweedServer, remote_bucket: str, cmu_slide: Path) -> None:
    url = f"s3://{remote_bucket}/slides/CMU-1-Small-Region.svs"
    version = remote_slide_version(url, seaweed.storage_options)
    assert version
    with open_slide(url, storage_options=seaweed.storage_options) as slide:
        assert slide.source_version == version
        assert seaweed.secret_key not in repr(slide)
        clone = pickle.loads(pickle.dumps(slide))
        try:
            assert clone.dimensions == slide.dimensions
            assert np.array_equal(
                clone.read_region((0, 0), 0, (300, 300), as_array=True),
                slide.read_region((0, 0), 0, (300, 300), as_array=True),
            )
        finally:
            clone.close()
