"""COCO masks against pycocotools, the reference the TF OD API's own COCO tool uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tilestream.detection import annotation_mask, decode_rle, polygons_to_mask
from tilestream.detection.masks import encode_rle_string

mask_utils = pytest.importorskip("pycocotools.mask", reason="pip install -e '.[test]'")

# pycocotools' compiled module trips a NumPy 2 deprecation (not ours)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _random_polygons(rng: np.random.Generator, h: int, w: int, i: int) -> list[list[float]]:
    n = int(rng.integers(3, 14))
    if i % 3 == 0:  # star-shaped, partly outside the image
        cx, cy = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.2, max(w, h) / 2, n)
        pts = np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]).ravel()
    elif i % 3 == 1:  # self-intersecting
        pts = np.column_stack([rng.uniform(-3, w + 3, n), rng.uniform(-3, h + 3, n)]).ravel()
    else:  # integer vertices
        pts = np.round(np.column_stack([rng.uniform(0, w, n), rng.uniform(0, h, n)]).ravel())
    polys = [pts.tolist()]
    if i % 4 == 0:  # an object in two parts
        polys.append((pts * 0.5 + 1.25).tolist())
    return polys


def test_polygons_match_pycocotools_pixel_for_pixel() -> None:
    rng = np.random.default_rng(7)
    for i in range(1500):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        polys = _random_polygons(rng, h, w, i)
        ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        np.testing.assert_array_equal(
            polygons_to_mask(polys, height=h, width=w), ref.astype(bool), err_msg=str(polys)
        )


def test_rle_matches_pycocotools_both_ways() -> None:
    rng = np.random.default_rng(3)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) > rng.random()).astype(np.uint8)
        ref = mask_utils.encode(np.asfortranarray(m))
        ours = encode_rle_string(m)
        assert ours == {"size": [h, w], "counts": ref["counts"].decode()}
        np.testing.assert_array_equal(decode_rle(ours), m.astype(bool))


@pytest.mark.testdata
def test_real_coco_segmentations_match_pycocotools(detection_dir: Path) -> None:
    data = json.loads(
        (detection_dir / "coco_datumaro" / "annotations" / "instances_val.json").read_text()
    )
    (image,) = data["images"]
    h, w = image["height"], image["width"]
    for ann in data["annotations"]:
        seg = ann["segmentation"]
        ours = annotation_mask(seg, height=h, width=w)
        rles = mask_utils.frPyObjects(seg, h, w)
        ref = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
        np.testing.assert_array_equal(ours, ref.astype(bool))
        assert int(ours.sum()) == ann["area"]  # 2 for the polygon, 20 for the crowd RLE


def test_bad_segmentations_raise() -> None:
    with pytest.raises(ValueError, match="polygon"):
        polygons_to_mask([[0, 0, 1, 1]], height=4, width=4)
    with pytest.raises(ValueError, match="sum"):
        decode_rle({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="differs"):
        annotation_mask({"size": [2, 2], "counts": [4]}, height=3, width=3)
