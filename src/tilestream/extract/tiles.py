"""Reading, resizing and encoding the kept tiles of one slide, in parallel threads.

The worker threads share one handle on a ``tifffile`` slide (its reads are
thread-safe and one decoded-tile cache decodes each stored tile once for the
whole grid); other backends get a handle per thread. Tiles are processed in
chunks in grid order and handed back in that order, with a bounded number of
chunks in flight, so memory does not grow with the slide and the output is the
same whatever the number of threads.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import Grid
from tilestream.extract.resample import resize_tile
from tilestream.extract.tissue import laplacian_variance
from tilestream.slide import Slide, jpeg_mosaic

__all__ = ["EncodedTile", "StageTimes", "encode_tile", "iter_encoded_tiles"]

CHUNK = 32
#: Chunks of a remote slide read ahead beyond those being processed (on background
#: threads, ``READ_AHEAD_GROUP`` chunks to a coalesced request set; a local file reads nothing
#: ahead).
READ_AHEAD = 4
#: Chunks whose stored tiles are read ahead together.
READ_AHEAD_GROUP = 4


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over threads."""

    read: float = 0.0
    resize: float = 0.0
    quality: float = 0.0
    encode: float = 0.0
    passthrough: float = 0.0
    assemble: float = 0.0
    normalize: float = 0.0

    def add(self, other: StageTimes) -> None:
        """Accumulate ``other`` into this."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, float]:
        """Rounded seconds per stage."""
        return {k: round(getattr(self, k), 4) for k in self.__dataclass_fields__}


@dataclass
class EncodedTile:
    """One processed tile: its grid index, encoded bytes and blur score.

    ``passthrough``: the JPEG's coefficients are the slide's own, unchanged (a
    stored tile copied, or, with ``assembled``, a mosaic of stored tiles' MCUs).
    ``times``: the seconds of a whole chunk of tiles, on its last tile (``None``
    on the others: one record a chunk, not one a tile).
    """

    index: int
    data: bytes
    blur: float | None = None
    passthrough: bool = False
    assembled: bool = False
    times: StageTimes | None = None


def encode_tile(
    tile: NDArray[np.uint8], img_format: str, quality: int, subsampling: str = "444"
) -> bytes:
    """Encode an RGB uint8 tile as JPEG (``quality``, chroma ``subsampling``) or PNG."""
    if img_format == "jpeg":
        return bytes(
            simplejpeg.encode_jpeg(
                np.ascontiguousarray(tile),
                quality=quality,
                colorspace="RGB",
                colorsubsampling=subsampling,
            )
        )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buf, format="PNG")
    return buf.getvalue()


#: Backends whose reads are thread-safe over one handle and its decoded-tile cache.
SHARED_HANDLE_BACKENDS = frozenset({"tifffile"})


class _Handles:
    """Slide handles for the worker threads.

    A ``tifffile`` slide is shared by all threads: its reads are thread-safe
    and its one decoded-tile cache then decodes every stored tile once for the
    whole grid (per-thread handles each decoded the tiles their chunks touched,
    the stored rows shared by neighbouring chunks twice). Other backends get
    one handle per thread.
    """

    def __init__(self, opener: Callable[[], Slide]) -> None:
        self._opener = opener
        self._local = threading.local()
        self._all: list[Slide] = []
        self._lock = threading.Lock()
        self._shared: Slide | None = None
        self._mosaics: dict[int, jpeg_mosaic.CoefficientCache] = {}
        # Read-ahead asked for before the first handle was open (None once it is).
        self._deferred: list[tuple[Grid, Sequence[int]]] | None = []

    def get(self) -> Slide:
        shared = self._shared
        if shared is not None:
            return shared
        slide = getattr(self._local, "slide", None)
        if slide is not None:
            return slide
        with self._lock:  # opened under the lock: the first handle decides whether to share
            if self._shared is not None:
                return self._shared
            slide = self._opener()
            self._all.append(slide)
            if slide.backend in SHARED_HANDLE_BACKENDS:
                self._shared = slide
            deferred, self._deferred = self._deferred or [], None
        for grid, indices in deferred:  # the chunks queued while the slide was opening
            self.prefetch(grid, indices)
        self._local.slide = slide
        return slide

    def prefetch(self, grid: Grid, indices: Sequence[int]) -> None:
        """Read ahead the stored tiles of ``indices`` on a remote slide (else nothing happens).

        The shared handle of a slide read from a store fetches them in one
        coalesced request set on a background thread, while the tiles before
        them are decoded and encoded.
        """
        slide = self._shared
        if slide is None:
            deferred = self._deferred
            if deferred is not None:
                with self._lock:
                    if self._deferred is not None:
                        self._deferred.append((grid, indices))
                        return
                slide = self._shared
        if slide is None or slide.io_stats is None or not indices:
            return
        xs, ys, size = grid.xs, grid.ys, (grid.read_px, grid.read_px)
        slide.prefetch(grid.level, [((int(xs[i]), int(ys[i])), size) for i in indices])

    def mosaic_cache(self, slide: Slide, level: int) -> jpeg_mosaic.CoefficientCache:
        """The stored tiles of ``level`` entropy-decoded once per slide handle (thread-safe)."""
        with self._lock:
            cache = self._mosaics.get(id(slide))
            if cache is None:
                tile_w, tile_h = slide.stored_tile_grid(level) or (0, 0)

                def read(col: int, row: int) -> bytes:
                    return slide.read_stored_tile_bytes(level, col, row)

                cache = jpeg_mosaic.CoefficientCache(
                    read,
                    tile_w,
                    tile_h,
                    image_size=slide.level_dimensions[level],
                    path=str(slide.path),
                )
                self._mosaics[id(slide)] = cache
            return cache

    def close(self) -> None:
        with self._lock:
            self._mosaics.clear()
            for slide in self._all:
                slide.close()
            self._all.clear()


def _assembled(
    cache: jpeg_mosaic.CoefficientCache, grid: Grid, x: int, y: int, t: StageTimes
) -> bytes | None:
    """Tile ``(x, y)`` assembled from the stored tiles' MCUs, or ``None`` (re-encode it).

    A stored tile the mosaic cannot entropy-decode is left to the decoding path,
    which reports a corrupt tile as it would without the mosaic.
    """
    t0 = time.perf_counter()
    ds = grid.level_downsample
    try:
        data = cache.mosaic(round(x / ds), round(y / ds), grid.read_px, grid.read_px)
    except jpeg_mosaic.JpegMosaicError:
        data = None
    t.assemble += time.perf_counter() - t0
    return data


def _process_chunk(
    handles: _Handles,
    grid: Grid,
    config: ExtractConfig,
    indices: Sequence[int],
    mode: str,
    normalizer: Callable[[NDArray[np.uint8]], NDArray[np.uint8]] | None = None,
) -> list[EncodedTile]:
    slide = handles.get()
    handles.prefetch(grid, indices)  # a remote slide: this chunk's stored tiles at once
    out: list[EncodedTile] = []
    append = out.append
    t = StageTimes()  # the chunk's: on its last tile
    xs, ys = grid.xs, grid.ys
    cache = handles.mosaic_cache(slide, grid.level) if mode == "assemble" else None
    for i in indices:
        x, y = int(xs[i]), int(ys[i])
        if mode == "passthrough":
            t0 = time.perf_counter()
            col = round(x / grid.level_downsample) // grid.read_px
            row = round(y / grid.level_downsample) // grid.read_px
            data = slide.read_stored_tile_bytes(grid.level, col, row)
            t.passthrough += time.perf_counter() - t0
            append(EncodedTile(index=i, data=data, passthrough=True))
            continue
        if cache is not None:
            assembled = _assembled(cache, grid, x, y, t)
            if assembled is not None:
                append(EncodedTile(index=i, data=assembled, passthrough=True, assembled=True))
                continue
        t0 = time.perf_counter()
        tile = slide.read_region((x, y), grid.level, (grid.read_px, grid.read_px), as_array=True)
        t1 = time.perf_counter()
        tile = resize_tile(tile, grid.tile_px, resizer=config.resizer)
        t2 = time.perf_counter()
        blur = laplacian_variance(tile) if config.blur_threshold is not None else None
        t3 = time.perf_counter()
        if normalizer is not None:
            tile = normalizer(tile)
        t4 = time.perf_counter()
        data = encode_tile(tile, config.img_format, config.quality, config.jpeg_subsampling)
        t5 = time.perf_counter()
        t.read += t1 - t0
        t.resize += t2 - t1
        t.quality += t3 - t2
        t.normalize += t4 - t3
        t.encode += t5 - t4
        append(EncodedTile(index=i, data=data, blur=blur))
    if out:
        out[-1].times = t
    return out


class _ReadAhead:
    """Asks a remote slide for the stored tiles of the chunks ahead, each chunk once."""

    def __init__(self, handles: _Handles, grid: Grid, chunks: Sequence[Sequence[int]]) -> None:
        self._handles, self._grid, self._chunks = handles, grid, chunks
        self._next = 0

    def upto(self, last: int) -> None:
        """Read ahead every chunk up to ``last`` not asked for yet, ``READ_AHEAD_GROUP`` at a time.

        A group is one request set: fewer, larger ranged reads (each request
        costs the client about as much CPU as a megabyte of data).
        """
        while self._next <= min(last, len(self._chunks) - 1):
            group = self._chunks[self._next : self._next + READ_AHEAD_GROUP]
            self._handles.prefetch(self._grid, [i for chunk in group for i in chunk])
            self._next += len(group)


def iter_encoded_tiles(
    opener: Callable[[], Slide],
    grid: Grid,
    indices: Sequence[int] | NDArray[np.int64],
    config: ExtractConfig,
    *,
    threads: int = 1,
    passthrough: bool = False,
    assemble: bool = False,
    normalizer: Callable[[NDArray[np.uint8]], NDArray[np.uint8]] | None = None,
) -> Generator[EncodedTile, None, None]:
    """Yield the encoded tiles at ``indices`` of ``grid``, in that order.

    Parameters
    ----------
    opener
        Opens a new handle on the slide (once for a ``tifffile`` slide, else once per thread).
    grid, indices
        The grid and the indices of the tiles to produce.
    config
        Encoding and blur options.
    threads
        Worker threads; 1 processes in the calling thread.
    passthrough
        Copy the stored JPEG tiles as they are (the caller checked the grid
        aligns with them).
    assemble
        Assemble each tile losslessly from the stored JPEG tiles' MCUs where
        it can (the caller checked the grid lies on them: see
        :func:`tilestream.extract.plan.can_assemble`), else decode and re-encode it.
    normalizer
        Applied to each RGB tile before encoding (stain normalisation; shared
        by the threads, so it must be thread-safe).
    """
    idx = [int(i) for i in indices]
    mode = "passthrough" if passthrough else "assemble" if assemble else "encode"
    chunks = [idx[s : s + CHUNK] for s in range(0, len(idx), CHUNK)]
    handles = _Handles(opener)
    ahead = _ReadAhead(handles, grid, chunks)
    try:
        if threads <= 1:
            for k, chunk in enumerate(chunks):
                ahead.upto(k + READ_AHEAD)
                yield from _process_chunk(handles, grid, config, chunk, mode, normalizer)
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tilestream-tiles") as pool:
            pending: deque[Future[list[EncodedTile]]] = deque()
            k = 0
            while k < len(chunks) and len(pending) < 2 * threads:
                ahead.upto(k + READ_AHEAD)
                pending.append(
                    pool.submit(_process_chunk, handles, grid, config, chunks[k], mode, normalizer)
                )
                k += 1
            while pending:
                done = pending.popleft().result()
                if k < len(chunks):
                    ahead.upto(k + READ_AHEAD)
                    pending.append(
                        pool.submit(
                            _process_chunk, handles, grid, config, chunks[k], mode, normalizer
                        )
                    )
                    k += 1
                yield from done
    finally:
        handles.close()
