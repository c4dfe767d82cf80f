"""Memory is bounded by what a slide file holds and by a budget, not by what it declares.

The files are crafted here (kilobytes) with :mod:`_crafted_tiff`: a
10^6 x 10^6 px image in 65,536 px JPEG tiles, a sparse image whose tiles were
never written, strips with a huge ``RowsPerStrip``. Opening, reading regions,
thumbnails, the low-resolution pass and Deep Zoom tiles run in a child process
whose address space is capped (``RLIMIT_AS``) and under a timeout: each must
end quickly with the pixels or a clear ``SlideTooLargeError`` naming the file
(never a ``MemoryError``, a kill or hours).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _crafted_tiff import small_jpeg, write_tiff
from slide.conftest import SlideAt
from tilestream.errors import CorruptSlideError, SlideError, SlideTooLargeError
from tilestream.slide import DeepZoomGenerator, open_slide
from tilestream.slide import overview as overview_module
from tilestream.slide.limits import SlideLimits, default_limits, set_default_limits
from tilestream.testing.synthetic import make_synthetic_slide

TESTS = Path(__file__).resolve().parents[1]
CAP = 3 << 30  # address space of the child: the declared sizes need terabytes

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
    from tilestream.slide import DeepZoomGenerator, open_slide

    path, backend = sys.argv[1], sys.argv[2]
    results = {}

    def run(name, fn):
        t = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:
            results[name] = [type(exc).__name__, str(exc), time.perf_counter() - t]
        else:
            results[name] = ["ok", repr(value)[:200], time.perf_counter() - t]

    def with_slide(fn):
        with open_slide(path, backend=backend) as slide:
            return fn(slide)

    def lowres(slide):
        from tilestream.extract.lowres import mask_downsample, read_lowres
        return read_lowres(slide, mask_downsample(slide.dimensions, 256)).shape

    def deepzoom(slide):
        dz = DeepZoomGenerator(slide)
        return [dz.get_tile(level, (0, 0)).size for level in (0, dz.level_count // 2)]

    run("open", lambda: with_slide(lambda s: s.dimensions))
    run("region", lambda: with_slide(lambda s: s.read_region((0, 0), 0, (512, 512)).size))
    run("huge_region", lambda: with_slide(lambda s: s.read_region((0, 0), 0, s.dimensions)))
    run("thumbnail", lambda: with_slide(lambda s: s.get_thumbnail((256, 256)).size))
    run("lowres", lambda: with_slide(lowres))
    run("deepzoom", lambda: with_slide(deepzoom))
    print(json.dumps(results))
    """
)


