"""Artifact masks besides ink: very dark tissue (folds, thick tissue) and out-of-focus areas.

Made on real slides: a band of tissue several layers thick (its optical
density multiplied) and a region blurred with a Gaussian, each with its
ground truth; the unaltered slides must keep nearly all of their tissue.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from _remote import Remote, storage_kinds
from tilestream.errors import ConfigError
from tilestream.extract import extract_tiles
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import plan_grid
from tilestream.extract.lowres import LowRes, mask_downsample, read_lowres
from tilestream.extract.qc import blur_map, glass_intensity, optical_density, qc_masks
from tilestream.extract.select import Selection, select_tiles
from tilestream.slide import open_slide

SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")
TILE = {"tile_px": 64, "tile_um": 64}


@pytest.fixture(scope="module")
def lowres(slides_dir: Path) -> dict[str, LowRes]:
    out = {}
    for name in SLIDES:
        with open_slide(slides_dir / name) as slide:
            out[name] = read_lowres(slide, mask_downsample(slide.dimensions, 128))
    return out


def _select(low: LowRes, img: NDArray[np.uint8], **options: object) -> Selection:
    h, w = img.shape[:2]
    dims = (round(w * low.downsample), round(h * low.downsample))
    config = ExtractConfig(**TILE, mpp_override=0.5, **options)  # type: ignore[arg-type]
    grid = plan_grid(config, dimensions=dims, downsamples=(1.0,), mpp=0.5)
    return select_tiles(grid, LowRes(img, low.downsample), config)


def _thicken(img: NDArray[np.uint8], where: NDArray[np.bool_], layers: float) -> NDArray[np.uint8]:
    """Tissue ``layers`` times as thick: its optical density multiplied (Beer-Lambert)."""
    i0 = glass_intensity(img)
    t = np.clip(img.astype(np.float32) / i0, 1e-3, 1.0)
    out = np.where(where[..., None], i0 * t**layers, img.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", SLIDES)
def test_thick_folds_found_and_removed_on_request(lowres: dict[str, LowRes], name: str) -> None:
    low = lowres[name]
    base = _select(low, low.image, pen="off")
    h = low.image.shape[0]
    band = np.zeros(base.tissue_mask.shape, bool)
    band[h // 3 : h // 3 + h // 12] = True
    band &= base.tissue_mask
    folded = _thicken(low.image, band, 4.0)
    sel = _select(low, folded, pen="off", fold="remove")
    fold = sel.qc_masks["fold"]
    # four layers of tissue at least as dense as the slide's median: found;
    # pale tissue stays lighter than dense nuclei even folded (docs/qc.md)
    od = optical_density(low.image).sum(axis=-1)
    dense = band & (od >= np.median(od[base.tissue_mask]))
    assert (fold & dense).sum() >= 0.8 * dense.sum()
    assert (fold & ~band).sum() <= 0.01 * base.tissue_mask.sum()
    assert sel.counts["fold"] > 0 and not (sel.tissue_mask & fold).any()
    # "keep" (the default) measures the fold without rejecting tiles for it
    kept = _select(low, folded, pen="off")
    assert kept.counts["fold"] == 0 and kept.qc_fractions["fold"].max() > 0.5


@pytest.mark.parametrize("name", SLIDES)
def test_unaltered_slides_have_little_dark_tissue(lowres: dict[str, LowRes], name: str) -> None:
    sel = _select(lowres[name], lowres[name].image, pen="off")
    assert sel.qc_masks["fold"].sum() <= 0.01 * sel.tissue_mask.sum()


def test_blur_map_separates_sharp_from_blurred() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(60, 250, (120, 120, 3)).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(texture).filter(ImageFilter.GaussianBlur(1.5)))
    assert blur_map(texture, 12)[24:96, 24:96].min() > 3.0
    assert blur_map(blurred, 12)[24:96, 24:96].max() < 2.5
    # contrast does not matter: a pale copy of the sharp texture is just as sharp
    pale = (200 + texture // 8).astype(np.uint8)
    assert blur_map(pale, 12)[24:96, 24:96].min() > 3.0


@pytest.mark.parametrize("name", SLIDES)
def test_out_of_focus_half_is_found(lowres: dict[str, LowRes], name: str) -> None:
    low = lowres[name]
    img = low.image.copy()
    w = img.shape[1]
    img[:, w // 2 :] = np.asarray(
        Image.fromarray(img[:, w // 2 :]).filter(ImageFilter.GaussianBlur(2))
    )
    base = _select(low, low.image, pen="off")
    sel = _select(low, img, pen="off", blur_map="remove")
    blur = sel.qc_masks["blur"]
    tissue = base.tissue_mask
    right, left = tissue.copy(), tissue.copy()
    right[:, : w // 2 + 24] = False  # away from the seam, whose blocks hold both halves
    left[:, w // 2 - 24 :] = False
    assert (blur & right).sum() >= 0.85 * right.sum()
    assert (blur & left).sum() <= 0.01 * left.sum()
    assert sel.counts["blur_map"] > 0
    # the unaltered slide: almost nothing out of focus (TCGA's JPEG 2000 smooths some areas)
    assert (base.qc_masks["blur"] & tissue).sum() <= 0.01 * tissue.sum()


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_qc_columns_in_coordinates(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    """Again with the slide read from SeaweedFS: the same QC columns, byte for byte."""
    slide = storage.name(cmu_slide)
    r = extract_tiles(slide, tmp_path, **TILE, **storage.kw)
    assert r.status == "done" and set(r.qc) == {"tissue_mm2", "pen_mm2", "fold_mm2", "blur_mm2"}
    # the slide is 1.1 x 1.5 mm; its tissue covers a good part of it
    assert r.qc["tissue_mm2"] is not None and 0.3 < r.qc["tissue_mm2"] < 1.65
    with open(tmp_path / "64px_64um" / "CMU-1-Small-Region.coords.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-3:] == ["pen", "fold", "blur_map"]
    assert all(float(row["pen"]) == 0.0 for row in rows)  # "remove": no kept tile holds ink
    off = extract_tiles(
        slide, tmp_path / "off", pen="off", fold="off", blur_map="off", **TILE, **storage.kw
    )
    with open(tmp_path / "off" / "64px_64um" / "CMU-1-Small-Region.coords.csv", newline="") as f:
        assert (csv.DictReader(f).fieldnames or [])[-2:] == ["blur", "blurry"]  # no QC columns
    assert off.qc == {"tissue_mm2": pytest.approx(off.qc["tissue_mm2"])}
    assert optical_density(np.full((2, 2, 3), 255, np.uint8)).max() == 0.0


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 48),
    w=st.integers(1, 48),
    seed=st.integers(0, 2**16),
    light=st.booleans(),
)
def test_qc_masks_of_any_small_image(h: int, w: int, seed: int, light: bool) -> None:
    """Any image, down to one pixel, gets masks of its own shape and never an error."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    if light:  # mostly glass, with a few strokes of ink
        img[:] = 240
        img[rng.random((h, w)) < 0.3] = (40, 90, 200)
    tissue = rng.random((h, w)) < 0.5
    out = qc_masks(img, tissue)
    assert set(out.masks) == {"pen", "fold", "blur"}
    for mask in out.masks.values():
        assert mask.shape == (h, w) and mask.dtype == bool
    assert not (out.masks["blur"] & ~tissue).any()


