"""Stain normalisation on real tiles of two differently stained slides.

The metric: the Euclidean distance between the LAB means and standard
deviations (6 numbers) of the tissue pixels (L < 93) of 16 tiles of each slide
(``colour_distance`` in ``tests/norm/conftest.py``). Unnormalised, the CMU
slide (purple) and the TCGA slide (pink) are about 20 LAB units apart.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from tilestream.norm import METHODS, StainNormalizer
from tilestream.norm._color import rgb_to_lab

pytestmark = pytest.mark.testdata


def colour_stats(tiles: np.ndarray) -> np.ndarray:
    """LAB mean and standard deviation (6 values) of the tissue pixels (L < 93) of all tiles."""
    lab = rgb_to_lab(np.ascontiguousarray(tiles).reshape(-1, 3))
    lab = lab[lab[:, 0] < 93]
    return np.concatenate([lab.mean(axis=0), lab.std(axis=0)]).astype(np.float64)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The metric of the tests: Euclidean distance between :func:`colour_stats` of two tile sets."""
    return float(np.linalg.norm(colour_stats(a) - colour_stats(b)))


@pytest.fixture(scope="module")
def before(cmu_tiles: np.ndarray, tcga_tiles: np.ndarray) -> float:
    d = colour_distance(cmu_tiles, tcga_tiles)
    assert d > 15, f"the two slides should differ in staining (distance {d:.1f})"
    return d


# Required reduction of the colour distance (after / before) per method, with the
# shipped reference target and with a target fitted to the CMU tiles.
LIMITS = {"reinhard": 0.15, "reinhard_mask": 0.15, "macenko": 0.7, "vahadane": 0.7}


@pytest.mark.parametrize("method", METHODS)
def test_default_reference_brings_slides_closer(
    method: str, cmu_tiles: np.ndarray, tcga_tiles: np.ndarray, before: float
) -> None:
    norm = StainNormalizer(method)
    after = colour_distance(norm.transform(cmu_tiles), norm.transform(tcga_tiles))
    assert after < LIMITS[method] * before, (method, before, after)
    assert norm.skipped == 0 and norm.normalized == 32


@pytest.mark.parametrize("method", METHODS)
def test_fit_to_one_slide_brings_the_other_closer(
    method: str, cmu_tiles: np.ndarray, tcga_tiles: np.ndarray, before: float
) -> None:
    norm = StainNormalizer(method).fit(list(cmu_tiles))
    both = colour_distance(norm.transform(cmu_tiles), norm.transform(tcga_tiles))
    assert both < LIMITS[method] * before, (method, before, both)
    # Only the TCGA tiles normalised, compared with the raw CMU tiles.
    one_side = colour_distance(cmu_tiles, norm.transform(tcga_tiles))
    assert one_side < 0.95 * before, (method, before, one_side)


def test_reinhard_matches_the_target_statistics(tcga_tiles: np.ndarray) -> None:
    norm = StainNormalizer("reinhard")
    target = np.concatenate([norm.get_fit()["target_means"], norm.get_fit()["target_stds"]])
    for tile in tcga_tiles[:4]:
        out = norm.transform(tile)
        norm_all = StainNormalizer("reinhard").fit(out).get_fit()
        got = np.concatenate([norm_all["target_means"], norm_all["target_stds"]])
        # uint8 rounding and gamut clipping leave a small residual.
        np.testing.assert_allclose(got, target, atol=1.5)


@pytest.mark.parametrize("method", METHODS)
def test_batch_and_single_agree_and_results_reproduce(
    method: str, cmu_tiles: np.ndarray, tcga_tiles: np.ndarray
) -> None:
    tiles = np.concatenate([cmu_tiles[:3], tcga_tiles[:3]])
    norm = StainNormalizer(method)
    batch = norm.transform(tiles)
    assert batch.shape == tiles.shape and batch.dtype == np.uint8
    for i, tile in enumerate(tiles):
        np.testing.assert_array_equal(norm.transform(tile), batch[i])
    np.testing.assert_array_equal(StainNormalizer(method).transform(tiles), batch)
    fitted = StainNormalizer(method).fit(tiles[0])
    again = StainNormalizer(method).fit(tiles[0])
    assert fitted.get_fit() == again.get_fit()
    np.testing.assert_array_equal(fitted.transform(tiles), again.transform(tiles))
    assert not (batch == tiles).all(axis=(1, 2, 3)).any(), "every tissue tile must change"


def test_stain_vectors_are_h_then_e(cmu_tiles: np.ndarray, tcga_tiles: np.ndarray) -> None:
    for method in ("macenko", "vahadane"):
        for tiles in (cmu_tiles, tcga_tiles):
            fit = StainNormalizer(method).fit(list(tiles[:4])).get_fit()
            he = np.asarray(fit["stain_matrix"])
            np.testing.assert_allclose(np.linalg.norm(he, axis=1), 1.0, atol=1e-6)
            assert (he > -0.05).all(), (method, he)
            # Hematoxylin absorbs more red than eosin; eosin mostly green.
            assert he[0, 0] > he[1, 0] and he[1, 1] > he[1, 0], (method, he)
            assert np.all(np.asarray(fit["max_concentrations"]) > 0.2)


@pytest.mark.parametrize("method", METHODS)
def test_stain_augmentation_is_seeded_and_varies(method: str, tcga_tiles: np.ndarray) -> None:
    norm = StainNormalizer(method)
    tile = tcga_tiles[0]
    a = norm.augment(tile, np.random.default_rng(11))
    b = norm.augment(tile, np.random.default_rng(11))
    c = norm.augment(tile, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert a.shape == tile.shape and a.dtype == np.uint8
    plain = norm.transform(tile)
    # Different draws give different colours around the normalised tile.
    stats = [colour_stats(x) for x in (a, c, plain)]
    assert np.abs(stats[0] - stats[1]).max() > 0.5
    assert np.abs(stats[0] - stats[2]).max() > 0.5
    # ... but stay H&E-like: within a few LAB units of the normalised tile's means.
    for s in stats[:2]:
        assert np.abs(s[:3] - stats[2][:3]).max() < 25
    # A batch draws once per image, in order, from the same generator.
    rng = np.random.default_rng(3)
    batch = norm.augment(tcga_tiles[:2], rng)
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(batch[0], norm.augment(tcga_tiles[0], rng))
    np.testing.assert_array_equal(batch[1], norm.augment(tcga_tiles[1], rng))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_matches_torchstain(
    method: str, cmu_tiles: np.ndarray, tcga_tiles: np.ndarray, torchstain: ModuleType
) -> None:
    """Same fit, same tiles: at most 1 grey level apart (torchstain truncates, we round).

    ``black=0``: torchstain keeps black pixels in the Macenko stain estimate.
    """
    cls = {"macenko": "MacenkoNormalizer", "reinhard": "ReinhardNormalizer"}[method]
    peer = getattr(torchstain.normalizers, cls)(backend="numpy")
    reference = np.ascontiguousarray(cmu_tiles[0])
    peer.fit(reference)
    ours = StainNormalizer(method, black=0).fit(reference)
    for tile in [*tcga_tiles[:4], *cmu_tiles[::4]]:
        theirs = (
            peer.normalize(tile, stains=False)[0] if method == "macenko" else peer.normalize(tile)
        )
        diff = np.abs(ours.transform(tile).astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.6, (diff.max(), diff.mean())
