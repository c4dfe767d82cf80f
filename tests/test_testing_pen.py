"""The stroke painter of :mod:`tilestream.testing.pen`: its ground truth is what it paints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tilestream.slide import open_slide
from tilestream.testing.pen import (
    HELDOUT_INKS,
    HELDOUT_SHAPES,
    INKS,
    REVIEWED_INKS,
    REVIEWED_SHAPES,
    SHAPES,
    Stroke,
    paint_strokes,
    plan_strokes,
    render_strokes,
    write_painted_slide,
)


def test_ink_adds_absorbance_over_glass_and_tissue() -> None:
    """Beer-Lambert: where the stroke fully covers, OD_painted = OD_before + OD_ink."""
    img = np.full((300, 1200, 3), 250, np.uint8)  # widths are in pixels of a 1200 px side
    img[:, 600:] = (180, 90, 150)  # "tissue" on the right half
    ink = (0.9, 0.5, 0.1)
    stroke = Stroke("line", ((0.1, 0.5), (0.9, 0.5)), 12.0, ink)
    painted, truth = paint_strokes(img, strokes=[stroke])
    _, cover = render_strokes([stroke], img.shape[:2])
    full = cover >= 0.999
    assert full[:, :600].any() and full[:, 600:].any()  # over glass and over tissue
    before = -np.log10(img[full].astype(np.float64) / 255)
    after = -np.log10(np.maximum(painted[full], 1).astype(np.float64) / 255)
    assert np.allclose(after - before, ink, atol=0.02)
    assert np.array_equal(truth, cover >= 0.5)
    assert np.array_equal(painted[~(cover > 0)], img[~(cover > 0)])  # nothing else changes


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    h=st.integers(16, 120),
    w=st.integers(16, 120),
    value=st.integers(0, 255),
)
def test_paint_never_brightens_and_truth_is_painted(seed: int, h: int, w: int, value: int) -> None:
    img = np.full((h, w, 3), value, np.uint8)
    painted, truth = paint_strokes(img, seed=seed, count=4)
    assert painted.shape == img.shape and truth.shape == (h, w) and truth.dtype == bool
    assert (painted <= img).all()
    if value >= 128 and truth.any():  # ink is visible on a light image where the truth says
        assert (painted[truth].astype(int).sum(axis=-1) < 3 * value).all()


def test_same_seed_same_strokes_at_any_resolution() -> None:
    small = paint_strokes(np.full((450, 600, 3), 240, np.uint8), seed=5, count=6)[1]
    large = paint_strokes(np.full((900, 1200, 3), 240, np.uint8), seed=5, count=6)[1]
    shrunk = np.asarray(Image.fromarray(large.astype(np.uint8) * 255).resize((600, 450))) > 127
    inter = (small & shrunk).sum()
    assert inter / max(1, (small | shrunk).sum()) > 0.8
    again = paint_strokes(np.full((450, 600, 3), 240, np.uint8), seed=5, count=6)[1]
    assert np.array_equal(small, again)


def test_sets_are_disjoint_and_every_shape_draws() -> None:
    assert not (set(INKS) & set(REVIEWED_INKS) or set(INKS) & set(HELDOUT_INKS))
    assert not set(REVIEWED_INKS) & set(HELDOUT_INKS)
    shapes = [*SHAPES, *REVIEWED_SHAPES, *HELDOUT_SHAPES]
    assert len(set(shapes)) == 9
    for shape in shapes:
        strokes = plan_strokes(1, 1, shapes=(shape,))
        assert strokes[0].shape == shape
        _, cover = render_strokes(strokes, (300, 300))
        assert (cover >= 0.5).sum() > 20, shape
    with pytest.raises(ValueError, match="unknown stroke shape"):
        plan_strokes(0, 1, shapes=("blob",))


def test_painted_slide_is_a_readable_pyramid(cmu_slide: Path, tmp_path: Path) -> None:
    target = tmp_path / "painted.tif"
    truth = write_painted_slide(cmu_slide, target, seed=3, count=5)
    with open_slide(cmu_slide) as src, open_slide(target) as out:
        assert out.dimensions == src.dimensions and truth.shape == src.dimensions[::-1]
        assert out.mpp == pytest.approx(src.mpp, rel=1e-3)
        assert len(out.level_downsamples) > 1
        w, h = src.dimensions
        a = src.read_region((0, 0), 0, (w, h), as_array=True)
        b = out.read_region((0, 0), 0, (w, h), as_array=True)
    assert (b[truth].astype(int).sum() < a[truth].astype(int).sum()) and truth.mean() > 0.01
    assert np.array_equal(a[~truth][::97], b[~truth][::97]) or (
        np.abs(a[~truth].astype(int) - b[~truth]).mean() < 2  # the soft stroke edges only
    )
