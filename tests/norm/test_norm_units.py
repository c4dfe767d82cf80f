"""Stain normaliser behaviour that needs no slide: background, failures, fits as JSON, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tilestream.errors import ConfigError, TileStreamError
from tilestream.norm import DEFAULT_FITS, METHODS, StainNormalizer, build_normalizer
from tilestream.norm._color import lab_to_rgb, rgb_to_lab


def he_like(seed: int, shape: tuple[int, ...] = (64, 64)) -> np.ndarray:
    """A synthetic two-stain image: Beer-Lambert mix of H and E with random concentrations."""
    rng = np.random.default_rng(seed)
    he = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    conc = rng.gamma(2.0, 0.4, (*shape, 2))
    od = conc @ he
    return np.clip(255 * np.exp(-od) + rng.normal(0, 2, (*shape, 3)), 0, 255).astype(np.uint8)


def test_lab_round_trip_is_exact_for_every_colour_level() -> None:
    levels = np.arange(256, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels[::5], levels[::7], indexing="ij"), -1)
    np.testing.assert_array_equal(lab_to_rgb(rgb_to_lab(grid)), grid)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [255, 250, 238, 128, 0])
def test_blank_and_uniform_tiles_come_back_unchanged_and_counted(method: str, value: int) -> None:
    norm = StainNormalizer(method)
    tile = np.full((32, 48, 3), value, np.uint8)
    noisy = np.clip(tile + np.random.default_rng(0).integers(-1, 2, tile.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    for img in (tile, noisy):
        out = norm.transform(img)
        np.testing.assert_array_equal(out, img)
    assert norm.skipped == 2 and norm.normalized == 0
    norm.reset_counts()
    assert norm.skipped == 0


@pytest.mark.parametrize("method", METHODS)
def test_mostly_white_tile_with_a_speck_is_skipped(method: str) -> None:
    tile = np.full((64, 64, 3), 245, np.uint8)
    tile[:4, :4] = he_like(1, (4, 4))  # 0.4% tissue
    norm = StainNormalizer(method)
    np.testing.assert_array_equal(norm.transform(tile), tile)
    assert norm.skipped == 1


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_skips_only_its_blank_tiles(method: str) -> None:
    batch = np.stack([he_like(2), np.full((64, 64, 3), 255, np.uint8), he_like(3)])
    norm = StainNormalizer(method)
    out = norm.transform(batch)
    np.testing.assert_array_equal(out[1], batch[1])
    assert not (out[0] == batch[0]).all() and not (out[2] == batch[2]).all()
    assert (norm.skipped, norm.normalized) == (1, 2)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lo=st.integers(0, 255),
    span=st.integers(0, 255),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
)
def test_any_image_gives_a_valid_uint8_image(
    method: str, seed: int, lo: int, span: int, h: int, w: int
) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(lo, min(lo + span, 255) + 1, (h, w, 3)).astype(np.uint8)
    norm = StainNormalizer(method, min_tissue=0.0)
    with np.errstate(all="raise"):
        out = norm.transform(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert norm.skipped + norm.normalized == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [255, 240, 128])
def test_fit_without_tissue_fails_clearly(method: str, value: int) -> None:
    with pytest.raises(ConfigError, match=r"no tissue|uniform|no .* stain estimate"):
        StainNormalizer(method).fit(np.full((128, 128, 3), value, np.uint8))


def test_fit_without_tissue_names_the_image_file(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 252, np.uint8)).save(blank)
    with pytest.raises(ConfigError, match="no tissue") as err:
        StainNormalizer("macenko").fit(blank)
    assert err.value.path == str(blank) and "blank.png" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        StainNormalizer("macenko").fit(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="cannot read the reference image"):
        StainNormalizer("macenko").fit(tmp_path / "junk.png")


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8), np.uint8),
        np.zeros((1, 2, 8, 8, 3), np.uint8),
    ],
)
def test_bad_images_are_refused(bad: np.ndarray) -> None:
    norm = StainNormalizer("reinhard")
    with pytest.raises(ConfigError):
        norm.transform(bad)
    with pytest.raises(ConfigError):
        norm.fit(bad)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown stain normalisation method 'nope'"):
        StainNormalizer("nope")
    with pytest.raises(ConfigError, match="min_tissue"):
        StainNormalizer("macenko", min_tissue=2.0)
    with pytest.raises(ConfigError, match="alpha"):
        StainNormalizer("macenko", alpha=60)
    assert isinstance(ConfigError("x"), TileStreamError)


@pytest.mark.parametrize("method", METHODS)
def test_default_fit_is_the_shipped_reference(method: str) -> None:
    fit = StainNormalizer(method).get_fit()
    for key, value in DEFAULT_FITS[method].items():
        np.testing.assert_allclose(np.asarray(fit[key]), np.asarray(value), rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_fit_round_trips_through_json(method: str, tmp_path: Path) -> None:
    tiles = [he_like(5), he_like(6)]
    norm = StainNormalizer(method).fit(tiles)
    fit = norm.get_fit()
    assert json.loads(json.dumps(fit)) == fit
    assert fit != StainNormalizer(method).get_fit()
    path = tmp_path / "fit.json"
    norm.save(path)
    loaded = StainNormalizer.load(path)
    assert loaded.method == method and loaded.get_fit() == fit
    np.testing.assert_array_equal(loaded.transform(he_like(7)), norm.transform(he_like(7)))
    other = StainNormalizer(method).set_fit(fit)
    np.testing.assert_array_equal(other.transform(he_like(7)), norm.transform(he_like(7)))
    assert build_normalizer(method, path).get_fit() == fit


def test_bad_fits_are_refused(tmp_path: Path) -> None:
    norm = StainNormalizer("macenko")
    with pytest.raises(ConfigError, match="for 'reinhard', not 'macenko'"):
        norm.set_fit(StainNormalizer("reinhard").get_fit())
    with pytest.raises(ConfigError, match="needs 'max_concentrations'"):
        norm.set_fit({"stain_matrix": [[1, 0, 0], [0, 1, 0]]})
    with pytest.raises(ConfigError, match="shape"):
        norm.set_fit({"stain_matrix": [[1, 0, 0]], "max_concentrations": [1, 1]})
    with pytest.raises(ConfigError, match="finite"):
        norm.set_fit(
            {"stain_matrix": [[1, 0, 0], [0, float("nan"), 1]], "max_concentrations": [1, 1]}
        )
    with pytest.raises(ConfigError, match="unknown key"):
        StainNormalizer("reinhard").set_fit(
            {"target_means": [1, 2, 3], "target_stds": [1, 1, 1], "x": 1}
        )
    with pytest.raises(ConfigError, match="io must be"):
        norm.set_fit({**norm.get_fit(), "io": "bright"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON stain fit") as err:
        StainNormalizer.load(bad)
    assert err.value.path == str(bad)
    with pytest.raises(ConfigError, match="cannot read stain fit"):
        StainNormalizer.load(tmp_path / "missing.json")
    good = tmp_path / "mac.json"
    norm.save(good)
    with pytest.raises(ConfigError, match="for 'macenko', not 'reinhard'"):
        build_normalizer("reinhard", good)


def test_build_normalizer_fits_to_a_reference_image(tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    Image.fromarray(he_like(8, (96, 96))).save(ref)
    norm = build_normalizer("reinhard", ref)
    assert norm.get_fit() == StainNormalizer("reinhard").fit(he_like(8, (96, 96))).get_fit()


@pytest.mark.parametrize("method", METHODS)
def test_pickles_with_its_fit_and_counts(method: str) -> None:
    norm = StainNormalizer(method).fit(he_like(9))
    norm.transform(np.full((8, 8, 3), 255, np.uint8))
    clone = pickle.loads(pickle.dumps(norm))
    assert clone.get_fit() == norm.get_fit() and clone.skipped == 1
    np.testing.assert_array_equal(clone(he_like(10)), norm(he_like(10)))


def test_reinhard_mask_leaves_background_pixels_alone() -> None:
    img = he_like(11)
    img[:, :16] = 247  # a background band (L > 93)
    out = StainNormalizer("reinhard_mask").transform(img)
    np.testing.assert_array_equal(out[:, :16], img[:, :16])
    assert not (out[:, 16:] == img[:, 16:]).all()
    full = StainNormalizer("reinhard").transform(img)
    assert not (full[:, :16] == img[:, :16]).all()


def test_counters_are_exact_under_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    norm = StainNormalizer("reinhard")
    tiles = [
        he_like(i, (16, 16)) if i % 2 else np.full((16, 16, 3), 255, np.uint8) for i in range(64)
    ]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(norm.transform, tiles))
    assert (norm.skipped, norm.normalized) == (32, 32)
