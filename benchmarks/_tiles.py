"""Realistic 256 px JPEG tiles cut from real slides, for the benchmarks.

Benchmarks must time real work on real-looking data, not on noise or zeros:
JPEG size and decode cost depend on content. This module cuts tiles with
tissue out of two real whole-slide images of the shared test data
(``slides/CMU-1-Small-Region.svs``, an H&E Aperio slide, and
``slides/tcga-cr-7395-01a-01-ts1.svs``, a TCGA slide stored as JPEG 2000),
read with openslide-python, and encodes them with simplejpeg.

Tiles are taken at random pixel offsets (not only a fixed grid) and under a
random one of the 8 flips/rotations, so 20,000 tiles are 20,000 *distinct*
byte strings (checked) with the size distribution of real tissue tiles. The
result is deterministic for a given ``seed``.

The test data is found through ``TILESTREAM_TESTDATA`` or ``../shared/testdata``
beside the repository checkout.

Usage from a benchmark script in this folder::

    from _tiles import realistic_tiles, write_tile_tfrecords

    tiles = realistic_tiles(20_000)                      # list[bytes], JPEG
    paths = write_tile_tfrecords(out_dir, 20_000, 20)    # 20 files, Slideflow schema
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SLIDES",
    "TileSourceError",
    "grid_location",
    "realistic_tiles",
    "testdata_root",
    "tissue_crops",
    "write_tile_tfrecords",
]

REPO = Path(__file__).resolve().parents[1]

#: The real slides tiles are cut from (under ``<testdata>/slides``).
SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")

#: A tile is kept when at least this fraction of its pixels is tissue.
MIN_TISSUE = 0.5

#: Where :func:`realistic_tiles` caches its output (git-ignored).
CACHE_DIR = REPO / "benchmarks" / "_work" / "tile-cache"

_BLOCK = 8  # candidate tile origins lie on an 8 px lattice, then jittered by 0..7 px


class TileSourceError(RuntimeError):
    """The real slides needed to make benchmark tiles are not available."""


def testdata_root() -> Path:
    """The shared real test data: ``$TILESTREAM_TESTDATA`` or ``../shared/testdata``."""
    env = os.environ.get("TILESTREAM_TESTDATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "testdata")
    for candidate in candidates:
        if (candidate / "slides").is_dir():
            return candidate
    raise TileSourceError(
        "real test slides not found: set TILESTREAM_TESTDATA to the test data folder "
        "(the one holding slides/) or put it at ../shared/testdata beside the repository"
    )


@functools.cache
def _slide_rgb(name: str) -> np.ndarray:
    """Level 0 of a real slide as an RGB uint8 array (H, W, 3)."""
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - openslide is a core dependency
        raise TileSourceError("openslide-python is needed to cut benchmark tiles") from exc
    path = testdata_root() / "slides" / name
    if not path.is_file():
        raise TileSourceError(f"{path}: slide not found")
    slide = openslide.OpenSlide(str(path))
    try:
        region = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    finally:
        slide.close()
    return np.ascontiguousarray(np.asarray(region))


def _tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are neither bright background nor grey (pen-free H&E heuristic)."""
    grey = rgb.mean(axis=2)
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return (grey < 215) & (spread > 15)


@functools.cache
def _candidates(name: str, tile_px: int) -> np.ndarray:
    """Lattice origins (y, x) of ``tile_px`` windows with enough tissue, shape (m, 2)."""
    rgb = _slide_rgb(name)
    height, width = rgb.shape[:2]
    mask = _tissue_mask(rgb)
    # Integral image of the tissue mask for O(1) window sums.
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(axis=0, dtype=np.int64).cumsum(axis=1)
    # Origins leave room for the 0..BLOCK-1 jitter.
    ys = np.arange(0, height - tile_px - _BLOCK + 2, _BLOCK)
    xs = np.arange(0, width - tile_px - _BLOCK + 2, _BLOCK)
    if ys.size == 0 or xs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y1, x1 = y0 + tile_px, x0 + tile_px
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    keep = sums >= MIN_TISSUE * tile_px * tile_px
    return np.stack([y0[keep], x0[keep]], axis=1).astype(np.int64)


