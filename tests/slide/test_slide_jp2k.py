"""Aperio JPEG 2000: 33005 (RGB, a real slide) and 33003 (YCbCr, written here).

OpenSlide decodes 33003 tiles as YCbCr and converts them with libjpeg's fixed
point tables; the tifffile backend must give the same pixels (max abs diff 0).
The 33003 file is written here: real H&E pixels converted to YCbCr, encoded as
J2K codestreams without a colour transform, in an Aperio-described TIFF.
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile

from slide.conftest import SlideAt
from tilestream.slide.fastpath import ycbcr_to_rgb

pytestmark = pytest.mark.testdata

DESCRIPTION = (
    "Aperio Image Library v11.0.37\r\n768x512 (256x256) J2K/YUV16 Q=70|AppMag = 20|MPP = 0.5"
)


def _rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.round(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def write_ycbcr_svs(path: Path, rgb: np.ndarray, *, corrupt_first: bool = False) -> None:
    ycc = _rgb_to_ycbcr(rgb)
    tiles = []
    for ty in range(0, rgb.shape[0], 256):
        for tx in range(0, rgb.shape[1], 256):
            tile = np.ascontiguousarray(ycc[ty : ty + 256, tx : tx + 256])
            tiles.append(
                imagecodecs.jpeg2k_encode(
                    tile, level=80, codecformat="J2K", mct=False, reversible=False
                )
            )
    if corrupt_first:
        tiles[0] = tiles[0][:40] + b"\x00" * (len(tiles[0]) - 40)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            iter(tiles),
            shape=rgb.shape,
            dtype=np.uint8,
            tile=(256, 256),
            compression=33003,
            photometric="rgb",
            description=DESCRIPTION,
            metadata=None,
        )


@pytest.fixture(scope="module")
def he_pixels(slides_dir: Path) -> np.ndarray:
    return tifffile.imread(slides_dir / "CMU-1-Small-Region.svs")[800:1312, 300:1068]


def test_ycbcr_jp2k_matches_openslide(
    tmp_path: Path, he_pixels: np.ndarray, slide_at: SlideAt
) -> None:
    path = tmp_path / "ycbcr.svs"
    write_ycbcr_svs(path, he_pixels)
    with slide_at.open(path) as slide, openslide.OpenSlide(path) as osr:
        assert slide.backend == "tifffile"
        assert slide.vendor == "aperio" and slide.mpp == (0.5, 0.5)
        got = np.asarray(slide.read_region((0, 0), 0, (768, 512)))
        want = np.asarray(osr.read_region((0, 0), 0, (768, 512)))
        np.testing.assert_array_equal(got, want)
        # and it is the picture we wrote (lossy J2K + YCbCr rounding)
        assert np.abs(got[..., :3].astype(int) - he_pixels).mean() < 2


def test_undecodable_ycbcr_jp2k_falls_back_to_openslide(
    tmp_path: Path, he_pixels: np.ndarray, slide_at: SlideAt
) -> None:
    path = tmp_path / "bad.svs"
    write_ycbcr_svs(path, he_pixels, corrupt_first=True)
    with slide_at.open(path) as slide:
        assert slide.backend == "openslide"


def test_ycbcr_to_rgb_is_the_jfif_conversion() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(_rgb_to_ycbcr(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 2


def test_rgb_jp2k_real_slide(slides_dir: Path, slide_at: SlideAt) -> None:
    path = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with slide_at.open(path) as slide, openslide.OpenSlide(path) as osr:
        for loc in [(0, 0), (1024, 768), (4443 - 300, 3567 - 200)]:
            np.testing.assert_array_equal(
                np.asarray(slide.read_region(loc, 0, (300, 200))),
                np.asarray(osr.read_region(loc, 0, (300, 200))),
            )
