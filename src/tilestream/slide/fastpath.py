"""The fast tile path: stored tiles read with one file handle, decoded once, cached.

OpenSlide's ``read_region`` decodes every stored tile a region touches on every
call and converts pixels twice. Here each stored tile (or strip) of a TIFF page
is read straight from its ``TileOffsets``/``TileByteCounts`` through one file
handle (``os.pread``, so threads share it), decoded once (libjpeg-turbo /
OpenJPEG / zlib... through tifffile's decoder for the page, which picks the
right JPEG colour space: Aperio JPEG tiles are RGB-coded, not YCbCr), kept in a
:class:`TileCache` bounded in bytes (LRU), and regions are assembled from it.
Reading a slide in grid order therefore decodes each stored tile once while
memory stays bounded by the cache budget, whatever the slide's size: a budget
that may grow (``grow_limit``) is raised to the rows of stored tiles a region
spans (plus a region's worth), what an LRU needs for a row-major pass to decode
every stored tile once.

:meth:`StoredLevel.read_jpeg_tile` returns a stored JPEG tile as a complete,
standalone JPEG file (the page's ``JPEGTables`` merged in, and an Adobe APP14
marker with ``transform=0`` when the tile is RGB-coded) so that any decoder
gives the same pixels as OpenSlide, without re-encoding. Plain JPEG tiles are
decoded that way by simplejpeg (libjpeg-turbo, the pixels of tifffile's
decoder, less overhead per call; a tile it refuses goes to tifffile's decoder,
whose error names the damage).

:meth:`StoredLevel.read_reduced` reads a region reduced by an integer factor
from the stored tiles reduced once each (the box mean of Pillow's ``reduce``,
or, opted into, libjpeg-turbo's scaled decoding of JPEG tiles at 1/2, 1/4,
1/8), cached reduced: no full-size intermediate.

The cache is :mod:`tilestream.slide.tilecache`; the JPEG-table merge and the
YCbCr conversion are :mod:`tilestream.slide.tile_codecs` (both re-exported
here).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import CorruptSlideError, SlideError
from tilestream.slide.limits import SlideLimits, default_limits
from tilestream.slide.tile_codecs import APERIO_JP2K_YCBCR, merge_jpeg_tables, ycbcr_to_rgb
from tilestream.slide.tilecache import TileCache

__all__ = [
    "APERIO_JP2K_YCBCR",
    "FileReader",
    "StoredLevel",
    "TileCache",
    "box_reduce",
    "merge_jpeg_tables",
    "ycbcr_to_rgb",
]

_JPEG = 7
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6


def box_reduce(pixels: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Each ``factor`` x ``factor`` block of an RGB array averaged (Pillow's ``reduce``).

    The mean is rounded half up, ``(sum + n // 2) // n`` over the ``n`` pixels
    of a block: exactly ``Image.reduce(factor)``, which computes it. Sizes not
    divisible by ``factor`` give a partial last block (the mean of its pixels).

    Examples
    --------
    >>> import numpy as np
    >>> box_reduce(np.array([[[0, 0, 0], [1, 2, 3]], [[1, 2, 3], [1, 2, 3]]], np.uint8), 2)
    array([[[1, 2, 2]]], dtype=uint8)
    """
    if factor == 1:
        return pixels
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels), "RGB").reduce(factor))


class FileReader:
    """Positional reads from one file handle, safe to share between threads.

    A remote slide's reader (:class:`tilestream.slide.remote.StoreReader`) has
    the same interface, and :attr:`remote` true: :class:`StoredLevel` then
    fetches the stored tiles a region needs in one coalesced request first.
    """

    #: Whether reads are remote (they are then batched with ``fetch``).
    remote = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._f = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        #: The file's size when opened: no stored segment lies beyond it.
        self.size = os.fstat(self._f.fileno()).st_size
        self._lock = threading.Lock()
        self._pread = getattr(os, "pread", None)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        if self._pread is not None:
            return bytes(self._pread(self._f.fileno(), size, offset))
        with self._lock:  # pragma: no cover - platforms without pread
            self._f.seek(offset)
            return self._f.read(size)

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Nothing to do: a local read costs no round trip (see :attr:`remote`)."""

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Nothing to do: a local read costs no round trip (see :attr:`remote`)."""

    def close(self) -> None:
        """Close the handle."""
        self._f.close()


