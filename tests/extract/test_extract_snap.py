"""The snapped tile grid: tiles within tolerance of a level's native tiles are read as they are.

Aperio scanners write 0.499 um/px: 128 um is 256.51 level-0 px. The exact grid
rounds that to 257 and resizes every tile 257 -> 256; ``grid="snap"`` reads 256
native pixels (127.744 um), which is also the grid Slideflow computes.

The extractions run again with the slides read from SeaweedFS (``storage``): the same
grid and outputs, byte for byte (``tests/extract/conftest.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from _remote import Remote, storage_kinds
from tilestream.errors import ExtractionError
from tilestream.extract import extract_tiles
from tilestream.extract.config import SNAP_TOLERANCE, ExtractConfig
from tilestream.extract.grid import Grid, extract_px_for, plan_grid
from tilestream.slide import open_slide
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.tfrecord import TFRecord, decode_image

APERIO_MPP = 0.499
CFG = ExtractConfig(tile_px=256, tile_um=128)
PYRAMID = (1.0, 4.0, 16.0)


def _grid(config: ExtractConfig, mpp: float | None, **kw: object) -> Grid:
    args: dict[str, object] = {"dimensions": (20_000, 15_000), "downsamples": PYRAMID, "mpp": mpp}
    args.update(kw)
    return plan_grid(config, **args)  # type: ignore[arg-type]


def _coords(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# -- the grid arithmetic -------------------------------------------------------------------


def test_snap_fires_within_tolerance_on_the_aperio_geometry() -> None:
    g = _grid(CFG, APERIO_MPP)
    assert (g.extract_px, g.level, g.read_px, g.stride) == (256, 0, 256, 256)
    assert g.snapped and not g.needs_resize
    assert g.exact_px == pytest.approx(128 / APERIO_MPP)
    assert g.tile_um(APERIO_MPP) == pytest.approx(127.744)
    assert (g.xs % 256 == 0).all() and (g.ys % 256 == 0).all()


def test_snap_fires_either_side_and_not_outside_the_tolerance() -> None:
    # a pixel size just coarser than 0.5: 254.7 px, which the exact grid refuses (upsampling)
    below = _grid(CFG, 0.5025)
    assert below.snapped and (below.extract_px, below.read_px) == (256, 256)
    with pytest.raises(ExtractionError, match="upsampling"):
        _grid(CFG.replace(grid="exact"), 0.5025)
    # right at the tolerance: snaps; just past it: the exact extent, resized
    at_edge = _grid(CFG, 128 / (256 * (1 + SNAP_TOLERANCE * 0.999)))
    assert at_edge.snapped and at_edge.extract_px == 256
    past = _grid(CFG, 128 / (256 * (1 + SNAP_TOLERANCE * 1.01)))
    assert not past.snapped and past.extract_px == 259 and past.needs_resize
    # exactly on the native grid: nothing to snap
    on = _grid(CFG, 0.5)
    assert (on.extract_px, on.snapped, on.needs_resize) == (256, False, False)


def test_snap_to_a_coarser_level_and_for_magnifications() -> None:
    # 512 um at 0.499 um/px is 1026 px: level 1's native 256 px (1024 level-0 px)
    g = _grid(CFG.replace(tile_um=512), APERIO_MPP)
    assert (g.extract_px, g.level, g.read_px, g.snapped) == (1024, 1, 256, True)
    assert g.stride == 1024  # the tiles of level 1 side by side
    # the exact grid reads the same 256 px of level 1 (1024 level-0 px) but steps 1026 px
    exact = _grid(CFG.replace(tile_um=512, grid="exact"), APERIO_MPP)
    assert (exact.extract_px, exact.level, exact.read_px, exact.stride) == (1026, 1, 256, 1026)
    # a level measured from rounded sizes (4.0003) snaps to 256 of its own pixels
    odd = _grid(CFG.replace(tile_um=512), APERIO_MPP, downsamples=(1.0, 4.0003, 16.001))
    assert (odd.extract_px, odd.level, odd.read_px) == (1024, 1, 256)
    # a magnification is relative the same way: 20x from 0.499 um/px is 256.5 px
    mag = _grid(CFG.replace(tile_um="20x"), APERIO_MPP)
    assert (mag.extract_px, mag.read_px, mag.snapped) == (256, 256, True)
    mag_exact = _grid(CFG.replace(tile_um="20x", grid="exact"), APERIO_MPP)
    assert (mag_exact.extract_px, mag_exact.read_px) == (257, 257)
    # 10x of a 40x slide (objective power): 1024 px, on level 1 either way
    ten = _grid(CFG.replace(tile_um="10x"), None, objective_power=40)
    assert (ten.extract_px, ten.level, ten.read_px, ten.snapped) == (1024, 1, 256, False)


def test_a_size_deliberately_off_the_native_scale_is_kept() -> None:
    # Slideflow's 299 px / 302 um at 0.25 um/px is 1208 px, just over 1 % from 4 x 299
    g = _grid(ExtractConfig(tile_px=299, tile_um=302), 0.25)
    assert (g.extract_px, g.level, g.read_px, g.snapped) == (1208, 1, 302, False)
    assert g.needs_resize


def test_exact_keeps_the_old_grid() -> None:
    exact = CFG.replace(grid="exact")
    g = _grid(exact, APERIO_MPP)
    assert (g.extract_px, g.level, g.read_px, g.stride) == (257, 0, 257, 257)
    assert not g.snapped and g.needs_resize
    assert g.extract_px == extract_px_for(exact, mpp=APERIO_MPP, objective_power=None)
    assert (g.xs % 257 == 0).all()


def test_the_grid_mode_is_part_of_the_config_hash() -> None:
    snap, exact = CFG, CFG.replace(grid="exact")
    assert CFG.grid == "snap" and snap.hash() != exact.hash()
    # an exact config keeps the hash of runs made before the option existed
    before = {k: v for k, v in exact.to_dict().items() if k != "grid"}
    assert exact.hash() == ExtractConfig.from_dict(before).replace(grid="exact").hash()
    assert ExtractConfig.from_dict(snap.to_dict()) == snap
    with pytest.raises(Exception, match="grid must be"):
        CFG.replace(grid="nearest")  # type: ignore[arg-type]


# -- Slideflow's grid ------------------------------------------------------------------------


def slideflow_grid(
    dimensions: tuple[int, int],
    mpp: float,
    tile_px: int,
    tile_um: int,
    *,
    stride_div: int = 1,
    use_edge_tiles: bool = False,
) -> tuple[int, int, np.ndarray]:
    """Slideflow's tile grid for a microns ``tile_um``: ``(full_extract_px, extract_px, centres)``.

    Slideflow's arithmetic, reproduced from slideflow/slideflow
    ``slideflow/slide/wsi.py`` (``WSI._configure_downsample`` and
    ``WSI._build_coord``) and ``slideflow/slide/backends/*.py`` (``tile_worker``):

    - ``full_extract_px = int(tile_um / mpp)`` (truncated);
    - the level is ``best_level_for_downsample(full_extract_px / tile_px)``
      (level 0 here) and ``extract_px = full_extract_px // downsample``;
    - ``full_stride = int(np.round(full_extract_px / stride_div))``;
    - top-left corners ``np.arange(0, dim + 1 - edge_buffer, full_stride)`` per
      axis (``edge_buffer`` is ``full_extract_px``, 0 with edge tiles), rows of
      ``y`` then ``x``;
    - a tile's location is ``int(x + full_extract_px / 2)``.
    """
    full_extract_px = int(tile_um / mpp)
    extract_px = full_extract_px // 1  # level 0: downsample 1
    full_stride = int(np.round(full_extract_px / stride_div))
    edge_buffer = 0 if use_edge_tiles else full_extract_px
    ys = np.arange(0, dimensions[1] + 1 - edge_buffer, full_stride)
    xs = np.arange(0, dimensions[0] + 1 - edge_buffer, full_stride)
    centres = [(int(x + full_extract_px / 2), int(y + full_extract_px / 2)) for y in ys for x in xs]
    return full_extract_px, extract_px, np.asarray(centres, dtype=np.int64)


@pytest.mark.parametrize("stride_div", [1, 2, 4])
def test_snapped_centres_equal_slideflows_on_the_aperio_geometry(stride_div: int) -> None:
    dims = (20_000, 15_000)
    full_px, read_px, sf_centres = slideflow_grid(dims, APERIO_MPP, 256, 128, stride_div=stride_div)
    g = plan_grid(
        CFG.replace(stride_div=stride_div), dimensions=dims, downsamples=PYRAMID, mpp=APERIO_MPP
    )
    assert (g.extract_px, g.read_px) == (full_px, read_px) == (256, 256)
    np.testing.assert_array_equal(g.centers, sf_centres)
    # the exact grid's tiles are 257 px (resized); without overlap its stride is 257, so
    # its centres drift a pixel a tile from Slideflow's (with overlap the floored stride
    # happens to be Slideflow's: the same centres, tiles a pixel larger)
    e = plan_grid(
        CFG.replace(stride_div=stride_div, grid="exact"),
        dimensions=dims,
        downsamples=PYRAMID,
        mpp=APERIO_MPP,
    )
    assert e.extract_px == 257 and e.needs_resize
    if stride_div == 1:
        assert len(e) < len(sf_centres) and not np.array_equal(
            e.centers[: len(e)], sf_centres[: len(e)]
        )


def test_where_tilestream_and_slideflow_grids_still_differ() -> None:
    """Stated, not hidden: the cases where the two grids are not the same."""
    dims = (20_000, 15_000)
    # 1. Slideflow truncates: a size just under the native grid (254.7 px at 0.5025) is
    #    254 px read and upsampled to 256; tilestream snaps it to 256 native px.
    sf_px, _, _ = slideflow_grid(dims, 0.5025, 256, 128)
    assert sf_px == 254 and _grid(CFG, 0.5025).extract_px == 256
    # 2. outside the tolerance tilestream rounds where Slideflow truncates: 259.9 px is
    #    260 here, 259 there (both resize)
    sf_px, _, _ = slideflow_grid(dims, 0.4925, 256, 128)
    assert sf_px == 259 and _grid(CFG, 0.4925).extract_px == 260
    # 3. a stride of half a pixel: Slideflow rounds half to even, tilestream floors
    #    (262 px tiles at stride_div=4: 65.5 -> 66 there, 65 here)
    cfg = ExtractConfig(tile_px=262, tile_um=131, stride_div=4)
    sf_px, _, sf_centres = slideflow_grid(dims, 0.5, 262, 131, stride_div=4)
    g = plan_grid(cfg, dimensions=dims, downsamples=PYRAMID, mpp=0.5)
    assert sf_px == g.extract_px == 262 and g.stride == 65
    assert int(np.round(262 / 4)) == 66 and len(g) != len(sf_centres)
    # 4. edge tiles: Slideflow's range runs to the slide's width inclusive, so a slide
    #    whose width is a multiple of the stride gets a column starting on its right edge
    _, _, sf_edge = slideflow_grid((2560, 2560), 0.5, 256, 128, use_edge_tiles=True)
    edge = plan_grid(
        CFG.replace(use_edge_tiles=True), dimensions=(2560, 2560), downsamples=PYRAMID, mpp=0.5
    )
    assert len(sf_edge) == 11 * 11 and len(edge) == 10 * 10
    assert set(map(tuple, edge.centers)) < set(map(tuple, sf_edge))


# -- extraction on slides ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def aperio_256(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """An Aperio-style slide with 256 px stored JPEG tiles at 0.499 um/px."""
    path = tmp_path_factory.mktemp("snap") / "aperio256.svs"
    make_synthetic_slide(
        path, width=3072, height=2048, tile_size=256, mpp=APERIO_MPP, source_tiles=cmu_slide, seed=2
    )
    return path


def _stored_scan(path: Path, col: int, row: int) -> bytes:
    """Level 0's stored JPEG tile (col, row) from the file, from its start-of-scan marker on."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        i = row * across + col
        offset, count = page.dataoffsets[i], page.databytecounts[i]
    with path.open("rb") as f:
        f.seek(offset)
        raw = f.read(count)
    return raw[raw.index(b"\xff\xda") :]


def test_passthrough_on_256_px_tiles_at_0_499(
    aperio_256: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(aperio_256)
    r = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)
    assert r.status == "done", r.error
    assert r.extract_px == 256 and r.passthrough == r.tiles > 0
    osr = openslide.OpenSlide(str(aperio_256))
    with TFRecord(tmp_path / "256px_128um" / "aperio256.tfrecords") as tfr:
        for i in range(len(tfr)):
            rec = tfr[i]
            x, y = int(rec["loc_x"]) - 128, int(rec["loc_y"]) - 128
            data = bytes(rec["image_raw"])
            # the stored tile's entropy-coded data, bit for bit
            assert data.endswith(_stored_scan(aperio_256, x // 256, y // 256)), (x, y)
            ref = np.asarray(osr.read_region((x, y), 0, (256, 256)).convert("RGB"), np.int16)
            assert np.abs(decode_image(data).astype(np.int16) - ref).max() <= 1, (x, y)
    osr.close()
    # the exact grid cannot pass through: 257 px resized to 256
    e = extract_tiles(
        slide, tmp_path / "exact", tile_px=256, tile_um=128, grid="exact", **storage.kw
    )
    assert e.status == "done" and e.extract_px == 257 and e.passthrough == 0


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_240_px_aperio_tiles_are_native_pixels(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    """CMU-1-Small-Region: a real Aperio slide, 240 px stored tiles at 0.499 um/px."""
    src = storage.name(cmu_slide)
    r = extract_tiles(src, tmp_path, tile_px=256, tile_um=128, img_format="png", **storage.kw)
    assert r.status == "done", r.error
    assert r.extract_px == 256 and r.passthrough == 0  # 256 px tiles do not align with 240
    run = tmp_path / "256px_128um"
    rows = _coords(run / "CMU-1-Small-Region.coords.csv")
    with open_slide(cmu_slide) as slide, TFRecord(run / "CMU-1-Small-Region.tfrecords") as tfr:
        for row in rows:
            x, y = int(row["x"]), int(row["y"])
            assert (int(row["width"]), int(row["level"])) == (256, 0)
            native = slide.read_region((x, y), 0, (256, 256), as_array=True)
            got = decode_image(tfr[int(row["record"])]["image_raw"])
            np.testing.assert_array_equal(got, native)  # lossless PNG of native pixels
    # the exact grid resizes 257 -> 256: its tiles are not the native pixels
    e = extract_tiles(
        src,
        tmp_path / "e",
        tile_px=256,
        tile_um=128,
        img_format="png",
        grid="exact",
        **storage.kw,
    )
    erow = _coords(tmp_path / "e" / "256px_128um" / "CMU-1-Small-Region.coords.csv")[0]
    assert e.extract_px == 257 and int(erow["width"]) == 257
    with (
        open_slide(cmu_slide) as slide,
        TFRecord(tmp_path / "e" / "256px_128um" / "CMU-1-Small-Region.tfrecords") as tfr,
    ):
        x, y = int(erow["x"]), int(erow["y"])
        native = slide.read_region((x, y), 0, (256, 256), as_array=True)
        assert not np.array_equal(decode_image(tfr[0]["image_raw"]), native)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_the_effective_microns_are_recorded(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    r = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)
    assert r.status == "done", r.error
    run = tmp_path / "256px_128um"
    name = "CMU-1-Small-Region"
    state = json.loads((run / "state" / f"{name}.json").read_text())
    tg = state["tile_grid"]
    assert tg["mode"] == "snap" and tg["snapped"] and not tg["resized"]
    assert (tg["extract_px"], tg["read_px"], tg["level"]) == (256, 256, 0)
    assert tg["exact_px"] == pytest.approx(256.513, abs=1e-3)
    assert tg["tile_um"] == pytest.approx(127.744) and tg["exact_um"] == pytest.approx(128)
    assert r.tile_grid == tg  # the API's result carries the same record
    assert {row["tile_um"] for row in _coords(run / f"{name}.coords.csv")} == {"127.744"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tile_grid"]["snapped"] == [name]
    assert summary["tile_grid"]["tile_um"] == {name: pytest.approx(127.744)}
    assert summary["tile_grid"]["tolerance"] == SNAP_TOLERANCE
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["grid"] == "snap"
    assert config["tile_grid"] == {
        "mode": "snap",
        "tolerance": SNAP_TOLERANCE,
        "tile_um": [127.744],
    }
    report = (run / "report.html").read_text()
    assert "1 of 1 slide snapped" in report
    assert "128um = 256.513 level-0 px read as 256 native px of level 0" in report
    assert "127.744 um per tile" in report


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_an_exact_run_is_not_passed_off_as_a_snapped_one(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    name = "CMU-1-Small-Region"
    run = tmp_path / "256px_128um"
    exact = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, grid="exact", **storage.kw)
    assert exact.status == "done" and exact.extract_px == 257
    assert {r["tile_um"] for r in _coords(run / f"{name}.coords.csv")} == {"128.243"}
    report = (run / "report.html").read_text()
    assert "Tile grid: exact" in report and "snapped" not in report
    again = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, grid="exact", **storage.kw)
    assert again.status == "skipped"
    snap = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)  # the default
    assert snap.status == "done" and snap.extract_px == 256  # re-extracted, not skipped
    assert snap.config_hash != exact.config_hash
    assert {int(r["width"]) for r in _coords(run / f"{name}.coords.csv")} == {256}
    back = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, grid="exact", **storage.kw)
    assert back.status == "done" and back.extract_px == 257


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_cli_grid_option_and_snap_line(
    cmu_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: Remote
) -> None:
    from tilestream.cli import main

    base = ["extract", storage.name(cmu_slide), "--tile-px", "256", "--tile-um", "128",
            "--no-progress", *storage.cli_args]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "tile grid snapped to native pixels (no resize) on 1 slide(s)" in out
    assert "256.513 -> 256 level-0 px (127.744 um)" in out
    assert main([*base, "--out", str(tmp_path / "e"), "--grid", "exact"]) == 0
    assert "tile grid snapped" not in capsys.readouterr().out
    config = json.loads((tmp_path / "e" / "256px_128um" / "config.json").read_text())
    assert config["config"]["grid"] == "exact" and config["tile_grid"]["tolerance"] is None
