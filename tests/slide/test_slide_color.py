"""ICC -> sRGB conversion (``color="srgb"``), checked against the colour science by hand.

A slide is written with an Adobe RGB (1998) ICC profile built here byte by
byte (a matrix/TRC profile); its pixels converted through LittleCMS must match
the textbook conversion Adobe RGB -> XYZ (D50) -> sRGB within 2 levels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from slide.conftest import SlideAt
from tilestream.errors import SlideError
from tilestream.slide.color import ColorTransform

GAMMA = 563 / 256  # Adobe RGB's 2.2 as the u8Fixed8 an ICC curve stores
D50 = (0.9642, 1.0, 0.8249)
ADOBE_D50 = np.array(  # columns: red, green, blue colorants (Bradford-adapted to D50)
    [[0.6097, 0.2053, 0.1492], [0.3111, 0.6257, 0.0632], [0.0195, 0.0609, 0.7446]]
)
SRGB_D50 = np.array(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def adobe_rgb_icc() -> bytes:
    """A minimal ICC v2 display profile of Adobe RGB (1998)."""
    text = b"Adobe RGB (1998) test profile\0"
    desc = (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(text))
        + text
        + b"\0" * 8  # no Unicode description
        + b"\0\0\0"  # no ScriptCode description
        + b"\0" * 67
    )
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(GAMMA * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(*D50)),
        (b"rXYZ", _xyz(*ADOBE_D50[:, 0])),
        (b"gXYZ", _xyz(*ADOBE_D50[:, 1])),
        (b"bXYZ", _xyz(*ADOBE_D50[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0public domain\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)  # perceptual
        + _s15(D50[0])
        + _s15(D50[1])
        + _s15(D50[2])
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def textbook_adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    linear = (rgb.astype(np.float64) / 255.0) ** GAMMA
    xyz = linear @ ADOBE_D50.T
    srgb_linear = np.clip(xyz @ np.linalg.inv(SRGB_D50).T, 0.0, 1.0)
    encoded = np.where(
        srgb_linear <= 0.0031308,
        12.92 * srgb_linear,
        1.055 * srgb_linear ** (1 / 2.4) - 0.055,
    )
    return np.round(encoded * 255.0).astype(np.int64)


@pytest.fixture(scope="module")
def adobe_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A tiled two-level TIFF of colour ramps tagged Adobe RGB."""
    y, x = np.mgrid[0:300, 0:400]
    pixels = np.stack([(x * 255) // 399, (y * 255) // 299, ((x + y) * 255) // 698], axis=-1).astype(
        np.uint8
    )
    path = tmp_path_factory.mktemp("icc") / "adobe.tif"
    icc = adobe_rgb_icc()
    with tifffile.TiffWriter(path) as tw:
        tw.write(pixels, tile=(128, 128), photometric="rgb", compression="zlib", iccprofile=icc)
        tw.write(
            np.ascontiguousarray(pixels[::2, ::2]),
            tile=(128, 128),
            photometric="rgb",
            compression="zlib",
            subfiletype=1,
        )
    return path, pixels


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_srgb_conversion_matches_the_textbook(
    adobe_slide: tuple[Path, np.ndarray], backend: str, slide_at: SlideAt
) -> None:
    path, pixels = adobe_slide
    with slide_at.open(path, backend=backend, color="srgb") as slide:
        assert slide.color_profile == adobe_rgb_icc()
        got = slide.read_region((0, 0), 0, (400, 300), as_array=True)
        want = textbook_adobe_to_srgb(pixels)
        assert np.abs(got.astype(np.int64) - want).max() <= 2
        assert np.abs(got.astype(np.int64) - pixels).max() > 20  # it really converted
        rgba = np.asarray(slide.read_region((350, 250), 0, (100, 100)))
        assert (rgba[:50, :50, 3] == 255).all() and (rgba[50:, :, 3] == 0).all()
        np.testing.assert_array_equal(rgba[:50, :50, :3], got[250:, 350:])
        thumb = slide.get_thumbnail((100, 100))
        assert thumb.mode == "RGB"
        transform = slide.color_transform()
        assert transform is not None and slide.color_transform() is transform  # built once
    with slide_at.open(path, backend=backend) as plain:  # default: stored values untouched
        np.testing.assert_array_equal(
            plain.read_region((0, 0), 0, (400, 300), as_array=True), pixels
        )


@pytest.mark.testdata
def test_srgb_is_a_no_op_without_a_profile(slides_dir: Path, slide_at: SlideAt) -> None:
    path = slides_dir / "CMU-1-Small-Region.svs"
    with slide_at.open(path, color="srgb") as a, slide_at.open(path) as b:
        assert a.color_profile is None and a.color_transform() is None
        np.testing.assert_array_equal(
            a.read_region((10, 10), 0, (64, 64), as_array=True),
            b.read_region((10, 10), 0, (64, 64), as_array=True),
        )


@pytest.mark.testdata
def test_srgb_profile_of_tcga_is_near_identity(slides_dir: Path, slide_at: SlideAt) -> None:
    path = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with slide_at.open(path, color="srgb") as a, slide_at.open(path) as b:
        assert a.color_profile is not None
        x = a.read_region((1000, 1000), 0, (256, 256), as_array=True).astype(int)
        y = b.read_region((1000, 1000), 0, (256, 256), as_array=True).astype(int)
        assert np.abs(x - y).max() <= 2


def test_invalid_profile() -> None:
    with pytest.raises(SlideError, match=r"bad\.tif: invalid ICC colour profile"):
        ColorTransform(b"not a profile", path="bad.tif")


def test_transform_on_images() -> None:
    transform = ColorTransform(adobe_rgb_icc())
    grey = Image.new("RGB", (4, 4), (128, 128, 128))
    out = transform.apply(grey)
    # Neutral greys stay neutral; Adobe RGB's gamma 2.2 vs sRGB's curve moves them a little.
    r, g, b = out.getpixel((0, 0))
    assert abs(r - g) <= 1 and abs(g - b) <= 1 and abs(r - 128) <= 4
    assert transform.apply(grey.convert("L")).mode == "RGB"
    rgba = transform.apply(Image.new("RGBA", (2, 2), (0, 200, 0, 77)))
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0))[3] == 77