class StoredLevel:
    """One TIFF page (a pyramid level) read tile by tile with a shared cache.

    Parameters
    ----------
    page
        The tifffile ``TiffPage`` (its ``decode`` is used; not its file handle).
    reader
        The shared :class:`FileReader`.
    cache
        The shared :class:`TileCache`.
    key
        Distinguishes this level's tiles in the cache (e.g. the level number).
    """

    def __init__(
        self,
        page: Any,
        reader: FileReader | Any,
        cache: TileCache,
        key: Hashable,
        *,
        limits: SlideLimits | None = None,
    ) -> None:
        self.page = page
        self.reader = reader
        self.cache = cache
        self.key = key
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        self.tiled = bool(page.is_tiled)
        if self.tiled:
            self.tile_w, self.tile_h = int(page.tilewidth), int(page.tilelength)
        else:  # strips: tiles as wide as the image
            rows = int(page.rowsperstrip or self.height)
            self.tile_w, self.tile_h = self.width, min(rows, self.height)
        if self.tile_w < 1 or self.tile_h < 1:
            raise CorruptSlideError(
                f"level {key}: stored segments of {self.tile_w}x{self.tile_h} px", path=reader.path
            )
        # What one decode allocates: the decoder's samples, then RGB.
        itemsize = -(-int(page.bitspersample) // 8)
        (limits or default_limits()).check_tile(
            self.tile_w,
            self.tile_h,
            max(4, int(page.samplesperpixel) * itemsize),
            path=reader.path,
            what=f"level {key}: a stored {'tile' if self.tiled else 'strip'}",
        )
        self.cols = -(-self.width // self.tile_w)
        self.rows = -(-self.height // self.tile_h)
        #: Decoded bytes of one row of stored tiles.
        self.row_bytes = self.cols * self.tile_w * self.tile_h * 3
        # tifffile's tuples of ints are kept as they are (a sparse file's table
        # can hold millions of entries); anything else becomes one.
        self.offsets: tuple[int, ...] = _int_tuple(page.dataoffsets)
        self.bytecounts: tuple[int, ...] = _int_tuple(page.databytecounts)
        if len(self.offsets) < self.cols * self.rows:
            raise SlideError(
                f"level {key}: {len(self.offsets)} stored segments for a "
                f"{self.cols}x{self.rows} grid (multi-plane data is not supported)",
                path=reader.path,
            )
        self.compression = int(page.compression)
        self.photometric = int(page.photometric)
        self.jpegtables: bytes | None = getattr(page, "jpegtables", None)
        self.jpegheader: bytes | None = getattr(page, "jpegheader", None)
        self._decode = page.decode
        self._rgb_coded = self.photometric == _PHOTOMETRIC_RGB
        #: Plain JPEG tiles are decoded by simplejpeg (see :meth:`_decode_tile`).
        self._simplejpeg = self.is_plain_jpeg
        self._blank: NDArray[np.uint8] | None = None
        self._present: NDArray[np.bool_] | None = None

    @property
    def present(self) -> NDArray[np.bool_]:
        """``(rows, cols)``: False where a stored segment was never written (byte count 0)."""
        if self._present is None:
            counts = np.fromiter(self.bytecounts, np.int64, self.cols * self.rows)
            self._present = (counts > 0).reshape(self.rows, self.cols)
        return self._present

    def _blank_tile(self) -> NDArray[np.uint8]:
        # One read-only white tile shared by every sparse tile of the level: a
        # sparse file costs no memory and no cache room for what it lacks.
        if self._blank is None:
            blank = np.full((self.tile_h, self.tile_w, 3), 255, np.uint8)
            blank.flags.writeable = False
            self._blank = blank
        return self._blank

    @property
    def is_plain_jpeg(self) -> bool:
        """Whether stored tiles are ordinary TIFF JPEG tiles (pass-through possible)."""
        return (
            self.tiled
            and self.compression == _JPEG
            and self.jpegheader is None
            and self.photometric in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR)
            and int(self.page.samplesperpixel) == 3
            and int(self.page.bitspersample) == 8
        )

    def _index(self, col: int, row: int) -> int:
        if not (0 <= col < self.cols and 0 <= row < self.rows):
            raise IndexError(
                f"tile ({col}, {row}) outside the {self.cols}x{self.rows} grid of level {self.key}"
            )
        return row * self.cols + col

    def read_raw_tile(self, col: int, row: int) -> bytes:
        """The stored (still compressed) bytes of tile ``(col, row)``."""
        index = self._index(col, row)
        size = self.bytecounts[index]
        if size and self.offsets[index] + size > self.reader.size:
            # Checked before reading: a byte count is not an allocation size.
            raise CorruptSlideError(
                f"level {self.key} tile ({col}, {row}): file truncated ({size} bytes at offset "
                f"{self.offsets[index]} lie beyond the end of the {self.reader.size}-byte file)",
                path=self.reader.path,
            )
        data = self.reader.read(self.offsets[index], size) if size else b""
        if len(data) != size:
            raise CorruptSlideError(
                f"level {self.key} tile ({col}, {row}): file truncated "
                f"({len(data)} of {size} bytes at offset {self.offsets[index]})",
                path=self.reader.path,
            )
        return data

    def read_jpeg_tile(self, col: int, row: int) -> bytes:
        """Tile ``(col, row)`` as a standalone JPEG file decoding to OpenSlide's pixels."""
        if not self.is_plain_jpeg:
            raise ValueError(f"level {self.key} does not store plain JPEG tiles")
        data = self.read_raw_tile(col, row)
        try:
            return merge_jpeg_tables(data, self.jpegtables, rgb=self._rgb_coded)
        except ValueError as exc:
            raise CorruptSlideError(
                f"level {self.key} tile ({col}, {row}): {exc}", path=self.reader.path
            ) from exc

    def tile(self, col: int, row: int) -> NDArray[np.uint8]:
        """Decoded RGB uint8 tile ``(tile_h, tile_w, 3)`` (edge tiles padded), cached."""
        index = self._index(col, row)
        if not self.bytecounts[index]:
            # A sparse (never written) tile: OpenSlide draws nothing there.
            return self._blank_tile()
        key = (self.key, col, row)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        data = self.read_raw_tile(col, row)
        decoded = self._decode_tile(data, index, col, row)
        self.cache.put(key, decoded)
        return decoded

    def _decode_tile(self, data: bytes, index: int, col: int, row: int) -> NDArray[np.uint8]:
        if self._simplejpeg:
            # Plain JPEG tiles: libjpeg-turbo through simplejpeg on the standalone
            # JPEG, the same pixels as tifffile's decoder with less overhead per call.
            # A tile it refuses goes to tifffile's decoder, whose libjpeg message
            # (the one OpenSlide reports) names what is wrong.
            try:
                rgb = simplejpeg.decode_jpeg(
                    merge_jpeg_tables(data, self.jpegtables, rgb=self._rgb_coded),
                    colorspace="RGB",
                )
            except (ValueError, RuntimeError):
                pass
            else:
                if rgb.shape == (self.tile_h, self.tile_w, 3):
                    return rgb
                return _pad_tile(rgb, self.tile_w, self.tile_h)
        try:
            segment, _, _ = self._decode(
                data, index, jpegtables=self.jpegtables, jpegheader=self.jpegheader
            )
        except Exception as exc:  # codec errors come as many types (Jpeg8Error, ValueError...)
            raise CorruptSlideError(
                f"level {self.key} tile ({col}, {row}) cannot be decoded: "
                f"{type(exc).__name__}: {exc}",
                path=self.reader.path,
            ) from exc
        if segment is None:
            raise CorruptSlideError(
                f"level {self.key} tile ({col}, {row}) is empty", path=self.reader.path
            )
        arr = np.asarray(segment)
        arr = arr.reshape(arr.shape[-3:]) if arr.ndim > 3 else arr
        if arr.ndim == 2:
            arr = arr[..., None]
        if self.compression == APERIO_JP2K_YCBCR:
            if arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise CorruptSlideError(
                    f"level {self.key} tile ({col}, {row}): YCbCr JPEG 2000 decoded to "
                    f"{arr.shape} {arr.dtype}, not 3 8-bit components",
                    path=self.reader.path,
                )
            arr = ycbcr_to_rgb(arr)
        rgb = _to_rgb8(arr)
        if rgb.shape[:2] != (self.tile_h, self.tile_w):
            return _pad_tile(rgb, self.tile_w, self.tile_h)
        return np.ascontiguousarray(rgb)

    def read_rgb(self, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """RGB uint8 ``(h, w, 3)`` of an in-bounds rectangle, assembled from cached tiles."""
        tw, th = self.tile_w, self.tile_h
        c0, c1 = x // tw, (x + w - 1) // tw
        r0, r1 = y // th, (y + h - 1) // th
        # Row-major readers come back for the bottom rows of this region on the
        # next row of regions: with LRU that needs the rows it spans, plus its
        # own tiles once more.
        span = r1 - r0 + 1
        self.cache.reserve(span * (self.row_bytes + (c1 - c0 + 2) * tw * th * 3))
        if self.reader.remote:  # one coalesced request for the stored tiles not decoded yet
            self.reader.fetch(self.missing_ranges(c0, c1, r0, r1))
        return _assemble(self.tile, x, y, w, h, tw, th)

    def missing_ranges(
        self, c0: int, c1: int, r0: int, r1: int, factor: int = 1
    ) -> list[tuple[int, int]]:
        """``(offset, size)`` of the stored tiles in columns ``c0..c1``, rows ``r0..r1`` to read.

        Tiles never written, and tiles already decoded (at ``factor``), are left out.
        """
        out = []
        cache, key, cols = self.cache, self.key, self.cols
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, self.cols - 1), min(r1, self.rows - 1)
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                size = self.bytecounts[row * cols + col]
                if not size or (key, col, row) in cache:
                    continue
                if factor > 1 and any((key, col, row, factor, s) in cache for s in (False, True)):
                    continue
                out.append((self.offsets[row * cols + col], size))
        return out

    def prefetch(self, x: int, y: int, w: int, h: int) -> None:
        """Start fetching, in the background, the stored tiles of level rectangle ``(x, y, w, h)``.

        Nothing happens for a local file.
        """
        if not self.reader.remote or w <= 0 or h <= 0:
            return
        tw, th = self.tile_w, self.tile_h
        ranges = self.missing_ranges(x // tw, (x + w - 1) // tw, y // th, (y + h - 1) // th)
        self.reader.prefetch(ranges)

    # -- reduced reads ----------------------------------------------------------
    def can_reduce(self, x: int, y: int, w: int, h: int, factor: int) -> bool:
        """Whether :meth:`read_reduced` serves this region (else read and reduce it).

        The ``factor`` x ``factor`` blocks must fall inside stored tiles (the
        origin and the stored tile size multiples of ``factor``) and the region
        inside the level.
        """
        return (
            factor >= 2
            and w > 0
            and h > 0
            and x >= 0
            and y >= 0
            and x % factor == 0
            and y % factor == 0
            and self.tile_w % factor == 0
            and self.tile_h % factor == 0
            and x + w * factor <= self.width
            and y + h * factor <= self.height
        )

    def reduced_tile(
        self, col: int, row: int, factor: int, *, scaled: bool = False
    ) -> NDArray[np.uint8]:
        """Tile ``(col, row)`` reduced ``factor`` times, ``(tile_h // f, tile_w // f, 3)``, cached.

        ``scaled=False``: the ``factor`` x ``factor`` box mean of the decoded tile
        (:func:`box_reduce`). ``scaled=True``: for plain JPEG tiles and
        ``factor`` 2, 4 or 8, libjpeg-turbo decodes the tile directly at that
        scale (its scaled inverse DCT: cheaper than a full decode, pixels close
        to but not equal to the box mean); otherwise the box mean.
        """
        scaled = scaled and self.is_plain_jpeg and factor in (2, 4, 8)
        index = self._index(col, row)
        sw, sh = self.tile_w // factor, self.tile_h // factor
        if not self.bytecounts[index]:  # sparse: a view of the shared white tile
            return self._blank_tile()[:sh, :sw]
        key = (self.key, col, row, factor, scaled)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        small: NDArray[np.uint8] | None = None
        if scaled:
            small = self._decode_scaled(col, row, sw, sh)
        if small is None:
            full = self.cache.peek((self.key, col, row))
            if full is None:
                full = self._decode_tile(self.read_raw_tile(col, row), index, col, row)
            small = np.ascontiguousarray(box_reduce(full, factor))
        self.cache.put(key, small)
        return small

    def _decode_scaled(self, col: int, row: int, sw: int, sh: int) -> NDArray[np.uint8] | None:
        data = self.read_jpeg_tile(col, row)
        try:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=sw, min_height=sh)
        except (ValueError, RuntimeError):
            return None  # the full decode reports what is wrong
        if arr.shape != (sh, sw, 3):  # a tile whose JPEG frame is not the tile size
            return None
        return np.asarray(arr)

    def read_reduced(
        self, x: int, y: int, w: int, h: int, factor: int, *, scaled: bool = False
    ) -> NDArray[np.uint8]:
        """RGB ``(h, w, 3)``: level pixels ``[x, x + w * f) x [y, y + h * f)`` reduced ``f`` times.

        Assembled from :meth:`reduced_tile` (each stored tile decoded and reduced
        once, kept reduced in the cache: no full-size intermediate). With
        ``scaled=False`` the result equals ``box_reduce(read_rgb(x, y, w * f,
        h * f), f)`` exactly; the caller checks :meth:`can_reduce` first.
        """
        if not self.can_reduce(x, y, w, h, factor):
            raise ValueError(
                f"level {self.key}: region ({x}, {y}) {w}x{h} reduced {factor}x is not on "
                f"the {self.tile_w}x{self.tile_h} stored grid / inside the level"
            )
        tw, th = self.tile_w // factor, self.tile_h // factor
        rx, ry = x // factor, y // factor
        c0, c1 = rx // tw, (rx + w - 1) // tw
        r0, r1 = ry // th, (ry + h - 1) // th
        span = r1 - r0 + 1
        self.cache.reserve(
            span * (self.row_bytes // (factor * factor) + (c1 - c0 + 2) * tw * th * 3)
        )
        if self.reader.remote:
            self.reader.fetch(self.missing_ranges(c0, c1, r0, r1, factor))

        def tile(col: int, row: int) -> NDArray[np.uint8]:
            return self.reduced_tile(col, row, factor, scaled=scaled)

        return _assemble(tile, rx, ry, w, h, tw, th)


def _assemble(
    tile: Callable[[int, int], NDArray[np.uint8]], x: int, y: int, w: int, h: int, tw: int, th: int
) -> NDArray[np.uint8]:
    """The ``(h, w, 3)`` rectangle at ``(x, y)`` of a grid of ``tw`` x ``th`` tiles."""
    c0, c1 = x // tw, (x + w - 1) // tw
    r0, r1 = y // th, (y + h - 1) // th
    if c0 == c1 and r0 == r1:
        t = tile(c0, r0)
        ox, oy = x - c0 * tw, y - r0 * th
        return t[oy : oy + h, ox : ox + w].copy()
    out = np.empty((h, w, 3), np.uint8)
    for row in range(r0, r1 + 1):
        ty0 = row * th
        sy0, sy1 = max(y, ty0), min(y + h, ty0 + th)
        for col in range(c0, c1 + 1):
            tx0 = col * tw
            sx0, sx1 = max(x, tx0), min(x + w, tx0 + tw)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile(col, row)[
                sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
            ]
    return out


def _int_tuple(values: Any) -> tuple[int, ...]:
    if isinstance(values, tuple) and all(type(v) is int for v in values[:8]):
        return values
    return tuple(int(v) for v in values)


def _pad_tile(rgb: NDArray[np.uint8], tile_w: int, tile_h: int) -> NDArray[np.uint8]:
    """A decoded tile cut or padded (white) to the stored tile size."""
    h, w = rgb.shape[:2]
    full = np.full((tile_h, tile_w, 3), 255, np.uint8)
    full[: min(h, tile_h), : min(w, tile_w)] = rgb[:tile_h, :tile_w]
    return full


def _to_rgb8(arr: NDArray[Any]) -> NDArray[np.uint8]:
    """Any decoded tile (grey, grey+alpha, RGB, RGBA; 8/16-bit, float) as RGB uint8."""
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype.kind == "f":
            arr = np.clip(arr * 255.0 if arr.max(initial=0) <= 1.0 else arr, 0, 255).astype(
                np.uint8
            )
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    samples = arr.shape[-1]
    if samples == 3:
        return arr
    if samples in (1, 2):
        return np.repeat(arr[..., :1], 3, axis=-1)
    return arr[..., :3]
