"""Extraction's tile reads from a slide in S3: the local bytes, coalesced requests, little waste.

The planning and tile stages of extraction (``plan_slide``, ``iter_encoded_tiles``
with its grid-order read-ahead) run on a real slide in SeaweedFS and on the
local file: every encoded tile is the same, byte for byte; the stored tiles
come in far fewer requests than tiles, and the bytes fetched are at most 1.2
times those of the stored tiles the grid needs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tilestream.extract.config import ExtractConfig
from tilestream.extract.plan import plan_slide, slide_opener
from tilestream.extract.task import SlideTask
from tilestream.extract.tiles import iter_encoded_tiles
from tilestream.slide import Slide, open_slide
from tilestream.storage import IOStats, store_for
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

BUCKET = "slides-extract"


@pytest.mark.parametrize(
    ("tile_px", "tile_um", "threads"),
    [(256, 128.0, 2), (299, 302.0, 1), (240, 119.76, 2)],  # assembled, re-encoded, passed through
)
def test_remote_extraction_gives_the_local_tiles(
    seaweed: SeaweedServer, cmu_slide: Path, tile_px: int, tile_um: float, threads: int
) -> None:
    store, _ = store_for(f"s3://{seaweed.make_bucket(BUCKET)}", seaweed.storage_options)
    store.write_atomic(cmu_slide.name, cmu_slide.read_bytes())
    url = f"s3://{BUCKET}/{cmu_slide.name}"
    config = ExtractConfig(tile_px=tile_px, tile_um=tile_um)
    opened: list[Slide] = []

    def remote() -> Slide:
        slide = open_slide(url, storage_options=seaweed.storage_options)
        assert slide.io_stats is not None
        slide.io_stats.reset()  # count the tiles' traffic, not the header's
        opened.append(slide)
        return slide

    task = SlideTask(url, "cmu", storage_options=seaweed.storage_options)
    with slide_opener(task, config)() as slide:
        assert slide.io_stats is not None
    plan = plan_slide(task, config, opener=remote)
    local_plan = plan_slide(SlideTask(str(cmu_slide), "cmu"), config)
    assert plan.grid.xs.tolist() == local_plan.grid.xs.tolist()
    assert (plan.passthrough, plan.assemble) == (local_plan.passthrough, local_plan.assemble)
    indices = list(range(len(plan.grid)))
    modes = {"passthrough": plan.passthrough, "assemble": plan.assemble}

    def tiles(opener: functools.partial[Slide] | object) -> list[bytes]:
        return [
            t.data
            for t in iter_encoded_tiles(
                opener,  # type: ignore[arg-type]
                plan.grid,
                indices,
                config,
                threads=threads,
                **modes,
            )
        ]

    got = tiles(remote)
    assert got == tiles(functools.partial(open_slide, cmu_slide))
    stats: IOStats | None = opened[-1].io_stats
    assert stats is not None
    with open_slide(cmu_slide) as local:
        level = local._impl.stored_level(plan.grid.level)  # type: ignore[attr-defined]
        ds = local.level_downsamples[plan.grid.level]
        boxes = [
            (round(x / ds), round(y / ds), plan.grid.read_px, plan.grid.read_px)
            for x, y in zip(plan.grid.xs, plan.grid.ys, strict=True)
        ]
        needed = level.missing_in(boxes)
    assert stats.bytes_read <= 1.2 * sum(n for _, n in needed)
    assert stats.requests * 4 <= len(needed), (stats.requests, len(needed))
