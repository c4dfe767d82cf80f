"""Pen and ink detection on real slides with strokes painted in optical density.

Ground truth is the stroke mask of :mod:`tilestream.testing.pen`. The targets
of the issue: pen Dice >= 0.90 over the low-resolution image, at most 1% of
kept tiles overlapping ink, and on the unpainted slides at most 0.5% of the
tissue lost to false pen detections. Each measure goes through the
extraction's own selection, so switching detection off fails them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from _remote import Remote, storage_kinds
from tilestream.cli import main
from tilestream.errors import ConfigError
from tilestream.extract import extract_tiles
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import plan_grid
from tilestream.extract.lowres import LowRes, mask_downsample, read_lowres
from tilestream.extract.qc import is_brightfield, pen_mask
from tilestream.extract.select import Selection, qc_areas_mm2, select_tiles
from tilestream.extract.tissue import box_fractions
from tilestream.slide import open_slide
from tilestream.testing.pen import (
    HELDOUT_INKS,
    HELDOUT_SHAPES,
    paint_strokes,
    write_painted_slide,
)

BRIGHTFIELD = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")
TILE = {"tile_px": 64, "tile_um": 64}


def _lowres(path: Path) -> LowRes:
    with open_slide(path) as slide:
        return read_lowres(slide, mask_downsample(slide.dimensions, 128))


@pytest.fixture(scope="module")
def lowres(slides_dir: Path) -> dict[str, LowRes]:
    names = (*BRIGHTFIELD, "kidney-48-5.tif", "test3-DAPI-2-387.ndpi")
    return {n: _lowres(slides_dir / n) for n in names}


def _select(low: LowRes, image: NDArray[np.uint8] | None = None, **options: object) -> Selection:
    img = low.image if image is None else image
    h, w = img.shape[:2]
    dims = (round(w * low.downsample), round(h * low.downsample))
    config = ExtractConfig(**TILE, mpp_override=0.5, **options)  # type: ignore[arg-type]
    grid = plan_grid(config, dimensions=dims, downsamples=(1.0,), mpp=0.5)
    return select_tiles(grid, LowRes(img, low.downsample), config)


def _dice(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    return float(2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum()))


@pytest.mark.parametrize("name", BRIGHTFIELD)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pen_dice_on_painted_real_slides(lowres: dict[str, LowRes], name: str, seed: int) -> None:
    low = lowres[name]
    painted, truth = paint_strokes(low.image, seed=seed, count=8)
    sel = _select(low, painted)
    assert truth.mean() > 0.02  # strokes over glass and tissue, several widths
    assert _dice(sel.qc_masks["pen"], truth) >= 0.90
    # the ink left the final tissue mask
    assert (sel.tissue_mask & truth).sum() <= 0.05 * truth.sum()


def _family_dice(low: LowRes, inks: tuple[str, ...], shapes: tuple[str, ...]) -> float:
    scores = []
    for i, ink in enumerate(inks):
        painted, truth = paint_strokes(
            low.image, seed=300 + i, count=6, inks={ink: HELDOUT_INKS[ink]}, shapes=shapes
        )
        scores.append(_dice(pen_mask(painted), truth))
    return min(scores)


@pytest.mark.parametrize("name", BRIGHTFIELD)
def test_pen_heldout_inks_and_shapes(lowres: dict[str, LowRes], name: str) -> None:
    """Colours and shapes never used to change the detector (docs/qc.md has the numbers).

    A guard at the level measured (0.83-0.95 per ink), not a target tuned to.
    """
    found = ("royal-blue", "lime-green", "forest-green", "scarlet", "jet-black")
    assert _family_dice(lowres[name], found, HELDOUT_SHAPES) >= 0.80


@pytest.mark.xfail(strict=True, reason="violet ink has the hue of haematoxylin: see docs/qc.md")
@pytest.mark.parametrize("name", BRIGHTFIELD)
def test_pen_violet_ink_is_missed(lowres: dict[str, LowRes], name: str) -> None:
    """A known limit, held here so that a detector that finds it shows up."""
    assert _family_dice(lowres[name], ("violet-blue",), HELDOUT_SHAPES) >= 0.5


@pytest.mark.parametrize("name", [*BRIGHTFIELD, "kidney-48-5.tif", "test3-DAPI-2-387.ndpi"])
def test_unpainted_real_slides_lose_little_tissue(lowres: dict[str, LowRes], name: str) -> None:
    low = lowres[name]
    kept_ink = _select(low, pen="keep")
    removed = _select(low, pen="remove")
    before = kept_ink.tissue_mask
    lost = before & ~removed.tissue_mask
    assert before.any()
    assert lost.sum() <= 0.005 * before.sum()


def test_fluorescence_is_not_brightfield(lowres: dict[str, LowRes]) -> None:
    """Pen detection in OD needs light glass: a dark-background scan gets empty masks."""
    low = lowres["test3-DAPI-2-387.ndpi"]
    assert not is_brightfield(low.image)
    assert all(is_brightfield(lowres[n].image) for n in (*BRIGHTFIELD, "kidney-48-5.tif"))
    painted, _ = paint_strokes(low.image, seed=0, count=8)
    assert not _select(low, painted).qc_masks["pen"].any()


def _ink_tiles(run_dir: Path, slide: str, truth: NDArray[np.bool_]) -> tuple[int, int, list[str]]:
    with open(run_dir / f"{slide}.coords.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    boxes = np.array([[int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])] for r in rows])
    inked = int((box_fractions(truth, boxes) > 0).sum())
    return inked, len(rows), list(rows[0])


@pytest.fixture(scope="module")
def painted_slides(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("painted")
    made = {}
    for name in BRIGHTFIELD:
        target = out / (Path(name).stem + "-painted.tif")
        made[name] = (target, write_painted_slide(slides_dir / name, target, seed=7, count=8))
    return made


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
@pytest.mark.parametrize("name", BRIGHTFIELD)
def test_kept_tiles_avoid_ink(
    painted_slides: dict[str, tuple], name: str, tmp_path: Path, storage: Remote
) -> None:
    """Again with the painted slide read from SeaweedFS: the same tiles, byte for byte."""
    path, truth = painted_slides[name]
    r = extract_tiles(storage.name(path), tmp_path, mpp=0.5, **TILE, **storage.kw)
    assert r.status == "done", r.error
    inked, kept, header = _ink_tiles(tmp_path / "64px_64um", path.stem, truth)
    assert kept > 50
    assert inked <= 0.01 * kept
    assert r.rejected["pen"] > 0 and r.qc["pen_mm2"] is not None and r.qc["pen_mm2"] > 0
    assert header[-3:] == ["pen", "fold", "blur_map"]


def test_cli_pen_keep_keeps_ink_tiles(
    painted_slides: dict[str, tuple], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, truth = painted_slides["tcga-cr-7395-01a-01-ts1.svs"]
    args = [str(path), "--tile-px", "64", "--tile-um", "64", "--mpp", "0.5", "--no-progress"]
    assert main(["extract", *args, "--out", str(tmp_path / "keep"), "--pen", "keep"]) == 0
    assert main(["extract", *args, "--out", str(tmp_path / "rm")]) == 0
    capsys.readouterr()
    inked_keep, kept_keep, _ = _ink_tiles(tmp_path / "keep" / "64px_64um", path.stem, truth)
    inked_rm, kept_rm, _ = _ink_tiles(tmp_path / "rm" / "64px_64um", path.stem, truth)
    assert inked_keep > 0.05 * kept_keep  # ink tiles are kept ...
    assert inked_rm <= 0.01 * kept_rm  # ... and removed by default
    state = json.loads(
        (tmp_path / "keep" / "64px_64um" / "state" / f"{path.stem}.json").read_text()
    )
    assert state["rejected"]["pen"] == 0 and state["qc"]["pen_mm2"] > 0
    config = json.loads((tmp_path / "keep" / "64px_64um" / "config.json").read_text())
    assert config["config"]["pen"] == "keep"


def test_qc_areas_in_mm2_need_mpp(lowres: dict[str, LowRes]) -> None:
    low = lowres["CMU-1-Small-Region.svs"]
    painted, truth = paint_strokes(low.image, seed=0, count=8)
    sel = _select(low, painted)
    areas = qc_areas_mm2(sel, low.downsample, 0.5)
    px_mm2 = (low.downsample * 0.5 / 1000) ** 2
    assert areas["pen_mm2"] == pytest.approx(truth.sum() * px_mm2, rel=0.15)
    assert areas["tissue_mm2"] == pytest.approx(sel.tissue_mask.sum() * px_mm2, rel=1e-4)
    assert set(areas) == {"tissue_mm2", "pen_mm2", "fold_mm2", "blur_mm2"}
    assert set(qc_areas_mm2(sel, low.downsample, None).values()) == {None}


def test_qc_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="pen"):
        ExtractConfig(**TILE, pen="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_pen_fraction"):
        ExtractConfig(**TILE, max_pen_fraction=2.0)
    assert ExtractConfig(**TILE).hash() != ExtractConfig(**TILE, pen="keep").hash()
