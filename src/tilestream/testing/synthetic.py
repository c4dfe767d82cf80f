"""Generate realistic Aperio-style SVS slides of any size, for tests and benchmarks.

:func:`make_synthetic_slide` writes a pyramidal TIFF laid out like the files an
Aperio scanner writes, so that OpenSlide, tifffile, libvips and tilestream read
it as vendor ``aperio``:

* level 0 as JPEG-compressed tiles (240 px by default) stored the way Aperio
  stores them: RGB components without a colour transform (photometric RGB, no
  JFIF or Adobe marker, component ids 0, 1, 2), 4:4:4 sampling, quantisation
  and Huffman tables shared in the ``JPEGTables`` tag;
* a thumbnail as the second image (stripped JPEG, 16 rows per strip);
* further pyramid levels, each ``downsample`` (4 like Aperio, or 2) times
  smaller than the previous one;
* an Aperio ``ImageDescription`` (``Aperio Image Library ... |AppMag = 20|MPP =
  0.5``) from which readers take the objective power and microns per pixel.

The content is tissue on a near-white background: blob-shaped tissue regions
covering about ``tissue_fraction`` of the area, filled with 256 px patches of
real tissue cut from a real slide (``source_tiles``), randomly chosen, rotated
and mirrored per patch. Every pixel is a pure function of its position and the
seed, so lower levels are computed directly at their own resolution (a box
filtered version of level 0) and the image is written tile by tile: memory stays
bounded whatever the slide size (40,000 x 40,000 pixels and more).

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> slide = make_synthetic_slide(folder / "s.svs", width=1000, height=600, levels=2, seed=1)
>>> slide.level_dimensions
((1000, 600), (250, 150))
>>> slide.render((0, 0), 1, (250, 150)).shape
(150, 250, 3)
>>> import openslide
>>> with openslide.OpenSlide(slide.path) as osr:
...     osr.properties["openslide.vendor"], osr.properties["openslide.mpp-x"], osr.level_count
('aperio', '0.5', 2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tilestream._util.atomic import atomic_path
from tilestream.errors import ConfigError
from tilestream.testing.tissue import (
    BACKGROUND,
    PATCH,
    Array,
    Tissue,
    normalise_patches,
    procedural_patches,
    tissue_patches_from_slide,
)

__all__ = [
    "BACKGROUND",
    "PATCH",
    "SyntheticSlide",
    "make_synthetic_slide",
    "tissue_patches_from_slide",
]

_LIBRARY = "Aperio Image Library v12.0.15 "

Progress = Callable[[int, int], None]


def _segments(data: bytes | bytearray) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG segment up to and including SOS."""
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        yield marker, i, i + 2 + length
        if marker == 0xDA:
            return
        i += 2 + length


class _AperioJPEG:
    """Encode RGB tiles as Aperio does: abbreviated streams plus shared tables."""

    def __init__(self, quality: int) -> None:
        self.quality = quality
        self.tables: bytes | None = None

    def encode(self, rgb: Array) -> bytes:
        import imagecodecs

        full: bytes | bytearray = imagecodecs.jpeg8_encode(
            np.ascontiguousarray(rgb),
            level=self.quality,
            colorspace="RGB",
            outcolorspace="RGB",
            subsampling="444",
            optimize=False,
        )
        tables = bytearray(b"\xff\xd8")
        body = bytearray(b"\xff\xd8")
        rest: bytes | bytearray = b""
        for marker, start, end in _segments(full):
            segment = bytearray(full[start:end])
            if marker in (0xDB, 0xC4):  # quantisation and Huffman tables
                tables += segment
            elif marker == 0xC0:  # SOF0: component ids R, G, B -> 0, 1, 2 like Aperio
                for k in range(3):
                    segment[10 + 3 * k] = k
                body += segment
            elif marker == 0xDA:  # SOS: the same ids in the scan header
                for k in range(3):
                    segment[5 + 2 * k] = k
                body += segment
                rest = full[end:]
            elif 0xE0 <= marker <= 0xEF:  # APPn (the Adobe marker): Aperio writes none
                continue
            else:
                body += segment
        tables += b"\xff\xd9"
        if self.tables is None:
            self.tables = bytes(tables)
        elif bytes(tables) != self.tables:  # cannot happen with fixed settings; stay valid
            body[2:2] = tables[2:-2]
        return bytes(body) + rest


