"""The fast paths of the QC pass give exactly what the straightforward computations give.

QC costs at most a few per cent of an extraction because the masks, their
per-tile fractions, outlines and preview drawing work on the masks' bounding
boxes, per block, or on colour tables. Each is compared here, bit for bit,
with the whole-image computation it replaced (kept in this file), on the real
slides' low-resolution images (with a fold, a blurred region and ink painted
in) and on random images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from tilestream.extract.lowres import mask_downsample, read_lowres
from tilestream.extract.outlines import _nonzero, _trace, trace_polygons
from tilestream.extract.preview import _draw_outline, _outline
from tilestream.extract.qc import (
    BLUR_SHARPNESS,
    _box_fraction_at,
    _Colours,
    _fold,
    blur_map,
    glass_intensity,
    is_brightfield,
    qc_masks,
)
from tilestream.extract.tissue import _summed_area, box_fractions, box_mean, tissue_mask
from tilestream.slide import open_slide

SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")


def _ref_box_fractions(mask: NDArray[np.bool_], boxes: NDArray[np.int64]) -> NDArray[np.float64]:
    h, w = mask.shape
    sat = _summed_area(mask)
    x0, y0 = np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h)
    x1, y1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, w), np.clip(boxes[:, 1] + boxes[:, 3], 0, h)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return inside / np.maximum(boxes[:, 2] * boxes[:, 3], 1)


def _ref_draw(canvas: NDArray[np.uint8], mask: NDArray[np.bool_]) -> None:
    edge = _outline(mask)
    edge[1:] |= edge[:-1]
    edge[:, 1:] |= edge[:, :-1]
    canvas[edge] = (1, 2, 3)


def _ref_fold(colours: _Colours, tissue: NDArray[np.bool_]) -> NDArray[np.bool_]:
    total = colours.total_od()
    step = max(1, int(np.sqrt(total.size / 65_536)))
    inside = total[::step, ::step][tissue[::step, ::step]]
    median = float(np.median(inside)) if inside.size else float(np.median(total[tissue]))
    dark = total > max(1.8, 3.0 * median)
    dark &= box_mean(dark, 2) >= 0.5
    grown = dark & tissue
    while True:  # the dark regions that touch tissue, whole
        nxt = grown.copy()
        nxt[1:] |= grown[:-1]
        nxt[:-1] |= grown[1:]
        nxt[:, 1:] |= nxt[:, :-1].copy()
        nxt[:, :-1] |= nxt[:, 1:].copy()
        nxt &= dark
        if np.array_equal(nxt, grown):
            return grown
        grown = nxt


def _same_polygons(a: list[list[NDArray[np.float64]]], b: list[list[NDArray[np.float64]]]) -> bool:
    return len(a) == len(b) and all(
        len(p) == len(q) and all(np.array_equal(r, s) for r, s in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


def _check(img: NDArray[np.uint8], tissue: NDArray[np.bool_], boxes: NDArray[np.int64]) -> None:
    got = qc_masks(img, tissue).masks
    if not is_brightfield(img):
        assert not any(mask.any() for mask in got.values())
    else:
        assert np.array_equal(got["blur"], tissue & (blur_map(img) < BLUR_SHARPNESS))
        colours = _Colours.of(img, glass_intensity(img))
        clean = tissue & ~got["pen"]
        if clean.any():
            assert np.array_equal(got["fold"], _ref_fold(colours, clean))
    for mask in (*got.values(), tissue):
        assert np.array_equal(box_fractions(mask, boxes), _ref_box_fractions(mask, boxes))
        assert _same_polygons(trace_polygons(mask), _trace(mask) if mask.any() else [])
        fast, ref = img.copy(), img.copy()
        _draw_outline(fast, mask, (1, 2, 3))
        _ref_draw(ref, mask)
        assert np.array_equal(fast, ref)


def _painted(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A slide with a blurred region, a dark band and a blue ink stroke painted in."""
    out = img.copy()
    h, w = out.shape[:2]
    region = (w // 5, h // 5, w // 2, h // 2)
    blurred = Image.fromarray(out).crop(region).filter(ImageFilter.GaussianBlur(3))
    out[region[1] : region[3], region[0] : region[2]] = np.asarray(blurred)
    band = out[h // 2 : h // 2 + 12, w // 3 : 2 * w // 3].astype(np.float32)
    out[h // 2 : h // 2 + 12, w // 3 : 2 * w // 3] = (band**3 / 255.0**2).astype(np.uint8)
    out[h // 6 : h // 6 + 4, w // 2 : w - 5] = (40, 90, 200)
    return out


@pytest.mark.parametrize("name", SLIDES)
@pytest.mark.parametrize("painted", [False, True])
def test_qc_on_real_slides_matches_the_whole_image_computation(
    slides_dir: Path, name: str, painted: bool
) -> None:
    with open_slide(slides_dir / name) as slide:
        low = read_lowres(slide, mask_downsample(slide.dimensions, 128))
    img = _painted(low.image) if painted else low.image
    tissue = tissue_mask(img)
    h, w = tissue.shape
    ys, xs = np.mgrid[-3:h:7, -5:w:9]
    boxes = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 9), np.full(xs.size, 7)], axis=1)
    _check(img, tissue, boxes)
    if painted:
        assert all(got.any() for got in qc_masks(img, tissue).masks.values())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 90),
    st.integers(3, 90),
    st.integers(0, 2**32 - 1),
)
def test_qc_on_random_images_matches_the_whole_image_computation(h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(150, 250, (h, w, 3)).astype(np.uint8)
    for _ in range(3):
        y, x, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 15)
        colour = [(40, 90, 200), (10, 10, 10), (200, 120, 180), (60, 160, 60)][rng.integers(0, 4)]
        img[max(0, y - r) : y + r, max(0, x - r) : x + r] = colour
    if rng.random() < 0.5:  # a flat (blur-like) left half
        img[:, : w // 2] = 200 + rng.integers(0, 3, (h, w // 2, 3)).astype(np.uint8)
    tissue = rng.random((h, w)) < rng.random()
    tissue[: rng.integers(0, h)] = False
    boxes = np.concatenate([rng.integers(-5, 90, (20, 2)), rng.integers(1, 30, (20, 2))], axis=1)
    _check(img, tissue, boxes)
    colours = _Colours.of(img, glass_intensity(img))
    assert np.array_equal(_fold(colours, tissue | ~tissue), _ref_fold(colours, tissue | ~tissue))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_sparse_helpers_match_numpy(h: int, w: int, seed: int, radius: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < rng.random()
    assert all(np.array_equal(a, b) for a, b in zip(_nonzero(mask), np.nonzero(mask), strict=True))
    where = rng.random((h, w)) < 0.05
    ref = where & (box_mean(mask, radius) >= 0.5)
    assert np.array_equal(_box_fraction_at(mask, radius, where), ref)