def _dihedral(tile: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square tile (k in 0..7)."""
    out = np.rot90(tile, k % 4)
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def realistic_tiles(
    n: int,
    *,
    tile_px: int = 256,
    quality: int = 90,
    seed: int = 0,
    cache: bool = True,
) -> list[bytes]:
    """``n`` distinct JPEG tiles of real tissue, ``tile_px`` x ``tile_px`` RGB.

    Parameters
    ----------
    n
        How many tiles.
    tile_px
        Tile edge in pixels (level 0 of the source slides, ~0.5 um/px).
    quality
        JPEG quality for simplejpeg (90 is typical of tile extraction).
    seed
        Seed of the deterministic sampling of positions and orientations.
    cache
        Keep the tiles in ``benchmarks/_work/tile-cache`` (git-ignored) and
        reuse them on the next run with the same arguments (cutting 20,000
        tiles takes ~15 s).

    Returns
    -------
    list of bytes
        JPEG-encoded tiles, all different byte strings.
    """
    import simplejpeg

    if n < 0:
        raise ValueError("n must be >= 0")
    cache_file = (
        CACHE_DIR / f"tiles-n{n}-px{tile_px}-q{quality}-s{seed}-sj{simplejpeg.__version__}.npz"
    )
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                blob, ends = z["blob"].tobytes(), z["ends"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is just rebuilt
        else:
            starts = np.concatenate([[0], ends[:-1]])
            return [blob[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    rng = np.random.default_rng(seed)
    sources = [(name, _candidates(name, tile_px)) for name in SLIDES]
    sources = [(name, cand) for name, cand in sources if len(cand)]
    if not sources:
        raise TileSourceError(f"no {tile_px} px tile with tissue found in {SLIDES}")
    weights = np.array([len(cand) for _, cand in sources], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())[:-1]

    tiles: list[bytes] = []
    seen: set[bytes] = set()
    attempts = 0
    while len(tiles) < n:
        attempts += 1
        if attempts > 4 * n + 1000:
            raise TileSourceError(f"could not cut {n} distinct tiles of {tile_px} px")
        which = int(np.searchsorted(cumulative, rng.random(), side="right"))
        name, cand = sources[which]
        y, x = cand[int(rng.integers(len(cand)))]
        y += int(rng.integers(_BLOCK))
        x += int(rng.integers(_BLOCK))
        rgb = _slide_rgb(name)
        tile = _dihedral(rgb[y : y + tile_px, x : x + tile_px], int(rng.integers(8)))
        data = simplejpeg.encode_jpeg(tile, quality=quality, colorspace="RGB")
        if data in seen:
            continue
        seen.add(data)
        tiles.append(data)
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                blob=np.frombuffer(b"".join(tiles), dtype=np.uint8),
                ends=np.cumsum([len(t) for t in tiles], dtype=np.int64),
            )
        os.replace(tmp, cache_file)
    return tiles


def tissue_crops(n: int, *, tile_px: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` crops of real tissue as decoded pixels (what a slide reader hands an encoder).

    Positions and orientations are sampled as in :func:`realistic_tiles`; the
    pixels are the source slides' own (OpenSlide's decode of their stored tiles).
    """
    rng = np.random.default_rng(seed)
    sources = [(name, _candidates(name, tile_px)) for name in SLIDES]
    sources = [(name, cand) for name, cand in sources if len(cand)]
    if not sources:
        raise TileSourceError(f"no {tile_px} px tile with tissue found in {SLIDES}")
    weights = np.array([len(cand) for _, cand in sources], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())[:-1]
    crops = []
    for _ in range(n):
        name, cand = sources[int(np.searchsorted(cumulative, rng.random(), side="right"))]
        y, x = cand[int(rng.integers(len(cand)))]
        y += int(rng.integers(_BLOCK))
        x += int(rng.integers(_BLOCK))
        crop = _slide_rgb(name)[y : y + tile_px, x : x + tile_px]
        crops.append(_dihedral(crop, int(rng.integers(8))))
    return crops


def grid_location(i: int, *, per_file: int, tile_px: int = 256) -> tuple[int, int]:
    """The (loc_x, loc_y) given to tile ``i`` of a file of ``per_file`` tiles.

    Tiles are laid out on a square grid of ``tile_px`` steps and located by
    their centre, as Slideflow does; locations are unique within a file.
    """
    cols = max(1, int(np.ceil(np.sqrt(per_file))))
    row, col = divmod(i, cols)
    return col * tile_px + tile_px // 2, row * tile_px + tile_px // 2


def write_tile_tfrecords(
    out_dir: str | os.PathLike[str],
    n_tiles: int,
    n_files: int = 1,
    *,
    tile_px: int = 256,
    quality: int = 90,
    seed: int = 0,
    tiles: Sequence[bytes] | None = None,
    slide_prefix: str = "slide",
    compression: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``n_tiles`` realistic tiles into ``n_files`` TFRecords (Slideflow schema).

    File ``k`` is ``<out_dir>/<slide_prefix><k:03d>.tfrecords`` holding records
    ``image_raw`` (JPEG), ``slide`` (the file stem), ``loc_x``, ``loc_y`` (a
    unique grid location, see :func:`grid_location`), with its
    ``.index.npz`` (offsets and locations) beside it. Tiles are spread as
    evenly as possible over the files.

    tilestream's own writer is used when it is importable; otherwise a small
    built-in writer produces the same bytes (framing, Example and index), so
    other benchmarks can prepare data before the TFRecord layer exists.

    Parameters
    ----------
    out_dir
        Folder to write into (created).
    n_tiles, n_files
        How many tiles in total, over how many files.
    tile_px, quality, seed
        Passed to :func:`realistic_tiles` (ignored when ``tiles`` is given).
    tiles
        Pre-made JPEG tiles to write instead (``len(tiles) >= n_tiles``).
    slide_prefix
        Prefix of the slide names and file names.
    compression
        ``None``, ``"gzip"`` or ``"zlib"`` (tilestream's writer only).
    progress
        Called as ``progress(done, total)`` after each file.

    Returns
    -------
    list of Path
        The TFRecord files written, in order.
    """
    if n_files < 1:
        raise ValueError("n_files must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tiles is None:
        tiles = realistic_tiles(n_tiles, tile_px=tile_px, quality=quality, seed=seed)
    elif len(tiles) < n_tiles:
        raise ValueError(f"{len(tiles)} tiles given, {n_tiles} needed")
    writer = _tilestream_writer(compression)
    bounds = np.linspace(0, n_tiles, n_files + 1).round().astype(int)
    paths: list[Path] = []
    for k in range(n_files):
        name = f"{slide_prefix}{k:03d}"
        path = out / f"{name}.tfrecords"
        chunk = tiles[bounds[k] : bounds[k + 1]]
        locs = [grid_location(i, per_file=len(chunk), tile_px=tile_px) for i in range(len(chunk))]
        writer(path, name, chunk, locs)
        paths.append(path)
        if progress is not None:
            progress(k + 1, n_files)
    return paths


_Writer = Callable[[Path, str, Sequence[bytes], Sequence[tuple[int, int]]], None]


def _tilestream_writer(compression: str | None) -> _Writer:
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    def write(
        path: Path, slide: str, tiles: Sequence[bytes], locs: Sequence[tuple[int, int]]
    ) -> None:
        with TFRecordWriter(path, compression=compression, index=True) as w:
            for tile, (x, y) in zip(tiles, locs, strict=True):
                w.write(serialized_record(slide, tile, x, y), location=(x, y))

    return write
