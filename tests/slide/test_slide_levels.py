"""The one rule that picks a pyramid level for a downsample (:mod:`tilestream.slide.levels`)."""

from __future__ import annotations

import math

import pytest

from tilestream.extract.grid import choose_level
from tilestream.slide.levels import LEVEL_TOLERANCE, best_level

DS = (1.0, 4.0, 16.0, 64.0)


def test_exactly_at_a_downsample_reads_that_level() -> None:
    for i, ds in enumerate(DS):
        assert best_level(DS, ds) == i
        assert best_level(DS, ds, tolerance=0.0) == i


def test_between_levels_reads_the_finer_one() -> None:
    assert best_level(DS, 3.0) == 0
    assert best_level(DS, 15.0) == 1
    assert best_level(DS, 1e9) == 3
    assert best_level(DS, 0.25) == 0  # finer than every level: the finest


def test_tolerance_boundaries() -> None:
    inside = 4.0 / (1.0 + LEVEL_TOLERANCE) * (1.0 + 1e-9)
    outside = 4.0 / (1.0 + LEVEL_TOLERANCE) * (1.0 - 1e-9)
    assert best_level(DS, inside) == 1
    assert best_level(DS, outside) == 0
    # A 16x level measured 16.02x from whole-pixel sizes counts as 16x...
    assert best_level((1.0, 4.0, 16.021390374331553), 16.0) == 2
    # ...but a 4x level is never read for a request meant to be finer.
    assert best_level(DS, 3.99) == 0
    # No tolerance: OpenSlide's rule, strictly at most the downsample.
    assert best_level((1.0, 4.0, 16.021390374331553), 16.0, tolerance=0.0) == 1


def test_float_noise_in_the_target() -> None:
    assert best_level(DS, 3.9999999) == 1
    assert best_level(DS, 4.0000001) == 1
    assert best_level(DS, 3.9999999, tolerance=0.0) == 0  # as OpenSlide


def test_unsorted_and_descending_downsamples() -> None:
    assert best_level((64.0, 16.0, 4.0, 1.0), 5.0) == 2
    assert best_level((64.0, 16.0, 4.0, 1.0), 0.5) == 3  # the finest, wherever it is
    assert best_level((16.0, 1.0, 4.0), 20.0) == 0
    assert best_level((1.0, 4.0, 4.0), 5.0) == 2  # equal downsamples: the last, as OpenSlide


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        best_level((), 2.0)
    assert best_level(DS, math.nan) == 0


def test_matches_openslide_rule_without_tolerance() -> None:
    def openslide_rule(downsamples: tuple[float, ...], d: float) -> int:
        if d < downsamples[0]:
            return 0
        for i in range(1, len(downsamples)):
            if d < downsamples[i]:
                return i - 1
        return len(downsamples) - 1

    levels = (1.0, 4.000177, 16.0015, 32.0047)
    for d in (0.5, 1.0, 2.0, 4.0, 4.000177, 4.0002, 16.0, 16.0015, 31.9, 32.0047, 1e6):
        assert best_level(levels, d, tolerance=0.0) == openslide_rule(levels, d)


def test_extraction_grid_uses_it() -> None:
    for d in (1.0, 3.9, 3.9999999, 4.0, 15.0, 16.02, 100.0):
        assert choose_level(DS, d) == best_level(DS, d)
