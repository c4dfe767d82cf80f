"""The lossless DCT-domain mosaic: 256 px tiles assembled from 240 px stored JPEG tiles.

Against real stored tiles (CMU-1-Small-Region.svs), synthetic slides and
tiles encoded here with every usual sampling, with and without restart
markers; decoded by libjpeg-turbo (simplejpeg in strict mode: any warning is
an error), Pillow and imagecodecs.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from conftest import missing  # tests/conftest.py: skip here, fail under CI=true
from slide.conftest import SlideAt
from tilestream.errors import MissingDependencyError
from tilestream.slide import jpeg_mosaic as jm
from tilestream.slide import open_slide
from tilestream.testing.synthetic import make_synthetic_slide

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _needs_extension(request: pytest.FixtureRequest) -> None:
    if "without_the_extension" not in request.node.name and not jm.available():
        missing("the compiled extension tilestream.slide._jpegdct is not built")


@pytest.fixture(scope="module")
def tissue(slides_dir: Path) -> np.ndarray:
    """720 x 720 px of real tissue (level 0 of CMU-1-Small-Region)."""
    with open_slide(slides_dir / "CMU-1-Small-Region.svs", backend="tifffile") as slide:
        return np.asarray(slide.read_region((600, 900), 0, (720, 720)))[..., :3].copy()


def _encode(rgb: np.ndarray, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **options)
    return buf.getvalue()


def _stored(tissue: np.ndarray, size: int = 240, **options: object) -> dict[tuple[int, int], bytes]:
    n = tissue.shape[0] // size
    return {
        (c, r): _encode(tissue[r * size : (r + 1) * size, c * size : (c + 1) * size], **options)
        for r in range(n)
        for c in range(n)
    }


def _decode_grid(
    tiles: dict[tuple[int, int], bytes], size: int, *, fast: bool = False
) -> np.ndarray:
    n = max(c for c, _ in tiles) + 1
    out = np.zeros((n * size, n * size, 3), np.uint8)
    for (c, r), data in tiles.items():
        out[r * size : (r + 1) * size, c * size : (c + 1) * size] = simplejpeg.decode_jpeg(
            data, fastupsample=fast
        )
    return out


def _seam_band(x: int, y: int, size: int, tile: int) -> np.ndarray:
    """Pixels of an output tile within 1 px of a stored-tile seam or of its own edge."""
    band = np.zeros((size, size), bool)
    band[[0, -1], :] = band[:, [0, -1]] = True
    for v in range(size):
        if (x + v) % tile in (0, tile - 1):
            band[:, v] = True
        if (y + v) % tile in (0, tile - 1):
            band[v, :] = True
    return band


def test_real_aperio_tiles_give_the_stored_pixels_bit_for_bit(
    cmu_slide: Path, slide_at: SlideAt
) -> None:
    with slide_at.open(cmu_slide, backend="tifffile") as slide:
        width, height = slide.dimensions
        assert slide.stored_tile_grid(0) == (240, 240)
        cache = jm.CoefficientCache(
            lambda c, r: slide.read_stored_tile_bytes(0, c, r), 240, 240, image_size=(width, height)
        )
        touched = set()
        for y in range(0, height - 255, 256):
            for x in range(0, width - 255, 256):
                out = cache.mosaic(x, y, 256, 256)
                assert out is not None
                expected = np.asarray(slide.read_region((x, y), 0, (256, 256)))[..., :3]
                assert np.array_equal(simplejpeg.decode_jpeg(out), expected), (x, y)
                assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), expected)
                touched |= {
                    (c, r)
                    for c in {x // 240, (x + 255) // 240}
                    for r in {y // 240, (y + 255) // 240}
                }
        # Each stored tile entropy-decoded once, shared by the output tiles needing it.
        assert cache.decoded == len(touched)
        # Past the level's edge: refused, the caller re-encodes.
        assert cache.mosaic(width - width % 16, 0, 256, 256) is None


@pytest.mark.parametrize("tile_size", [240, 256])
def test_synthetic_slides(tmp_path: Path, tile_size: int, slide_at: SlideAt) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=1100, height=800, levels=1, tile_size=tile_size, seed=4)
    with slide_at.open(path, backend="tifffile") as slide:
        cache = jm.CoefficientCache.for_slide(slide, 0)
        assert cache is not None and cache.image_size == (1100, 800)
        for y in range(0, 800 - 255, 256):
            for x in range(0, 1100 - 255, 256):
                out = cache.mosaic(x, y, 256, 256)
                assert out is not None
                expected = np.asarray(slide.read_region((x, y), 0, (256, 256)))[..., :3]
                assert np.array_equal(simplejpeg.decode_jpeg(out), expected), (x, y)


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
@pytest.mark.parametrize(
    "restart",
    [{}, {"restart_marker_blocks": 5}, {"restart_marker_rows": 1}],
    ids=["no-restart", "restart-5-mcus", "restart-1-row"],
)
@pytest.mark.parametrize("optimize", [False, True], ids=["stored-tables", "optimal-tables"])
def test_every_sampling_with_and_without_restart_markers(
    tissue: np.ndarray, subsampling: int, restart: dict[str, int], optimize: bool
) -> None:
    tiles = _stored(tissue, quality=85, subsampling=subsampling, **restart)
    assert (b"\xff\xdd" in tiles[(0, 0)]) == bool(restart)
    exact = _decode_grid(tiles, 240, fast=True)
    fancy = _decode_grid(tiles, 240)
    decoded = {key: jm.decode_coefficients(data) for key, data in tiles.items()}
    for x, y in [(0, 0), (256, 0), (0, 256), (256, 256), (448, 464), (464, 448)]:
        out = jm.mosaic(decoded, 240, 240, x, y, 256, 256, image_size=(720, 720), optimize=optimize)
        assert out is not None, (x, y)
        assert jm.mosaic(tiles, 240, 240, x, y, 256, 256, optimize=optimize) == out  # from bytes
        assert out.startswith(b"\xff\xd8") and b"\xff\xc0" in out and b"\xff\xdd" not in out
        # The coefficients are the stored ones: with plain upsampling, every pixel agrees.
        got = simplejpeg.decode_jpeg(out, fastupsample=True)  # strict: a warning would raise
        assert np.array_equal(got, exact[y : y + 256, x : x + 256]), (x, y)
        # With fancy chroma upsampling only the 1 px bands at the seams can differ.
        got = simplejpeg.decode_jpeg(out)
        same = (got == fancy[y : y + 256, x : x + 256]).all(axis=2)
        if subsampling == 0:
            assert same.all()
        else:
            assert same[~_seam_band(x, y, 256, 240)].all()
        assert np.array_equal(np.asarray(imagecodecs.jpeg8_decode(out)), got)


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
def test_copied_bits_are_the_re_encoded_ones(tissue: np.ndarray, subsampling: int) -> None:
    # Without restart markers the outputs copy the stored tiles' coded bits (a new DC
    # code where a run of blocks from one tile starts); with them the coefficients are
    # re-encoded. The same image, quality and tables: the same bytes, at every offset.
    copied = _stored(tissue, quality=85, subsampling=subsampling)
    encoded = _stored(tissue, quality=85, subsampling=subsampling, restart_marker_rows=1)
    a = {key: jm.decode_coefficients(data) for key, data in copied.items()}
    b = {key: jm.decode_coefficients(data) for key, data in encoded.items()}
    for x, y, w, h in [(0, 0, 720, 720), (16, 32, 256, 256), (224, 208, 256, 256),
                       (464, 448, 256, 256), (208, 0, 64, 720), (0, 224, 720, 32)]:  # fmt: skip
        out = jm.mosaic(a, 240, 240, x, y, w, h)
        assert out is not None and out == jm.mosaic(b, 240, 240, x, y, w, h), (x, y, w, h)


def _gray_8x8(scan: bytes) -> bytes:
    """A one-block grayscale JPEG with tiny Huffman tables (DC: 0; AC: EOB, 0/1, ZRL)."""
    seg = lambda marker, body: bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body  # noqa: E731
    return (
        b"\xff\xd8"
        + seg(0xDB, b"\x00" + b"\x01" * 64)
        + seg(0xC0, bytes([8, 0, 8, 0, 8, 1, 1, 0x11, 0]))
        + seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
        + seg(0xC4, b"\x10" + bytes([0, 3] + [0] * 14) + bytes([0x00, 0x01, 0xF0]))
        + seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
        + scan
        + b"\xff\xd9"
    )


def test_a_tile_not_coded_as_an_encoder_codes_it_is_re_encoded() -> None:
    # DC 0, AC 1 at index 1, then EOB (00110011, padded with ones); the same block
    # with a zero run before the EOB (ZRL, EOB: 00111000). Copying the second one's
    # bits would keep the needless ZRL: it is re-encoded as the first.
    canonical, odd = _gray_8x8(b"\x33"), _gray_8x8(b"\x38")
    a = jm.mosaic({(0, 0): jm.decode_coefficients(canonical)}, 8, 8, 0, 0, 8, 8)
    b = jm.mosaic({(0, 0): jm.decode_coefficients(odd)}, 8, 8, 0, 0, 8, 8)
    assert a is not None and a == b and a.endswith(b"\x33\xff\xd9")
    assert np.array_equal(simplejpeg.decode_jpeg(a, colorspace="GRAY"),
                          simplejpeg.decode_jpeg(odd, colorspace="GRAY"))  # fmt: skip


def test_huffman_tables_stored_or_optimal(tissue: np.ndarray) -> None:
    tiles = _stored(tissue, quality=90, subsampling=2)
    decoded = {key: jm.decode_coefficients(data) for key, data in tiles.items()}
    stored = jm.mosaic(decoded, 240, 240, 256, 256, 224, 224)
    optimal = jm.mosaic(decoded, 240, 240, 256, 256, 224, 224, optimize=True)
    assert stored is not None and optimal is not None
    dht = tiles[(1, 1)].index(b"\xff\xc4")
    tables = tiles[(1, 1)][dht : tiles[(1, 1)].index(b"\xff\xda")]
    assert tables in stored and tables not in optimal  # Pillow's standard tables, reused
    assert len(optimal) < len(stored)
    assert np.array_equal(simplejpeg.decode_jpeg(stored), simplejpeg.decode_jpeg(optimal))
    # Pillow's optimised tables lack DC categories a seam may need: optimal tables then.
    own = {
        key: jm.decode_coefficients(
            _encode(simplejpeg.decode_jpeg(data), quality=90, subsampling=2, optimize=True)
        )
        for key, data in tiles.items()
    }
    for x, y in [(0, 0), (256, 256), (464, 464)]:
        out = jm.mosaic(own, 240, 240, x, y, 256, 256)
        assert out is not None
        simplejpeg.decode_jpeg(out)


def test_no_cache_for_levels_without_stored_jpeg_tiles(slides_dir: Path, slide_at: SlideAt) -> None:
    with slide_at.open(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", backend="tifffile") as slide:
        assert slide.stored_tile_grid(0) is None
        assert jm.CoefficientCache.for_slide(slide, 0) is None


def test_threads_share_a_cache(tissue: np.ndarray) -> None:
    # The extension works without the GIL; one cache serves every thread.
    tiles = _stored(tissue, quality=85, subsampling=2, restart_marker_rows=1)
    origins = [(x, y) for y in range(0, 465, 16) for x in range(0, 465, 16)]
    cache = jm.CoefficientCache(lambda c, r: tiles.get((c, r)), 240, 240, image_size=(720, 720))
    expected = [jm.mosaic(tiles, 240, 240, x, y, 256, 256) for x, y in origins]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda o: cache.mosaic(o[0], o[1], 256, 256), origins))
    assert got == expected and None not in got
    assert cache.decoded == len(tiles)  # a tile another thread is decoding is waited for


def test_grayscale(tissue: np.ndarray) -> None:
    gray = np.ascontiguousarray(tissue[..., 1])
    tiles = {
        (c, r): _encode(gray[r * 240 : (r + 1) * 240, c * 240 : (c + 1) * 240], quality=90)
        for r in range(3)
        for c in range(3)
    }
    out = jm.mosaic(tiles, 240, 240, 256, 256, 256, 256)
    assert out is not None
    expected = np.concatenate(
        [
            np.concatenate([np.asarray(Image.open(io.BytesIO(tiles[(c, r)]))) for c in range(3)], 1)
            for r in range(3)
        ]
    )
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), expected[256:512, 256:512])


def test_what_cannot_be_assembled_is_refused(tissue: np.ndarray) -> None:
    tiles = _stored(tissue, quality=85, subsampling=2)
    assert jm.mosaic(tiles, 240, 240, 8, 0, 256, 256) is None  # not on the 16 px MCU grid
    assert jm.mosaic(tiles, 240, 240, 0, 0, 250, 256) is None
    assert (
        jm.mosaic(tiles, 240, 240, 480, 0, 256, 256, image_size=(720, 720)) is None
    )  # past the edge
    partial = dict(tiles)
    del partial[(1, 1)]
    assert jm.mosaic(partial, 240, 240, 0, 0, 256, 256) is None  # a missing (sparse) tile
    mixed = dict(tiles)
    mixed[(1, 0)] = _encode(tissue[:240, 240:480], quality=60, subsampling=2)
    assert jm.mosaic(mixed, 240, 240, 0, 0, 256, 256) is None  # other quantisation tables
    mixed[(1, 0)] = _encode(tissue[:240, 240:480], quality=85, subsampling=0)
    assert jm.mosaic(mixed, 240, 240, 0, 0, 256, 256) is None  # other sampling
    progressive = _encode(tissue[:240, 240:480], quality=85, subsampling=2, progressive=True)
    with pytest.raises(jm.UnsupportedJpegError, match="not a baseline JPEG"):
        jm.decode_coefficients(progressive)
    mixed[(1, 0)] = progressive
    assert jm.mosaic(mixed, 240, 240, 0, 0, 256, 256) is None
    assert jm.can_mosaic(240, 240, 256, 256, 256, 256, image_size=(720, 720))
    assert not jm.can_mosaic(240, 240, 256, 256, 256, 256, image_size=(500, 720))
    assert not jm.can_mosaic(250, 250, 0, 0, 256, 256)
    decoded = {key: jm.decode_coefficients(data) for key, data in tiles.items()}
    assert jm.can_mosaic(240, 240, 256, 256, 256, 256, sources=decoded)
    decoded[(1, 1)] = jm.decode_coefficients(_encode(tissue[:240, :240], quality=85, subsampling=0))
    assert not jm.can_mosaic(240, 240, 256, 256, 256, 256, sources=decoded)  # other sampling
    assert jm.can_mosaic(240, 240, 480, 480, 224, 224, sources=decoded)  # (1, 1) not touched


def test_corrupt_tiles_raise_a_clear_error(tissue: np.ndarray) -> None:
    data = _encode(tissue[:240, :240], quality=85, subsampling=2, restart_marker_blocks=3)
    scan = data.index(b"\xff\xda")
    with pytest.raises(jm.JpegMosaicError, match=r"slide\.svs: stored tile"):
        jm.decode_coefficients(data[: scan + 400], where="stored tile (0, 0)", path="slide.svs")
    with pytest.raises(jm.JpegMosaicError, match="no SOI"):
        jm.decode_coefficients(b"GIF89a" + data)
    cache = jm.CoefficientCache(lambda c, r: data[: len(data) // 2], 240, 240, path="x.svs")
    with pytest.raises(jm.JpegMosaicError, match=r"x.svs: stored tile \(0, 0\)"):
        cache.mosaic(0, 0, 224, 224)
    assert isinstance(jm.JpegMosaicError("x"), ValueError)
    # A Huffman table with three 1-bit codes (found by fuzzing: it once wrote past
    # the lookahead table): refused.
    dht = data.index(b"\xff\xc4")
    bad = bytearray(data)
    donor = next(j for j in range(dht + 6, dht + 21) if bad[j] >= 3)
    bad[donor] -= 3  # same symbol count, so only the code lengths are wrong
    bad[dht + 5] = 3
    with pytest.raises(jm.JpegMosaicError, match="codes overflow"):
        jm.decode_coefficients(bytes(bad))


def test_hostile_bytes_never_crash(tissue: np.ndarray) -> None:
    # Random mutations of valid tiles (restart markers, 4:2:0 and 4:4:4) and every
    # truncation of a small one: a result or JpegMosaicError, never a crash.
    rng = np.random.default_rng(17)
    seeds = [
        _encode(tissue[:48, :64], quality=80, subsampling=2, restart_marker_blocks=2),
        _encode(tissue[:32, :32], quality=95, subsampling=0),
    ]
    for cut in range(len(seeds[1])):
        with contextlib.suppress(jm.JpegMosaicError):
            jm.decode_coefficients(seeds[1][:cut])
    outcomes = {"ok": 0, "error": 0}
    for i in range(3000):
        data = bytearray(seeds[i % 2])
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(0, len(data)))
            data[pos] = int(rng.integers(0, 256)) if rng.random() < 0.8 else 0xFF
        try:
            coefs = jm.decode_coefficients(bytes(data), max_pixels=1 << 20)
        except jm.JpegMosaicError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        w = coefs.width // coefs.mcu_width * coefs.mcu_width
        h = coefs.height // coefs.mcu_height * coefs.mcu_height
        if w and h:
            size = (coefs.width, coefs.height)
            out = jm.mosaic({(0, 0): coefs}, *size, 0, 0, w, h, optimize=i % 3 == 0)
            if out is not None:
                simplejpeg.decode_jpeg(out)  # well-formed: strict mode passes
    assert outcomes["ok"] and outcomes["error"]


def test_without_the_extension_the_caller_is_told_to_re_encode() -> None:
    code = (
        "import sys; sys.modules['tilestream.slide._jpegdct'] = None\n"
        "from tilestream.slide import jpeg_mosaic as jm\n"
        "from tilestream.errors import MissingDependencyError\n"
        "assert not jm.available()\n"
        "assert not jm.can_mosaic(240, 240, 0, 0, 256, 256)\n"
        "assert jm.mosaic({(0, 0): b'x'}, 240, 240, 0, 0, 224, 224) is None\n"
        "assert jm.CoefficientCache(lambda c, r: b'x', 240, 240).mosaic(0, 0, 224, 224) is None\n"
        "try:\n    jm.decode_coefficients(b'x')\nexcept MissingDependencyError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "compiled extension" in result.stdout
    assert issubclass(MissingDependencyError, ImportError)
