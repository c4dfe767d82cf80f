"""The tile grid of a slide: extent in level-0 pixels, pyramid level, positions.

Examples
--------
>>> from tilestream.extract.config import ExtractConfig
>>> cfg = ExtractConfig(tile_px=256, tile_um=128)
>>> g = plan_grid(cfg, dimensions=(1024, 768), downsamples=(1.0, 4.0), mpp=0.5)
>>> (g.extract_px, g.level, g.read_px, g.stride, len(g))
(256, 0, 256, 256, 12)
>>> g2 = plan_grid(cfg.replace(tile_um=512), dimensions=(4096, 4096), downsamples=(1.0, 4.0), mpp=0.5)
>>> (g2.extract_px, g2.level, g2.read_px)
(1024, 1, 256)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tilestream.errors import ExtractionError, MissingMPPError
from tilestream.extract.config import ExtractConfig
from tilestream.slide.levels import best_level

__all__ = ["MAX_GRID_POSITIONS", "Grid", "choose_level", "plan_grid"]

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
    """

    extract_px: int
    stride: int
    level: int
    level_downsample: float
    read_px: int
    tile_px: int
    xs: NDArray[np.int64]
    ys: NDArray[np.int64]

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


def extract_px_for(
    config: ExtractConfig,
    *,
    mpp: float | None,
    objective_power: float | None,
    name: str = "slide",
) -> int:
    """A tile's extent in level-0 pixels for this slide's resolution."""
    size = config.size
    if size.microns is not None:
        if mpp is None:
            raise MissingMPPError(
                f"{name}: tile_um={size.label} needs the slide's microns per pixel, which it lacks; "
                "pass mpp (mpp_override, or an 'mpp' column in the slides CSV) or use a "
                "magnification such as '10x'"
            )
        return round(size.microns / mpp)
    assert size.magnification is not None
    base = objective_power
    if base is None and mpp is not None:
        base = 10.0 / mpp  # 10x is about 1 um/px
    if base is None:
        raise MissingMPPError(
            f"{name}: tile_um={size.label} needs the slide's objective power or microns per pixel; "
            "it has neither: pass mpp"
        )
    return round(config.tile_px * base / size.magnification)


def plan_grid(
    config: ExtractConfig,
    *,
    dimensions: tuple[int, int],
    downsamples: Sequence[float],
    mpp: float | None,
    objective_power: float | None = None,
    name: str = "slide",
) -> Grid:
    """Plan the grid of tile positions for a slide of the given geometry."""
    extract_px = extract_px_for(config, mpp=mpp, objective_power=objective_power, name=name)
    if extract_px < config.tile_px:
        raise ExtractionError(
            f"{name}: tile_um={config.size.label} covers {extract_px} level-0 pixels, fewer than "
            f"tile_px={config.tile_px}: that would need upsampling; use a larger tile_um or a "
            "smaller tile_px"
        )
    needed = extract_px / config.tile_px
    level = choose_level(downsamples, needed)
    ds = float(downsamples[level])
    read_px = max(1, round(extract_px / ds))
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
    )
