"""The tile grid of a slide: extent in level-0 pixels, pyramid level, positions.

Examples
--------
>>> from tilestream.extract.config import SNAP_TOLERANCE, ExtractConfig
>>> cfg = ExtractConfig(tile_px=256, tile_um=128)
>>> g = plan_grid(cfg, dimensions=(1024, 768), downsamples=(1.0, 4.0), mpp=0.5)
>>> (g.extract_px, g.level, g.read_px, g.stride, len(g))
(256, 0, 256, 256, 12)
>>> g2 = plan_grid(cfg.replace(tile_um=512), dimensions=(4096, 4096), downsamples=(1.0, 4.0), mpp=0.5)
>>> (g2.extract_px, g2.level, g2.read_px)
(1024, 1, 256)

With ``grid="snap"`` (the default) an extent within :data:`SNAP_TOLERANCE` of
``tile_px`` times a level's downsample becomes exactly that, so tiles are that
level's native pixels; ``grid="exact"`` keeps the exact extent (and resizes):

>>> aperio = cfg.replace(tile_um=128)
>>> s = plan_grid(aperio, dimensions=(1024, 768), downsamples=(1.0, 4.0), mpp=0.499)
>>> (s.extract_px, s.read_px, s.needs_resize, s.snapped, round(s.exact_px, 2))
(256, 256, False, True, 256.51)
>>> e = plan_grid(aperio.replace(grid="exact"), dimensions=(1024, 768), downsamples=(1.0, 4.0), mpp=0.499)
>>> (e.extract_px, e.read_px, e.needs_resize, e.snapped)
(257, 257, True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ExtractionError, MissingMPPError
from tilestream.extract.config import SNAP_TOLERANCE, ExtractConfig
from tilestream.slide.levels import best_level

__all__ = [
    "MAX_GRID_POSITIONS",
    "SNAP_TOLERANCE",
    "Grid",
    "choose_level",
    "exact_extent",
    "extract_px_for",
    "plan_grid",
    "snap_extent",
]

#: Most tile positions a slide's grid may hold: the tile filters keep about
#: 200 bytes a position (8.4 M positions: ~1.7 GB), so a slide declaring a huge
#: size fails clearly instead of exhausting memory. A 200,000 x 100,000 px
#: slide has 300,000 positions of 256 px, 4.9 M at a 64 px stride.
MAX_GRID_POSITIONS = 1 << 23


@dataclass(frozen=True)
class Grid:
    """Where the tiles of one slide are, before any filter.

    Attributes
    ----------
    extract_px
        A tile's width and height in level-0 pixels.
    stride
        Distance between neighbouring tiles in level-0 pixels.
    level, level_downsample
        The pyramid level read, and its downsample.
    read_px
        A tile's size in pixels at that level (resized to ``tile_px`` when different).
    xs, ys
        Top-left corners in level-0 pixels, row-major (row by row, left to right).
    exact_px
        The extent ``tile_um`` asks for, unrounded (level-0 pixels).
    snapped
        Whether ``extract_px`` was snapped to ``tile_px`` times the level's
        downsample (``grid="snap"``) and so differs from ``round(exact_px)``.
    """

    extract_px: int
    stride: int
    level: int
    level_downsample: float
    read_px: int
    tile_px: int
    xs: NDArray[np.int64]
    ys: NDArray[np.int64]
    exact_px: float | None = None
    snapped: bool = False

    def __len__(self) -> int:
        return len(self.xs)

    @property
    def centers(self) -> NDArray[np.int64]:
        """``(n, 2)`` tile centres in level-0 pixels (Slideflow's ``loc_x, loc_y``)."""
        half = self.extract_px // 2
        return np.stack([self.xs + half, self.ys + half], axis=1)

    @property
    def needs_resize(self) -> bool:
        """Whether tiles read at ``level`` must be resized to ``tile_px``."""
        return self.read_px != self.tile_px

    def tile_um(self, mpp: float | None) -> float | None:
        """The microns a tile covers at level-0 ``mpp`` (``None`` when unknown).

        What ``tile_um`` became: equal to the request but for the rounding of
        ``extract_px`` to whole pixels and, when :attr:`snapped`, the snap.

        >>> g = plan_grid(ExtractConfig(tile_px=256, tile_um=128), dimensions=(512, 512),
        ...               downsamples=(1.0,), mpp=0.499)
        >>> g.tile_um(0.499), g.tile_um(None)
        (127.744, None)
        """
        if mpp is None:
            return None
        return round(self.extract_px * mpp, 6)


def choose_level(downsamples: Sequence[float], needed: float) -> int:
    """The finest level at or coarser than needed: :func:`tilestream.slide.levels.best_level`.

    Never a level coarser than needed (beyond the rounding of level sizes that
    :data:`~tilestream.slide.levels.LEVEL_TOLERANCE` absorbs), so tiles are
    never upsampled.

    >>> choose_level([1.0, 4.0, 16.0], 5.0)
    1
    >>> choose_level([1.0, 4.0, 16.0], 3.999999)
    1
    """
    return best_level(downsamples, needed)


def exact_extent(
    config: ExtractConfig,
    *,
    mpp: float | None,
    objective_power: float | None,
    name: str = "slide",
) -> float:
    """A tile's extent in level-0 pixels for this slide's resolution, unrounded.

    ``tile_um / mpp`` for microns; for a magnification, ``tile_px`` times the
    slide's objective power over it (the power from ``mpp`` when the slide
    declares none: 10x is about 1 um/px).

    >>> round(exact_extent(ExtractConfig(tile_px=256, tile_um=128), mpp=0.499, objective_power=None), 4)
    256.513
    """
    size = config.size
    if size.microns is not None:
        if mpp is None:
            raise MissingMPPError(
                f"{name}: tile_um={size.label} needs the slide's microns per pixel, which it lacks; "
                "pass mpp (mpp_override, or an 'mpp' column in the slides CSV) or use a "
                "magnification such as '10x'"
            )
        return size.microns / mpp
    assert size.magnification is not None
    base = objective_power
    if base is None and mpp is not None:
        base = 10.0 / mpp  # 10x is about 1 um/px
    if base is None:
        raise MissingMPPError(
            f"{name}: tile_um={size.label} needs the slide's objective power or microns per pixel; "
            "it has neither: pass mpp"
        )
    return config.tile_px * base / size.magnification


def extract_px_for(
    config: ExtractConfig,
    *,
    mpp: float | None,
    objective_power: float | None,
    name: str = "slide",
) -> int:
    """A tile's exact extent in level-0 pixels, rounded (the ``grid="exact"`` extent)."""
    return round(exact_extent(config, mpp=mpp, objective_power=objective_power, name=name))


def snap_extent(
    exact_px: float, tile_px: int, downsamples: Sequence[float]
) -> tuple[int, int] | None:
    """``(extract_px, level)`` of the level whose native tiles ``exact_px`` is within tolerance of.

    The level whose ``tile_px * downsample`` is relatively nearest to
    ``exact_px``, if within :data:`SNAP_TOLERANCE` of it (either side);
    ``None`` when no level is. The extent returned is ``tile_px`` times that
    downsample, rounded to whole pixels.

    >>> snap_extent(256.513, 256, (1.0, 4.0, 16.0))
    (256, 0)
    >>> snap_extent(1021.0, 256, (1.0, 4.0003, 16.0))
    (1024, 1)
    >>> snap_extent(1208.0, 299, (1.0, 4.0, 16.0)) is None  # 302 um at 0.25 um/px: kept
    True
    """
    best: tuple[float, int] | None = None
    for level, ds in enumerate(downsamples):
        target = tile_px * float(ds)
        if target <= 0:
            continue
        off = abs(exact_px / target - 1.0)
        if off <= SNAP_TOLERANCE and (best is None or off < best[0]):
            best = (off, level)
    if best is None:
        return None
    level = best[1]
    return max(1, round(tile_px * float(downsamples[level]))), level


def plan_grid(
    config: ExtractConfig,
    *,
    dimensions: tuple[int, int],
    downsamples: Sequence[float],
    mpp: float | None,
    objective_power: float | None = None,
    name: str = "slide",
) -> Grid:
    """Plan the grid of tile positions for a slide of the given geometry.

    With ``config.grid == "snap"`` the extent snaps to a level's native tiles
    (:func:`snap_extent`); otherwise, or when no level is near enough, it is
    the exact extent rounded, read from :func:`choose_level`'s level and
    resized to ``tile_px``.
    """
    exact_px = exact_extent(config, mpp=mpp, objective_power=objective_power, name=name)
    extract_px = round(exact_px)
    snap = snap_extent(exact_px, config.tile_px, downsamples) if config.grid == "snap" else None
    if snap is not None:
        extract_px, level = snap
        read_px = config.tile_px
    elif extract_px < config.tile_px:
        raise ExtractionError(
            f"{name}: tile_um={config.size.label} covers {extract_px} level-0 pixels, fewer than "
            f"tile_px={config.tile_px}: that would need upsampling; use a larger tile_um or a "
            "smaller tile_px"
        )
    else:
        level = choose_level(downsamples, extract_px / config.tile_px)
        read_px = max(1, round(extract_px / float(downsamples[level])))
    ds = float(downsamples[level])
    stride = max(1, extract_px // config.stride_div)
    width, height = dimensions
    ox = oy = 0
    if config.randomize_origin:
        rng = np.random.default_rng(config.seed)
        ox, oy = (int(v) for v in rng.integers(0, stride, size=2))
    limit_x = width if config.use_edge_tiles else width - extract_px + 1
    limit_y = height if config.use_edge_tiles else height - extract_px + 1
    nx = len(range(ox, max(limit_x, ox), stride))
    ny = len(range(oy, max(limit_y, oy), stride))
    if nx * ny > MAX_GRID_POSITIONS:
        # Checked before allocating: the filters hold ~200 bytes a position.
        raise ExtractionError(
            f"{name}: the grid would hold {nx * ny:,} tile positions ({width}x{height} px at a "
            f"stride of {stride} px), over the limit of {MAX_GRID_POSITIONS:,} "
            "(tilestream.extract.grid.MAX_GRID_POSITIONS); use a larger tile_um or a smaller "
            "stride_div, or check the slide's declared size"
        )
    xs1 = np.arange(ox, max(limit_x, ox), stride, dtype=np.int64)
    ys1 = np.arange(oy, max(limit_y, oy), stride, dtype=np.int64)
    gy, gx = np.meshgrid(ys1, xs1, indexing="ij")
    return Grid(
        extract_px=extract_px,
        stride=stride,
        level=level,
        level_downsample=ds,
        read_px=read_px,
        tile_px=config.tile_px,
        xs=gx.ravel(),
        ys=gy.ravel(),
        exact_px=exact_px,
        snapped=extract_px != round(exact_px),
    )