def test_max_fractions_are_checked() -> None:
    for bad in (None, -0.1, 1.5, "0.1", True):
        with pytest.raises(ConfigError, match="max_fold_fraction"):
            ExtractConfig(**TILE, max_fold_fraction=bad)  # type: ignore[arg-type]


def _reference_blur_map(rgb: np.ndarray, block: int) -> np.ndarray:
    """The blur map written out plainly in float64: Laplacian energy over that of the smoothed image."""
    g = rgb[..., 1].astype(np.float64)
    p = np.pad(g, 1, mode="edge")

    def lap(a: np.ndarray) -> np.ndarray:
        return a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4 * a[1:-1, 1:-1]

    smooth = np.pad(lap(p) + 5 * g, 1, mode="edge")  # 5-point sum: the 4 neighbours + the pixel
    fine, coarse = lap(p) ** 2, (lap(smooth) / 5.0) ** 2
    h, w = g.shape
    out = np.empty((-(-h // block), -(-w // block)))
    for by in range(out.shape[0]):
        for bx in range(out.shape[1]):
            win = (slice(by * block, (by + 1) * block), slice(bx * block, (bx + 1) * block))
            ratio = fine[win].sum() / (coarse[win].sum() + block * block)
            out[by, bx] = np.inf if g[win].std() < 3.0 else ratio
    return np.repeat(np.repeat(out, block, axis=0), block, axis=1)[:h, :w]


def test_blur_map_equals_the_plain_computation_away_from_the_edges() -> None:
    rng = np.random.default_rng(3)
    texture = rng.integers(60, 250, (100, 110, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(texture).filter(ImageFilter.GaussianBlur(0.9)))
    img = img.copy()
    img[40:70, 30:80] = 215  # a flat patch: no contrast, no measure
    got, want = blur_map(img, 10), _reference_blur_map(img, 10)
    inner = (slice(10, 90), slice(10, 100))  # blocks whose pixels are 2 or more from the edge
    assert np.array_equal(np.isinf(got[inner]), np.isinf(want[inner]))
    finite = np.isfinite(want[inner])
    assert np.allclose(got[inner][finite], want[inner][finite], rtol=1e-9)


def test_sharp_tissue_at_the_image_edge_is_not_called_blurred() -> None:
    # The smoothed image's Laplacian used to take the unsmoothed border as a step,
    # which made every block on the image's edge look out of focus.
    rng = np.random.default_rng(4)
    noise = Image.fromarray(rng.integers(60, 250, (96, 96, 3)).astype(np.uint8))
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(0.7)))  # in focus, as scanned
    assert blur_map(texture, 12)[12:-12, 12:-12].min() > 3.0
    assert blur_map(texture, 12).min() > 3.0  # the edge blocks too (they were below 1)
    tissue = np.ones((96, 96), bool)
    assert not qc_masks(texture, tissue, pen=False, fold=False).masks["blur"].any()