def _in_child(path: Path, backend: str = "auto", timeout: float = 120) -> dict[str, list[object]]:
    env_path = str(TESTS.parent / "src")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), backend, str(CAP)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-3000:]}"
    results: dict[str, list[object]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def _assert_too_large(result: list[object], path: Path, *words: str) -> None:
    kind, message, seconds = result
    assert kind == "SlideTooLargeError", result
    assert str(path) in str(message)
    for word in words:
        assert word in str(message), result
    assert float(str(seconds)) < 5, result


@pytest.mark.parametrize("backend", ["auto", "tifffile", "openslide"])
def test_huge_declared_jpeg_tiles_are_refused_when_opened(tmp_path: Path, backend: str) -> None:
    """A 3 KB file declaring 10^6 x 10^6 px in 65,536 px JPEG tiles (12 GiB a tile)."""
    path = write_tiff(
        tmp_path / "bigtile.tif",
        width=10**6,
        height=10**6,
        tile=(65536, 65536),
        segments={0: small_jpeg()},
    )
    assert path.stat().st_size < 4096
    results = _in_child(path, backend)
    for result in results.values():
        _assert_too_large(result, path, "65536x65536", "tile budget")
    assert set(results) == {"open", "region", "huge_region", "thumbnail", "lowres", "deepzoom"}


def test_huge_rows_per_strip_is_refused_when_opened(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "strip.tif", width=10**5, height=10**5, segments={0: small_jpeg()})
    results = _in_child(path)
    for result in results.values():
        _assert_too_large(result, path, "stored strip of 100000x100000 px")


def test_sparse_slide_is_read_in_bounded_memory_and_time(tmp_path: Path) -> None:
    """10^5 x 10^5 px in 256 px tiles, one written: everything works, fast."""
    path = write_tiff(
        tmp_path / "sparse.tif",
        width=10**5,
        height=10**5,
        tile=(256, 256),
        segments={0: small_jpeg(256)},
    )
    results = _in_child(path)
    for name in ("open", "region", "thumbnail", "lowres", "deepzoom"):
        kind, _, seconds = results[name]
        assert kind == "ok", (name, results[name])
        assert float(str(seconds)) < 20, (name, results[name])
    assert results["thumbnail"][1] == "(256, 256)"
    assert results["lowres"][1] == "(6250, 6250)"
    _assert_too_large(results["huge_region"], path, "100000x100000", "region budget")


def test_sparse_tiles_are_never_decoded_nor_cached(tmp_path: Path, slide_at: SlideAt) -> None:
    path = write_tiff(
        tmp_path / "sparse.tif",
        width=20000,
        height=12000,
        tile=(256, 256),
        segments={0: small_jpeg(256, value=40), 2000: small_jpeg(256, value=200)},
    )
    with slide_at.open(path) as slide:
        thumb = np.asarray(slide.get_thumbnail((200, 200)))
        info = slide.cache_info()
        assert info is not None
        assert info["misses"] == 2, info  # the two stored tiles, nothing else
        low = slide.read_level_resized(0, (2000, 1200))
        assert np.abs(low[:25, :25].astype(int) - 40).max() <= 2
        assert low[30:1000, 30:1000].min() == 255 or low[30:1000, 30:1000].mean() > 250
        # tile 2000 of the 79-column grid: column 25, row 25
        col, row = 2000 % 79, 2000 // 79
        assert abs(int(low[row * 256 // 10 + 12, col * 256 // 10 + 12, 0]) - 200) <= 3
        assert (slide.cache_info() or {})["misses"] == 2
        reduced = slide.read_region_reduced((0, 0), 0, (1000, 600), 4)  # 16 x 10 tiles
        assert abs(int(reduced[0, 0, 0]) - 40) <= 2 and reduced[100:, 100:].min() == 255
        assert (slide.cache_info() or {})["misses"] == 3  # + tile 0 reduced; sparse ones free
    assert thumb.shape == (120, 200, 3)


def test_byte_count_beyond_the_file_is_corrupt_not_an_allocation(
    tmp_path: Path, slide_at: SlideAt
) -> None:
    path = write_tiff(
        tmp_path / "lie.tif", width=512, height=512, tile=(256, 256), segments={0: small_jpeg(256)}
    )
    data = bytearray(path.read_bytes())
    # TileByteCounts of tile 0 -> 2 GiB (the first of its 4 LONGs holds 0x... bytes)
    index = data.find(len(small_jpeg(256)).to_bytes(4, "little"), 8 + len(small_jpeg(256)))
    data[index : index + 4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    name = slide_at.name(path)
    tracemalloc.start()
    try:
        with slide_at.open(path, backend="tifffile") as slide:
            with pytest.raises(CorruptSlideError, match="beyond the end") as info:
                slide.read_region((0, 0), 0, (16, 16))
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert name in str(info.value)
    assert peak < 64 << 20


def test_region_budget_is_checked_before_reading(tmp_path: Path, slide_at: SlideAt) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=2048, height=1024, levels=1)
    limits = SlideLimits(region_bytes=4 << 20)
    with slide_at.open(path, limits=limits) as slide:
        assert slide.limits is limits
        slide.read_region((0, 0), 0, (1024, 1024))  # 4 MiB as RGBA: at the budget
        with pytest.raises(SlideTooLargeError, match=r"1025x1024 px needs 4\.0 MiB") as info:
            slide.read_region((0, 0), 0, (1025, 1024), as_array=True)
        assert slide_at.name(path) in str(info.value) and isinstance(info.value, OSError)
        with pytest.raises(SlideTooLargeError, match="reduced 2x"):
            slide.read_region_reduced((0, 0), 0, (2048, 1024), 2)
        # The thumbnail's level is over budget: reduced in chunks instead.
        thumb = slide.get_thumbnail((256, 256))
        with slide_at.open(path) as unbounded:
            expected = unbounded.get_thumbnail((256, 256))
        assert thumb.size == expected.size
        diff = np.abs(np.asarray(thumb, np.int16) - np.asarray(expected, np.int16))
        assert diff.mean() < 3
    # Pickled to workers with its budget.
    import pickle

    with pickle.loads(pickle.dumps(slide_at.open(path, limits=limits))) as again:
        assert again.limits == limits


def test_tile_budget_refuses_any_backend(tmp_path: Path, slide_at: SlideAt) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=1024, height=1024, levels=1, tile_size=256)
    small = SlideLimits(tile_bytes=256 * 256 * 4 - 1)
    for backend in ("auto", "tifffile", "openslide"):
        with pytest.raises(SlideTooLargeError, match=r"256x256 px needs 256\.0 KiB"):
            slide_at.open(path, backend=backend, limits=small)
        slide_at.open(path, backend=backend, limits=SlideLimits(tile_bytes=256 * 256 * 4)).close()


def test_flat_and_associated_images_are_checked(
    tmp_path: Path, cmu_slide: Path, slide_at: SlideAt
) -> None:
    png = tmp_path / "flat.png"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(png)
    with pytest.raises(SlideTooLargeError, match="flat image"):
        slide_at.open(png, limits=SlideLimits(region_bytes=400 * 300 * 4 - 1))
    for backend in ("tifffile", "openslide"):
        limits = SlideLimits(region_bytes=1280 * 431 * 4 - 1)
        with slide_at.open(cmu_slide, backend=backend, limits=limits) as slide:
            slide.associated_images["label"]
            with pytest.raises(SlideTooLargeError, match="associated image 'macro'"):
                slide.associated_images["macro"]


def test_default_limits_are_module_wide(tmp_path: Path, slide_at: SlideAt) -> None:
    path = tmp_path / "s.svs"
    make_synthetic_slide(path, width=1024, height=512, levels=1)
    old = set_default_limits(SlideLimits(region_bytes=1000))
    try:
        with slide_at.open(path) as slide, pytest.raises(SlideTooLargeError):
            slide.read_region((0, 0), 0, (16, 16))
    finally:
        set_default_limits(old)
    assert default_limits() == old
    with pytest.raises(ValueError, match="positive"):
        SlideLimits(tile_bytes=0)


def test_deepzoom_tiles_over_budget_are_reduced_in_chunks(
    cmu_slide: Path, slide_at: SlideAt
) -> None:
    """A one-level slide: coarse Deep Zoom levels read the whole slide per tile."""
    limits = SlideLimits(region_bytes=1 << 20)
    with slide_at.open(cmu_slide, limits=limits) as bounded, slide_at.open(cmu_slide) as slide:
        dz_small = DeepZoomGenerator(bounded)
        dz = DeepZoomGenerator(slide)
        for level in range(dz.level_count - 4):
            for address in ((0, 0), tuple(v - 1 for v in dz.level_tiles[level])):
                expected = dz.get_tile(level, address)
                got = dz_small.get_tile(level, address)
                assert got.size == expected.size
                diff = np.abs(np.asarray(got, np.int16) - np.asarray(expected, np.int16))
                assert diff.mean() < 6, (level, address, diff.mean())


# -- the chunked box reduction -----------------------------------------------------
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    factor=st.integers(1, 40),
    chunk=st.sampled_from([97, 1000, 1 << 14, 1 << 20]),
    rect=st.tuples(
        st.integers(0, 300), st.integers(0, 200), st.integers(1, 400), st.integers(1, 300)
    ),
)
def test_read_level_resized_is_the_exact_box_mean(
    synthetic_small: Path,
    factor: int,
    chunk: int,
    rect: tuple[int, int, int, int],
    slide_at: SlideAt,
) -> None:
    x, y, w, h = rect
    w, h = min(w, 1000 - x), min(h, 600 - y)
    with slide_at.open(synthetic_small) as slide:
        full = slide.read_region((x, y), 0, (w, h), as_array=True)
        size = (max(1, w // factor), max(1, h // factor))
        old = overview_module.CHUNK_PIXELS, overview_module.BAND_BYTES
        overview_module.CHUNK_PIXELS, overview_module.BAND_BYTES = chunk, max(24, chunk * 8)
        try:
            got = slide.read_level_resized(0, size, rect=(x, y, w, h))
        finally:
            overview_module.CHUNK_PIXELS, overview_module.BAND_BYTES = old
    # Pillow's BOX boxes: columns [round(j * w / size), ...), the mean rounded half up.
    bx = [(2 * j * w + size[0]) // (2 * size[0]) for j in range(size[0] + 1)]
    by = [(2 * i * h + size[1]) // (2 * size[1]) for i in range(size[1] + 1)]
    sums = np.add.reduceat(np.add.reduceat(full.astype(np.int64), by[:-1], 0), bx[:-1], 1)
    counts = np.outer(np.diff(by), np.diff(bx))[..., None]
    assert np.array_equal(got, (2 * sums + counts) // (2 * counts))
    if factor in (1, 2, 4) and w % factor == 0 and h % factor == 0:  # Pillow's exact cases
        assert np.array_equal(got, np.asarray(Image.fromarray(full).reduce(factor)))


@pytest.fixture(scope="module")
def synthetic_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("syn") / "small.svs"
    make_synthetic_slide(path, width=1000, height=600, levels=1, tile_size=128)
    return path


# -- any declared geometry: bounded memory, only SlideErrors -------------------------
LIMITS = SlideLimits(tile_bytes=8 << 20, region_bytes=32 << 20)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 10**7),
    height=st.integers(1, 10**7),
    tile=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from([16, 256, 1024, 4096, 65536]), st.sampled_from([16, 256, 4096, 65536])
        ),
    ),
    rows_per_strip=st.integers(1, 10**6),
    written=st.lists(st.integers(0, 50), max_size=3),
)
def test_any_declared_geometry_stays_within_budget(
    tmp_path: Path,
    width: int,
    height: int,
    tile: tuple[int, int] | None,
    rows_per_strip: int,
    written: list[int],
) -> None:
    if tile is not None:
        count = -(-width // tile[0]) * -(-height // tile[1])
    else:
        count = -(-height // min(rows_per_strip, height))
    if count > 200_000:  # the file would hold the table: megabytes
        count = 1000  # a short table: refused as not matching the grid
    segments = {i: small_jpeg(16) for i in written if i < count}
    path = write_tiff(
        tmp_path / "g.tif",
        width=width,
        height=height,
        tile=tile,
        rows_per_strip=rows_per_strip,
        segments=segments,
        count=count,
    )
    tracemalloc.start()
    t = time.perf_counter()
    error: SlideError | None = None
    try:
        with open_slide(path, backend="tifffile", limits=LIMITS) as slide:
            slide.read_region((0, 0), 0, (64, 64))
            slide.read_region((width // 2, height // 2), 0, (64, 64), as_array=True)
            slide.get_thumbnail((128, 128))
            dz = DeepZoomGenerator(slide)
            dz.get_tile(min(1, dz.level_count - 1), (0, 0))
    except SlideError as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert error is None or str(path) in str(error)
    assert peak < 6 * LIMITS.region_bytes
    assert time.perf_counter() - t < 30
