"""The resizers of the extraction: Pillow's Lanczos and libvips' Lanczos-3, chosen in the config."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import openslide
import pytest
from numpy.typing import NDArray
from PIL import Image

from _remote import Remote, storage_kinds
from tilestream.errors import ConfigError, MissingDependencyError
from tilestream.extract import ExtractConfig, extract_tiles, resample
from tilestream.extract.resample import resize_tile, resolve_resizer


def _psnr(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def regions(cmu_slide: Path) -> list[NDArray[np.uint8]]:
    """604 px tissue regions of the sample slide (302 um at its 0.499 um/px), read by OpenSlide."""
    with openslide.OpenSlide(cmu_slide) as osr:
        w, h = osr.dimensions
        return [
            np.asarray(osr.read_region((x, y), 0, (604, 604)).convert("RGB"))
            for x in range(0, w - 604, 500)
            for y in range(0, h - 604, 500)
        ]


def _libvips_lanczos3(
    region: NDArray[np.uint8], size: int, pyvips: ModuleType
) -> NDArray[np.uint8]:
    """libvips' ``reduce(kernel="lanczos3")`` of ``region``, through a fresh pipeline."""
    h, w, _ = region.shape
    image = pyvips.Image.new_from_memory(region.tobytes(), w, h, 3, "uchar")
    out = image.reduce(w / size, h / size, kernel="lanczos3")
    return np.frombuffer(out.write_to_memory(), np.uint8).reshape(size, size, 3)


def test_pillow_resizer_is_pillows_lanczos(regions: list[NDArray[np.uint8]]) -> None:
    for region in regions:
        want = np.asarray(Image.fromarray(region).resize((299, 299), Image.Resampling.LANCZOS))
        assert np.array_equal(resize_tile(region, 299, resizer="pillow"), want)


def test_vips_resizer_is_libvips_lanczos3_and_close_to_pillow(
    regions: list[NDArray[np.uint8]], pyvips: ModuleType
) -> None:
    """libvips' own ``reduce`` pixels, above 50 dB from Pillow's Lanczos (53-67 dB measured)."""
    psnrs = []
    for region in regions:
        want = _libvips_lanczos3(region, 299, pyvips)
        got = resize_tile(region, 299, resizer="vips")
        assert got.dtype == np.uint8 and np.array_equal(got, want)
        pillow = resize_tile(region, 299, resizer="pillow")
        psnrs.append(_psnr(got, pillow))
        assert float(np.abs(got.astype(int) - pillow.astype(int)).mean()) < 0.5
    assert len(psnrs) >= 4 and min(psnrs) > 50.0, psnrs


def test_vips_pipeline_reused_for_new_pixels_gives_fresh_results(
    regions: list[NDArray[np.uint8]], pyvips: ModuleType
) -> None:
    """Each thread reuses one libvips pipeline per shape: never a result of earlier pixels."""
    fresh = [_libvips_lanczos3(region, 299, pyvips) for region in regions]
    order = [*range(len(regions)), *reversed(range(len(regions))), 0, 0, 1]

    def run() -> list[NDArray[np.uint8]]:
        return [resize_tile(regions[i], 299, resizer="vips") for i in order]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run(), range(3)))
    for got in [run(), *results]:
        for i, tile in zip(order, got, strict=True):
            assert np.array_equal(tile, fresh[i])
    # Another shape through the same thread: its own pipeline.
    small = regions[0][:512, :512]
    assert resize_tile(small, 256, resizer="vips").shape == (256, 256, 3)
    assert np.array_equal(resize_tile(regions[1], 299, resizer="vips"), fresh[1])


@pytest.mark.parametrize("n", [300, 302, 512, 513, 604, 1208, 1209])
@pytest.mark.parametrize("size", [224, 256, 299])
def test_vips_output_is_exactly_the_requested_size(n: int, size: int, pyvips: ModuleType) -> None:
    tile = np.random.default_rng(n).integers(0, 256, (n, n, 3), dtype=np.uint8)
    assert resize_tile(tile, size, resizer="vips").shape == (size, size, 3)