@dataclass(frozen=True)
class SyntheticSlide:
    """A generated slide: where it is, its geometry, and its exact pixels.

    Attributes
    ----------
    path
        The SVS file written.
    level_dimensions
        ``(width, height)`` of each level, level 0 first.
    level_downsamples
        Integer downsample of each level.
    tile_size
        Side of the stored JPEG tiles.
    mpp, objective_power, jpeg_quality, tissue_fraction, seed
        The generation parameters.
    thumbnail_dimensions
        ``(width, height)`` of the thumbnail image.
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[int, ...]
    tile_size: int
    mpp: float
    objective_power: float
    jpeg_quality: int
    tissue_fraction: float
    seed: int
    thumbnail_dimensions: tuple[int, int]
    _tissue: Tissue = field(repr=False, compare=False)

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    def render(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Array:
        """The pixels that were JPEG-encoded, before compression.

        Parameters
        ----------
        location
            ``(x, y)`` of the top-left corner in level-0 pixels, like
            OpenSlide's ``read_region`` (a multiple of the level downsample).
        level
            Pyramid level.
        size
            ``(width, height)`` in pixels of that level.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` RGB uint8. Positions beyond the slide are
            rendered too (the content is defined everywhere).
        """
        d = self.level_downsamples[level]
        if location[0] % d or location[1] % d:
            raise ConfigError(f"location {location} is not a multiple of downsample {d}")
        return self._tissue.render(location[0] // d, location[1] // d, size[0], size[1], d)


def _auto_levels(width: int, height: int, downsample: int) -> int:
    levels = 1
    while max(width, height) // downsample**levels >= 1024:
        levels += 1
    return levels


def make_synthetic_slide(
    path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    tile_size: int = 240,
    levels: int | None = None,
    downsample: int = 4,
    mpp: float = 0.5,
    objective_power: float = 20,
    jpeg_quality: int = 70,
    tissue_fraction: float = 0.5,
    seed: int = 0,
    source_tiles: str | os.PathLike[str] | NDArray | Sequence[NDArray] | None = None,
    thumbnail_size: int = 768,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SyntheticSlide:
    """Write an Aperio-style SVS slide of realistic tissue, tile by tile.

    Parameters
    ----------
    path
        Where to write the ``.svs`` file (atomically).
    width, height
        Level-0 size in pixels.
    tile_size
        Side of the stored JPEG tiles (a multiple of 16; Aperio uses 240 or 256).
    levels
        Number of pyramid levels; by default, while the next is at least 1,024 px long.
    downsample
        Factor between consecutive levels: 4 (like Aperio) or 2.
    mpp
        Microns per pixel of level 0 (``MPP`` in the description).
    objective_power
        Scanning magnification (``AppMag`` in the description).
    jpeg_quality
        JPEG quality of the tiles (Aperio's default is 70).
    tissue_fraction
        Approximate fraction of the area covered by tissue, in ``[0, 1]``.
    seed
        Seed of the tissue layout and patch choice (equal seeds: equal files).
    source_tiles
        The tissue texture: a slide path (:func:`tissue_patches_from_slide`), an
        array or sequence of RGB tiles, or ``None`` (procedural H&E-like patches).
    thumbnail_size
        Longer side of the thumbnail image.
    overwrite
        Replace an existing file at ``path`` (else an error).
    progress
        Called as ``progress(tiles_written, tiles_total)`` after each tile.

    Returns
    -------
    SyntheticSlide
        Geometry and exact pre-compression pixels of the slide written.

    Raises
    ------
    ConfigError
        Invalid parameters, or ``path`` exists and ``overwrite`` is false.
    SlideError
        ``source_tiles`` is a slide that cannot be read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.svs"
    >>> make_synthetic_slide(out, width=500, height=300, seed=3).level_downsamples
    (1,)
    """
    spec = _Spec(width, height, tile_size, downsample, mpp, objective_power, jpeg_quality, seed)
    n_levels = spec.check(levels, tissue_fraction)
    target = Path(path)
    if target.exists() and not overwrite:
        raise ConfigError("file exists; pass overwrite=True to replace it", path=target)
    tissue = Tissue(width, height, _patches(source_tiles, seed), tissue_fraction, seed)
    layout = _Layout.plan(width, height, tile_size, n_levels, downsample, thumbnail_size)
    _write_svs(target, tissue, layout, spec, _AperioJPEG(jpeg_quality), progress)
    return spec.result(target, layout, tissue_fraction, tissue)


def _patches(
    source_tiles: str | os.PathLike[str] | NDArray | Sequence[NDArray] | None, seed: int
) -> Array:
    """The tissue patches ``source_tiles`` names (procedural ones for ``None``)."""
    if source_tiles is None:
        return procedural_patches(16, seed)
    if isinstance(source_tiles, (str, os.PathLike)):
        return tissue_patches_from_slide(source_tiles)
    return normalise_patches(source_tiles)


@dataclass(frozen=True)
class _Layout:
    """Geometry of the file: level sizes and downsamples, tiles, thumbnail size."""

    width: int
    height: int
    tile_size: int
    downsamples: tuple[int, ...]
    dims: tuple[tuple[int, int], ...]
    thumb_dims: tuple[int, int]

    @classmethod
    def plan(
        cls, width: int, height: int, tile_size: int, levels: int, downsample: int, thumb: int
    ) -> _Layout:
        downsamples = tuple(downsample**k for k in range(levels))
        dims = tuple((max(1, width // d), max(1, height // d)) for d in downsamples)
        scale = min(1.0, thumb / max(width, height))
        thumb_dims = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cls(width, height, tile_size, downsamples, dims, thumb_dims)

    @property
    def tile_count(self) -> int:
        t = self.tile_size
        return sum(math.ceil(w / t) * math.ceil(h / t) for w, h in self.dims)


@dataclass(frozen=True)
class _Spec:
    """What the file declares: its size, tiles, levels, JPEG quality, resolution."""

    width: int
    height: int
    tile_size: int
    downsample: int
    mpp: float
    objective_power: float
    jpeg_quality: int
    seed: int

    def check(self, levels: int | None, tissue_fraction: float) -> int:
        """Refuse invalid parameters (:class:`ConfigError`); the number of levels to write."""
        width, height, tile_size, downsample = (
            self.width,
            self.height,
            self.tile_size,
            self.downsample,
        )
        if width < 1 or height < 1:
            raise ConfigError(f"slide size must be positive, got {width} x {height}")
        if tile_size < 16 or tile_size % 16:
            raise ConfigError(f"tile_size must be a positive multiple of 16, got {tile_size}")
        if downsample not in (2, 4):
            raise ConfigError(f"downsample must be 2 or 4, got {downsample}")
        if not 0 <= tissue_fraction <= 1:
            raise ConfigError(f"tissue_fraction must be in [0, 1], got {tissue_fraction}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.mpp <= 0 or self.objective_power <= 0:
            raise ConfigError(
                f"mpp and objective_power must be positive, got {self.mpp}, {self.objective_power}"
            )
        n_levels = _auto_levels(width, height, downsample) if levels is None else levels
        if n_levels < 1 or min(width, height) // downsample ** (n_levels - 1) < 1:
            raise ConfigError(f"{levels} levels do not fit a {width} x {height} slide")
        return n_levels

    def result(
        self, path: Path, layout: _Layout, tissue_fraction: float, tissue: Tissue
    ) -> SyntheticSlide:
        """The :class:`SyntheticSlide` describing the file written at ``path``."""
        return SyntheticSlide(
            path=path,
            level_dimensions=layout.dims,
            level_downsamples=layout.downsamples,
            tile_size=self.tile_size,
            mpp=float(self.mpp),
            objective_power=float(self.objective_power),
            jpeg_quality=self.jpeg_quality,
            tissue_fraction=float(tissue_fraction),
            seed=self.seed,
            thumbnail_dimensions=layout.thumb_dims,
            _tissue=tissue,
        )

    def level_description(self, level: int, size: tuple[int, int], stem: str) -> str:
        """The Aperio ``ImageDescription`` of a level (readers take AppMag and MPP from it)."""
        w0, h0, t = self.width, self.height, self.tile_size
        head = f"{_LIBRARY}\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({t}x{t})"
        tail = (
            f"JPEG/RGB Q={self.jpeg_quality}|AppMag = {self.objective_power:g}"
            f"|StripeWidth = 2040|ScanScope ID = TILESTREAM|Filename = {stem}"
            f"|MPP = {self.mpp:.6g}|Title = tilestream synthetic slide, seed {self.seed}"
        )
        return f"{head} {tail}" if level == 0 else f"{head} -> {size[0]}x{size[1]} {tail}"

    def thumbnail_description(self, size: tuple[int, int]) -> str:
        """The Aperio ``ImageDescription`` of the thumbnail image."""
        return (
            f"{_LIBRARY}\r\n{self.width}x{self.height} -> {size[0]}x{size[1]} - "
            f"|AppMag = {self.objective_power:g}|MPP = {self.mpp:.6g}"
        )


def _write_svs(
    target: Path,
    tissue: Tissue,
    layout: _Layout,
    spec: _Spec,
    jpeg: _AperioJPEG,
    progress: Progress | None,
) -> None:
    """Write the levels tile by tile, the thumbnail after level 0, atomically."""
    import tifffile

    width, height, tile_size = layout.width, layout.height, layout.tile_size
    done = 0

    def tiles(level: int) -> Iterator[bytes]:
        nonlocal done
        w, h = layout.dims[level]
        for ty in range(0, h, tile_size):
            for tx in range(0, w, tile_size):
                pixels = tissue.render(tx, ty, tile_size, tile_size, layout.downsamples[level])
                encoded = jpeg.encode(pixels)
                done += 1
                if progress is not None:
                    progress(done, layout.tile_count)
                yield encoded

    bigtiff = width * height * 3 * 4 // 3 > 2**31  # raw size as a safe bound on JPEG size
    common: dict[str, Any] = {
        "compression": "jpeg",
        "photometric": "rgb",
        # Stored as RGB (PhotometricInterpretation 2), not YCbCr: like Aperio.
        "subsampling": (1, 1),
        "compressionargs": {"outcolorspace": "RGB"},
        "dtype": np.uint8,
        "metadata": None,
        "software": False,
    }
    thumb = layout.thumb_dims
    with atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for level, (w, h) in enumerate(layout.dims):
            level_tiles = tiles(level)
            first = next(level_tiles)  # the first tile fixes the shared tables
            tif.write(
                _chain(first, level_tiles),
                shape=(h, w, 3),
                tile=(tile_size, tile_size),
                jpegtables=jpeg.tables,
                description=spec.level_description(level, (w, h), target.stem),
                **common,
            )
            if level == 0:
                tif.write(
                    _thumbnail_strips(tissue, width, height, thumb, jpeg),
                    shape=(thumb[1], thumb[0], 3),
                    rowsperstrip=16,
                    jpegtables=jpeg.tables,
                    description=spec.thumbnail_description(thumb),
                    **common,
                )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _thumbnail_strips(
    tissue: Tissue, width: int, height: int, size: tuple[int, int], jpeg: _AperioJPEG
) -> Iterator[bytes]:
    from PIL import Image

    factor = 1
    while factor * 2 <= min(width / size[0], height / size[1]):
        factor *= 2
    rendered = tissue.render(0, 0, math.ceil(width / factor), math.ceil(height / factor), factor)
    crop = rendered[: height // factor or 1, : width // factor or 1]
    thumb = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS))
    for y in range(0, size[1], 16):
        yield jpeg.encode(thumb[y : y + 16])
