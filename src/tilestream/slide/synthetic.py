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

import numpy as np
from numpy.typing import NDArray

from tilestream._util.atomic import atomic_path
from tilestream.errors import ConfigError, SlideError

__all__ = ["SyntheticSlide", "make_synthetic_slide", "tissue_patches_from_slide"]

PATCH = 256
"""Side in level-0 pixels of one tissue patch (a power of two, so that every
power-of-two level downsample up to ``PATCH`` maps a patch onto whole pixels)."""

BACKGROUND = (242, 242, 242)
"""Colour of the glass around the tissue (Aperio backgrounds are near white)."""

_MAX_FIELD = 1024  # the tissue field is a grid of at most this many cells a side
_MAX_PATCHES = 64
_LIBRARY = "Aperio Image Library v12.0.15 "

Array = NDArray[np.uint8]
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------
# Tissue content


def _box_reduce(image: NDArray, factor: int) -> NDArray[np.float32]:
    """Mean over ``factor`` x ``factor`` blocks of the last two spatial axes."""
    if factor == 1:
        return image.astype(np.float32)
    *lead, h, w, c = image.shape
    blocks = image.reshape(*lead, h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(-4, -2), dtype=np.float32)


def _procedural_patches(count: int, seed: int) -> Array:
    """H&E-like patches (pink stroma, purple nuclei), for use without a real slide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)
    patches = np.empty((count, PATCH, PATCH, 3), np.uint8)
    eosin = np.array([225, 150, 190], np.float32)
    hematoxylin = np.array([95, 60, 140], np.float32)
    for n in range(count):
        # Low-frequency variation of the stroma.
        wobble = np.zeros((PATCH, PATCH), np.float32)
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.01, 0.06), rng.uniform(0.01, 0.06), rng.uniform(0, 6.3)
            wobble += np.sin(xx * fx + yy * fy + phase)
        image = eosin[None, None, :] + (wobble * 6)[..., None]
        nuclei = np.zeros((PATCH, PATCH), np.float32)
        for _ in range(int(rng.integers(25, 60))):
            cx, cy = rng.uniform(0, PATCH, 2)
            rx, ry = rng.uniform(3, 7, 2)
            d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
            nuclei = np.maximum(nuclei, np.clip(1.5 - d, 0, 1))
        image = image * (1 - nuclei[..., None]) + hematoxylin * nuclei[..., None]
        image += rng.normal(0, 4, image.shape).astype(np.float32)
        patches[n] = np.clip(image, 0, 255).astype(np.uint8)
    return patches


def tissue_patches_from_slide(
    path: str | os.PathLike[str], *, max_patches: int = _MAX_PATCHES, min_tissue: float = 0.6
) -> Array:
    """Cut 256 x 256 patches of tissue out of level 0 of a real slide.

    Candidate patches lie on a half-overlapping grid; the ones with the most
    tissue (saturated, not near-white pixels) are kept, at least one.

    Parameters
    ----------
    path
        A slide OpenSlide can read.
    max_patches
        Keep at most this many patches.
    min_tissue
        Fraction of tissue pixels a patch needs (ignored if no patch has that much).

    Returns
    -------
    numpy.ndarray
        ``(n, 256, 256, 3)`` RGB uint8 patches.

    Raises
    ------
    SlideError
        The slide cannot be read or is smaller than one patch.
    """
    import openslide

    try:
        with openslide.OpenSlide(os.fspath(path)) as osr:
            width, height = osr.dimensions
            if width < PATCH or height < PATCH:
                raise SlideError(f"smaller than one {PATCH} px tissue patch", path=path)
            # Rank the grid on the thumbnail first so that large slides stay cheap.
            step = PATCH // 2
            cells = [
                (x, y)
                for y in range(0, height - PATCH + 1, step)
                for x in range(0, width - PATCH + 1, step)
            ]
            scale = max(1.0, max(width, height) / 2048)
            thumb = np.asarray(
                osr.get_thumbnail((int(width / scale), int(height / scale))).convert("RGB")
            )
            tissue = _tissue_pixels(thumb)
            sy, sx = tissue.shape[0] / height, tissue.shape[1] / width

            def score(cell: tuple[int, int]) -> float:
                x, y = cell
                window = tissue[
                    int(y * sy) : max(int((y + PATCH) * sy), int(y * sy) + 1),
                    int(x * sx) : max(int((x + PATCH) * sx), int(x * sx) + 1),
                ]
                return float(window.mean())

            ranked = sorted(cells, key=score, reverse=True)[: max_patches * 4]
            found: list[tuple[float, Array]] = []
            for x, y in ranked:
                patch = np.asarray(osr.read_region((x, y), 0, (PATCH, PATCH)).convert("RGB"))
                found.append((float(_tissue_pixels(patch).mean()), patch))
    except openslide.OpenSlideError as exc:
        raise SlideError(f"cannot read tissue patches: {exc}", path=path) from exc
    found.sort(key=lambda item: -item[0])
    keep = [p for f, p in found if f >= min_tissue][:max_patches] or [found[0][1]]
    return np.stack(keep)


def _tissue_pixels(rgb: Array) -> NDArray[np.bool_]:
    rgb16 = rgb.astype(np.int16)
    saturated = (rgb16.max(axis=2) - rgb16.min(axis=2)) > 25
    return saturated & (rgb16.mean(axis=2) < 215)


def _normalise_patches(tiles: NDArray | Sequence[NDArray]) -> Array:
    from PIL import Image

    out = []
    for tile in tiles:
        arr = np.asarray(tile)
        if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint8:
            raise ConfigError(
                "source tiles must be (height, width, 3) uint8 RGB arrays, "
                f"got {arr.shape} {arr.dtype}"
            )
        arr = arr[..., :3]
        if arr.shape[:2] != (PATCH, PATCH):
            arr = np.asarray(Image.fromarray(arr).resize((PATCH, PATCH), Image.Resampling.LANCZOS))
        out.append(arr)
    if not out:
        raise ConfigError("source_tiles is empty")
    return np.ascontiguousarray(np.stack(out))


def _splitmix(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _Tissue:
    """Pixels of the synthetic slide as a pure function of position and seed."""

    def __init__(
        self, width: int, height: int, patches: Array, tissue_fraction: float, seed: int
    ) -> None:
        self.patches = patches
        self.seed = seed
        self._reduced: dict[int, Array] = {1: patches}
        self.background = np.array(BACKGROUND, np.float32)
        # A smooth random field on a coarse grid; tissue where it exceeds a quantile.
        cell = max(16, math.ceil(max(width, height) / _MAX_FIELD))
        gw, gh = math.ceil(width / cell) + 2, math.ceil(height / cell) + 2
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((gh, gw))
        sigma = max(1.5, min(width, height) / 14 / cell)
        fy = np.fft.fftfreq(gh)[:, None]
        fx = np.fft.rfftfreq(gw)[None, :]
        kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
        smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(gh, gw))
        smooth = (smooth - smooth.mean()) / (smooth.std() or 1.0)
        self.field = smooth.astype(np.float32)
        self.cell = cell
        inside = self.field[: gh - 2, : gw - 2]
        if tissue_fraction <= 0:
            self.threshold = math.inf
        elif tissue_fraction >= 1:
            self.threshold = -math.inf
        else:
            self.threshold = float(np.quantile(inside, 1 - tissue_fraction))
        self.edge = 0.03  # field units over which tissue fades into glass

    def reduced_patches(self, factor: int) -> Array:
        if factor not in self._reduced:
            reduced = _box_reduce(self.patches, factor)
            self._reduced[factor] = np.rint(reduced).astype(np.uint8)
        return self._reduced[factor]

    def alpha(self, x0: NDArray[np.float64], y0: NDArray[np.float64]) -> NDArray[np.float32]:
        """Tissue opacity at level-0 positions ``x0`` (columns) and ``y0`` (rows)."""
        if math.isinf(self.threshold):
            value = 0.0 if self.threshold > 0 else 1.0
            return np.full((y0.size, x0.size), value, np.float32)
        gh, gw = self.field.shape
        u = np.clip(x0 / self.cell, 0, gw - 1.001)
        v = np.clip(y0 / self.cell, 0, gh - 1.001)
        iu, iv = u.astype(np.intp), v.astype(np.intp)
        fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
        f = self.field
        top = f[iv][:, iu] * (1 - fu) + f[iv][:, iu + 1] * fu
        bottom = f[iv + 1][:, iu] * (1 - fu) + f[iv + 1][:, iu + 1] * fu
        value = top * (1 - fv)[:, None] + bottom * fv[:, None]
        return np.clip((value - self.threshold) / self.edge + 0.5, 0, 1).astype(np.float32)

    def texture(self, lx: int, ly: int, w: int, h: int, downsample: int) -> Array:
        """Tissue texture for level pixels ``[lx, lx+w) x [ly, ly+h)``."""
        if downsample > PATCH:
            factor = downsample // PATCH
            big = self.texture(lx * factor, ly * factor, w * factor, h * factor, PATCH)
            return np.rint(_box_reduce(big, factor)).astype(np.uint8)
        side = PATCH // downsample
        patches = self.reduced_patches(downsample)
        c0, r0 = lx // side, ly // side
        c1, r1 = (lx + w - 1) // side, (ly + h - 1) // side
        cols = np.arange(c0, c1 + 1, dtype=np.int64)
        rows = np.arange(r0, r1 + 1, dtype=np.int64)
        salt = np.uint64((self.seed * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
        with np.errstate(over="ignore"):
            key = (
                (rows[:, None].astype(np.uint64) << np.uint64(32))
                ^ (cols[None, :].astype(np.uint64) & np.uint64(0xFFFFFFFF))
            ) + salt
        hashes = _splitmix(key)
        choice = (hashes % np.uint64(len(patches))).astype(np.intp)
        orient = ((hashes >> np.uint64(40)) % np.uint64(8)).astype(np.intp)
        canvas = np.empty(((r1 - r0 + 1) * side, (c1 - c0 + 1) * side, 3), np.uint8)
        for i in range(rows.size):
            for j in range(cols.size):
                patch = patches[choice[i, j]]
                o = int(orient[i, j])
                if o >= 4:
                    patch = patch[:, ::-1]
                canvas[i * side : (i + 1) * side, j * side : (j + 1) * side] = np.rot90(
                    patch, o % 4
                )
        ox, oy = lx - c0 * side, ly - r0 * side
        return canvas[oy : oy + h, ox : ox + w]

    def render(self, lx: int, ly: int, w: int, h: int, downsample: int) -> Array:
        x0 = (np.arange(lx, lx + w, dtype=np.float64) + 0.5) * downsample
        y0 = (np.arange(ly, ly + h, dtype=np.float64) + 0.5) * downsample
        alpha = self.alpha(x0, y0)
        if not alpha.any():
            out = np.empty((h, w, 3), np.uint8)
            out[...] = BACKGROUND
            return out
        tissue = self.texture(lx, ly, w, h, downsample)
        if alpha.min() >= 1:
            return np.ascontiguousarray(tissue)
        a = alpha[..., None]
        mixed = tissue * a + self.background * (1 - a)
        return np.rint(mixed).astype(np.uint8)


# ---------------------------------------------------------------------------
# Aperio-style JPEG


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


# ---------------------------------------------------------------------------
# Public API


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
    _tissue: _Tissue = field(repr=False, compare=False)

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
        Number of pyramid levels; by default levels are added while the next
        one would still be at least 1,024 pixels on its longer side.
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
        Seed of the tissue layout and patch choice; equal seeds give equal files.
    source_tiles
        Where the tissue texture comes from: a slide path (patches are cut from
        it with :func:`tissue_patches_from_slide`), an array or sequence of RGB
        tiles, or ``None`` for procedural H&E-like patches (less realistic).
    thumbnail_size
        Longer side of the thumbnail image.
    overwrite
        Replace an existing file at ``path`` (otherwise that is an error).
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
    import tifffile

    if width < 1 or height < 1:
        raise ConfigError(f"slide size must be positive, got {width} x {height}")
    if tile_size < 16 or tile_size % 16:
        raise ConfigError(f"tile_size must be a positive multiple of 16, got {tile_size}")
    if downsample not in (2, 4):
        raise ConfigError(f"downsample must be 2 or 4, got {downsample}")
    if not 0 <= tissue_fraction <= 1:
        raise ConfigError(f"tissue_fraction must be in [0, 1], got {tissue_fraction}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if mpp <= 0 or objective_power <= 0:
        raise ConfigError(f"mpp and objective_power must be positive, got {mpp}, {objective_power}")
    n_levels = _auto_levels(width, height, downsample) if levels is None else levels
    if n_levels < 1 or min(width, height) // downsample ** (n_levels - 1) < 1:
        raise ConfigError(f"{levels} levels do not fit a {width} x {height} slide")
    target = Path(path)
    if target.exists() and not overwrite:
        raise ConfigError("file exists; pass overwrite=True to replace it", path=target)

    if source_tiles is None:
        patches = _procedural_patches(16, seed)
    elif isinstance(source_tiles, (str, os.PathLike)):
        patches = tissue_patches_from_slide(source_tiles)
    else:
        patches = _normalise_patches(source_tiles)
    tissue = _Tissue(width, height, patches, tissue_fraction, seed)

    downsamples = tuple(downsample**k for k in range(n_levels))
    dims = tuple((max(1, width // d), max(1, height // d)) for d in downsamples)
    scale = min(1.0, thumbnail_size / max(width, height))
    thumb_dims = (max(1, round(width * scale)), max(1, round(height * scale)))
    total = sum(math.ceil(w / tile_size) * math.ceil(h / tile_size) for w, h in dims)
    done = 0

    def tiles(level: int) -> Iterator[bytes]:
        nonlocal done
        w, h = dims[level]
        for ty in range(0, h, tile_size):
            for tx in range(0, w, tile_size):
                pixels = tissue.render(tx, ty, tile_size, tile_size, downsamples[level])
                encoded = jpeg.encode(pixels)
                done += 1
                if progress is not None:
                    progress(done, total)
                yield encoded

    jpeg = _AperioJPEG(jpeg_quality)
    head = f"{_LIBRARY}\r\n{width}x{height} [0,0 {width}x{height}] ({tile_size}x{tile_size})"
    tail = (
        f"JPEG/RGB Q={jpeg_quality}|AppMag = {objective_power:g}|StripeWidth = 2040"
        f"|ScanScope ID = TILESTREAM|Filename = {target.stem}|MPP = {mpp:.6g}"
        f"|Title = tilestream synthetic slide, seed {seed}"
    )
    bigtiff = width * height * 3 * 4 // 3 > 2**31  # raw size as a safe bound on JPEG size
    common = {
        "compression": "jpeg",
        "photometric": "rgb",
        # Stored as RGB (PhotometricInterpretation 2), not YCbCr: like Aperio.
        "subsampling": (1, 1),
        "compressionargs": {"outcolorspace": "RGB"},
        "dtype": np.uint8,
        "metadata": None,
        "software": False,
    }
    with atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for level in range(n_levels):
            w, h = dims[level]
            level_tiles = tiles(level)
            first = next(level_tiles)  # the first tile fixes the shared tables
            tif.write(
                _chain(first, level_tiles),
                shape=(h, w, 3),
                tile=(tile_size, tile_size),
                jpegtables=jpeg.tables,
                description=f"{head} {tail}" if level == 0 else f"{head} -> {w}x{h} {tail}",
                **common,
            )
            if level == 0:
                tif.write(
                    _thumbnail_strips(tissue, width, height, thumb_dims, jpeg),
                    shape=(thumb_dims[1], thumb_dims[0], 3),
                    rowsperstrip=16,
                    jpegtables=jpeg.tables,
                    description=(
                        f"{_LIBRARY}\r\n{width}x{height} -> {thumb_dims[0]}x{thumb_dims[1]} - "
                        f"|AppMag = {objective_power:g}|MPP = {mpp:.6g}"
                    ),
                    **common,
                )
    return SyntheticSlide(
        path=target,
        level_dimensions=dims,
        level_downsamples=downsamples,
        tile_size=tile_size,
        mpp=float(mpp),
        objective_power=float(objective_power),
        jpeg_quality=jpeg_quality,
        tissue_fraction=float(tissue_fraction),
        seed=seed,
        thumbnail_dimensions=thumb_dims,
        _tissue=tissue,
    )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _thumbnail_strips(
    tissue: _Tissue, width: int, height: int, size: tuple[int, int], jpeg: _AperioJPEG
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