@pytest.mark.parametrize("resizer", ["pillow", "vips"])
def test_enlarging_by_a_pixel_is_pillows_lanczos(
    resizer: str, request: pytest.FixtureRequest
) -> None:
    """A level within rounding of the scale can need 1023 px -> 1024: Pillow does it either way."""
    if resizer == "vips":
        request.getfixturevalue("pyvips")
    tile = np.random.default_rng(0).integers(0, 256, (1023, 1023, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(tile).resize((1024, 1024), Image.Resampling.LANCZOS))
    assert np.array_equal(resize_tile(tile, 1024, resizer=resizer), want)


@pytest.mark.parametrize("bands", [1, 4])
def test_grey_and_rgba_tiles(
    bands: int, regions: list[NDArray[np.uint8]], pyvips: ModuleType
) -> None:
    rgb = regions[0]
    opaque = np.full(rgb.shape[:2], 255, np.uint8)  # Pillow premultiplies alpha; libvips does not
    tile = rgb[..., 0] if bands == 1 else np.dstack([rgb, opaque])
    got = resize_tile(tile, 299, resizer="vips")
    pillow = resize_tile(tile, 299, resizer="pillow")
    assert got.shape == pillow.shape == (299, 299, *tile.shape[2:])
    assert _psnr(got, pillow) > 50.0


def test_other_dtypes_and_bad_sizes_are_refused(pyvips: ModuleType) -> None:
    for resizer in ("pillow", "vips"):
        with pytest.raises(ValueError, match="uint8 pixels, not uint16"):
            resize_tile(np.zeros((604, 604, 3), np.uint16), 299, resizer=resizer)
        with pytest.raises(ValueError, match="to 0 px"):
            resize_tile(np.zeros((604, 604, 3), np.uint8), 0, resizer=resizer)
    with pytest.raises(ConfigError, match="resizer must be one of"):
        resize_tile(np.zeros((299, 299, 3), np.uint8), 299, resizer="bicubic")


def test_a_tile_of_the_right_size_is_returned_as_it_is() -> None:
    tile = np.zeros((299, 299, 3), np.uint8)
    assert resize_tile(tile, 299, resizer="vips") is tile


def test_auto_is_recorded_as_the_resizer_it_chose(pyvips: ModuleType) -> None:
    auto = ExtractConfig(tile_px=299, tile_um=302)
    assert auto.resizer == "vips" and auto.to_dict()["resizer"] == "vips"
    pillow = ExtractConfig(tile_px=299, tile_um=302, resizer="pillow")
    assert pillow.hash() != auto.hash()  # other pixels: resume re-extracts
    assert ExtractConfig.from_dict(pillow.to_dict()) == pillow


def test_pillow_configs_keep_the_hash_of_runs_made_before_the_option() -> None:
    """Pillow gives the earlier versions' pixels, so their runs resume instead of re-extracting."""
    import hashlib
    import json

    # grid="exact" is the grid of those versions too (the default snaps since)
    pillow = ExtractConfig(tile_px=299, tile_um=302, resizer="pillow", grid="exact")
    before = {
        k: v
        for k, v in pillow.to_dict().items()
        if k not in ("resizer", "grid", "jpeg_subsampling")
    }
    blob = json.dumps(before, sort_keys=True).encode()
    assert pillow.hash() == hashlib.sha256(blob).hexdigest()[:16]


def test_unknown_resizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="resizer must be one of auto, pillow, vips"):
        ExtractConfig(tile_px=299, tile_um=302, resizer="bicubic")


@pytest.fixture
def without_pyvips(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An interpreter where ``import pyvips`` fails, as where tilestream[vips] is not installed."""
    resample._pyvips.cache_clear()
    monkeypatch.setitem(sys.modules, "pyvips", None)
    yield
    resample._pyvips.cache_clear()


@pytest.mark.usefixtures("without_pyvips")
def test_without_pyvips_auto_is_pillow_and_vips_says_what_to_install() -> None:
    assert resolve_resizer("auto") == "pillow"
    assert ExtractConfig(tile_px=299, tile_um=302).resizer == "pillow"
    with pytest.raises(MissingDependencyError, match=r"pip install 'tilestream\[vips\]'"):
        ExtractConfig(tile_px=299, tile_um=302, resizer="vips")


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_run_records_the_resizer(
    cmu_slide: Path, tmp_path: Path, pyvips: ModuleType, storage: Remote
) -> None:
    """config.json names the resizer; changing it re-extracts the slide (other pixels).

    Again with the slide in SeaweedFS: the same outputs (``tests/extract/conftest.py``).
    """
    import json

    slide, kw = storage.name(cmu_slide), storage.kw
    first = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, resizer="pillow", **kw)
    cfg = json.loads((tmp_path / "128px_256um" / "config.json").read_text())
    assert first.status == "done" and cfg["config"]["resizer"] == "pillow"
    assert "libvips" not in cfg["versions"]
    again = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, resizer="pillow", **kw)
    assert again.status == "skipped"
    other = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, resizer="vips", **kw)
    assert other.status == "done"
    cfg = json.loads((tmp_path / "128px_256um" / "config.json").read_text())
    assert cfg["config"]["resizer"] == "vips"
    assert cfg["versions"]["libvips"].count(".") == 2


def test_a_worker_without_pyvips_fails_the_task_at_once(
    tmp_path: Path, pyvips: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config made where pyvips is installed, run by a worker where it is not (a cluster).

    The task fails before the slide is opened: a slide path that does not exist is
    reported as the missing resizer, not as a missing file.
    """
    from tilestream.extract import SlideTask
    from tilestream.extract.run import run_slide_task

    config = ExtractConfig(tile_px=128, tile_um=256, resizer="vips")
    resample._pyvips.cache_clear()
    monkeypatch.setitem(sys.modules, "pyvips", None)
    try:
        task = SlideTask(path=str(tmp_path / "not-there.svs"), name="not-there")
        result = run_slide_task(task, str(tmp_path), config)
    finally:
        resample._pyvips.cache_clear()
    assert result.status == "failed"
    assert "resizer='vips'" in (result.error or "") and "tilestream[vips]" in (result.error or "")
    assert not list(tmp_path.glob("*.tfrecords"))
