"""Extraction of slides read from S3 by range requests: the same outputs as from the local files.

Real slides uploaded to a real S3 server (SeaweedFS), extracted with
``s3://`` slide URLs into a local run folder and into a bucket; both equal the
extraction of the same files on disk, byte for byte, with stored tiles copied
and assembled as locally. The reads are counted: the slide is never
downloaded whole, and the requests stay few.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tilestream.extract import extract_slides
from tilestream.runfolder import slide_output_names
from tilestream.slide import open_slide
from tilestream.storage import Store
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.testing.synthetic import make_synthetic_slide

BUCKET = "rslidex"  # the module's bucket (tests/conftest.py: bucket, store)

# Two geometries: 128 px over 256 um resizes (re-encodes); 256 px at level 0 of the
# generated slide copies its 256 px stored tiles.
CASES = {
    "resized": ({"tile_px": 128, "tile_um": 256}, "128px_256um"),
    "copied": ({"tile_px": 256, "tile_um": 128}, "256px_128um"),
}
_n = itertools.count()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> list[Path]:
    """A real Aperio slide, and a larger one made of its stored JPEG tiles (0.5 um/px)."""
    folder = tmp_path_factory.mktemp("slides")
    real = folder / "CMU-1-Small-Region.svs"
    shutil.copy2(slides_dir / real.name, real)
    made = folder / "generated.svs"
    make_synthetic_slide(made, width=3072, height=2048, tile_size=256, seed=3, source_tiles=real)
    return [real, made]


@pytest.fixture(scope="module")
def urls(slides: list[Path], store: Store, bucket: str) -> list[str]:
    out = []
    for path in slides:
        key = f"slides/{path.name}"
        store.write_atomic(key, path.read_bytes())
        out.append(f"s3://{bucket}/{key}")
    return out


def _same_outputs(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        rel = slide_output_names(name)
        for kind in ("tfrecord", "coords", "rejected"):
            assert (a / rel[kind]).read_bytes() == (b / rel[kind]).read_bytes(), (name, kind)
        left, right = np.load(a / rel["index"]), np.load(b / rel["index"])
        for arr in ("arr_0", "locations"):
            assert np.array_equal(left[arr], right[arr]), (name, arr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_s3_slides_extract_to_the_same_outputs_as_the_files(
    case: str,
    slides: list[Path],
    urls: list[str],
    seaweed: SeaweedServer,
    tmp_path: Path,
) -> None:
    options, label = CASES[case]
    local = extract_slides(slides, tmp_path / "local", workers=1, **options)
    remote = extract_slides(
        urls, tmp_path / "remote", workers=1, storage_options=seaweed.storage_options, **options
    )
    assert local.done == remote.done == 2 and not remote.failed
    by_name = {r.slide: r for r in remote.results}
    for mine in local.results:
        theirs = by_name[mine.slide]
        assert (theirs.tiles, theirs.passthrough, theirs.assembled) == (
            mine.tiles, mine.passthrough, mine.assembled,
        )  # fmt: skip
    if case == "copied":
        assert by_name["generated"].passthrough == by_name["generated"].tiles > 0
    _same_outputs(tmp_path / "local" / label, tmp_path / "remote" / label, [p.stem for p in slides])


def test_s3_slides_to_a_bucket_equal_the_local_run(
    slides: list[Path], urls: list[str], seaweed: SeaweedServer, store: Store, bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    options, label = CASES["resized"]
    local = extract_slides(slides, tmp_path / "local", workers=1, **options)
    prefix = f"runs/t{os.getpid()}-{next(_n)}"
    remote = extract_slides(
        urls, f"s3://{bucket}/{prefix}", workers=2, storage_options=seaweed.storage_options,
        scratch=tmp_path / "scratch", **options,
    )  # fmt: skip
    assert local.done == remote.done == 2
    fetched = tmp_path / "fetched"
    for name in (p.stem for p in slides):
        for kind, rel in slide_output_names(name).items():
            key = f"{prefix}/{label}/{rel}"
            if kind in ("tfrecord", "index", "coords", "rejected"):
                target = fetched / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(store.read(key))
    _same_outputs(tmp_path / "local" / label, fetched, [p.stem for p in slides])


def test_a_slide_is_read_by_ranges_not_downloaded(
    urls: list[str], slides: list[Path], seaweed: SeaweedServer
) -> None:
    """Opening reads a few header blocks; reading all of level 0 fetches about the slide's bytes."""
    with open_slide(urls[1], storage_options=seaweed.storage_options) as slide:
        stats = slide.io_stats
        assert stats is not None
        opened = stats.bytes_read
        assert opened <= 1 << 20, "opening reads a few header blocks, not the file"
        w, h = slide.dimensions
        for y in range(0, h, 1024):
            slide.read_region((0, y), 0, (w, min(1024, h - y)))
        tiles = (w // 256) * (h // 256)
        assert stats.requests < tiles / 4, (stats.requests, tiles)
        with tifffile.TiffFile(slides[1]) as tif:
            stored = sum(tif.pages[0].databytecounts)
        assert stats.bytes_read - opened <= 1.2 * stored, (stats.bytes_read - opened, stored)
