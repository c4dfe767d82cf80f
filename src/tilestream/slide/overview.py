"""A whole pyramid level shrunk by box means, in bounded memory and time.

Thumbnails of slides without a small level and extraction's low-resolution
pass need a whole level shrunk to a few thousand pixels. Reading the level in
full-width strips costs memory proportional to its width and time
proportional to its declared area; a file declaring 10^6 x 10^6 px (and
holding a few tiles) would take gigabytes and hours. Here:

* the level is read in chunks of at most :data:`CHUNK_PIXELS` pixels, and
  the output is accumulated in bands of rows whose sums take at most
  :data:`BAND_BYTES`: memory is the result plus a few tens of MiB, whatever
  the level's size;
* stored tiles or strips that were never written (``TileByteCounts`` 0, which
  read as white) are not read at all: where the backend knows which segments
  hold data (:meth:`~tilestream.slide.SlideBackend.segment_mask`), chunks
  over empty segments are skipped and bands without data are filled at once,
  so a sparse file costs time in proportion to the tiles it holds, its tile
  table and the output, not to its declared area;
* the result is checked against the region budget
  (:class:`~tilestream.slide.limits.SlideLimits`) before it is allocated.

Output pixel ``(i, j)`` is the mean, rounded half up, of the level pixels in
columns ``[bx[j], bx[j + 1])`` and rows ``[by[i], by[i + 1])`` with
``bx[j] = round(j * level_width / width)`` (half up), the boxes Pillow's
``Image.Resampling.BOX`` uses; sums are exact integers, so the result does not
depend on the chunking.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from PIL import Image
>>> from tilestream.slide import open_slide
>>> path = pathlib.Path(tempfile.mkdtemp()) / "o.png"
>>> pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
>>> Image.fromarray(pixels).save(path)
>>> with open_slide(path) as slide:
...     small = read_level_resized(slide, 0, (3, 2))
>>> small.shape, small[0, 0].tolist(), pixels[:2, :2].reshape(-1, 3).mean(0).tolist()
((2, 3, 3), [11, 12, 13], [10.5, 11.5, 12.5])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.reading import reading

if TYPE_CHECKING:
    from tilestream.slide.slide import Slide

__all__ = [
    "BAND_BYTES",
    "CHUNK_PIXELS",
    "THUMBNAIL_WHOLE_BYTES",
    "box_boundaries",
    "read_level_resized",
    "thumbnail",
    "thumbnail_size",
    "thumbnail_source_size",
]

#: Level pixels read at once (3 MiB of RGB).
CHUNK_PIXELS = 1 << 20
#: Bytes of the int64 sums of the output rows in progress.
BAND_BYTES = 16 * 1024 * 1024
#: What a never-written stored segment reads as.
_BLANK = 255


#: Largest level (as RGBA bytes) :meth:`Slide.get_thumbnail` reads whole, as OpenSlide.
THUMBNAIL_WHOLE_BYTES = 64 * 1024 * 1024


def thumbnail(slide: Slide, size: tuple[int, int]) -> Image.Image:
    """:meth:`Slide.get_thumbnail`: the best level read whole and shrunk, or box-reduced first."""
    w0, h0 = slide.dimensions
    tw, th = (int(v) for v in size)
    if tw < 1 or th < 1:
        raise ValueError(f"thumbnail size must be positive, not {size!r}")
    downsample = max(w0 / tw, h0 / th)
    level = slide.get_best_level_for_downsample(downsample)
    lw, lh = slide.level_dimensions[level]
    if lw * lh * 4 <= min(THUMBNAIL_WHOLE_BYTES, slide.limits.region_bytes):
        tile = slide.read_region((0, 0), level, (lw, lh))
        bg = Image.new("RGB", tile.size, slide.background_color)
        bg.paste(tile, None, tile)
        bg.thumbnail((tw, th), Image.Resampling.LANCZOS)
        return bg
    final = thumbnail_size((lw, lh), (tw, th))
    mid = thumbnail_source_size((lw, lh), final)
    image = Image.fromarray(slide.read_level_resized(level, mid), "RGB")
    return image if image.size == final else image.resize(final, Image.Resampling.LANCZOS)


def box_boundaries(n_in: int, n_out: int) -> NDArray[np.int64]:
    """``n_out + 1`` boundaries splitting ``n_in`` pixels into ``n_out`` boxes (rounded half up).

    >>> box_boundaries(10, 4).tolist()
    [0, 3, 5, 8, 10]
    """
    j = np.arange(n_out + 1, dtype=np.int64)
    return (2 * j * n_in + n_out) // (2 * n_out)


def thumbnail_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size ``Image.thumbnail(box)`` gives an image of ``size`` (Pillow's rounding).

    >>> thumbnail_size((2220, 2967), (256, 256)), thumbnail_size((10, 10), (256, 256))
    ((192, 256), (10, 10))
    """
    w, h = size
    x, y = math.floor(box[0]), math.floor(box[1])
    if x >= w and y >= h:
        return (w, h)
    aspect = w / h

    def round_aspect(number: float, key: Callable[[float], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return (x, y)


def thumbnail_source_size(size: tuple[int, int], final: tuple[int, int]) -> tuple[int, int]:
    """Twice ``final`` (at most ``size``): the box-reduced image a Lanczos thumbnail starts from.

    >>> thumbnail_source_size((100000, 50000), (256, 128))
    (512, 256)
    """
    w, h = size
    scale = min(1.0, 2 * max(final[0] / w, final[1] / h))
    return (min(w, max(1, round(w * scale))), min(h, max(1, round(h * scale))))


class _LevelReader:
    """Chunks of a rectangle of one level: exact pixels, and which chunks hold stored data.

    Coordinates are relative to the rectangle's top-left ``(ox, oy)``.
    """

    def __init__(self, slide: Slide, level: int, rect: tuple[int, int, int, int]) -> None:
        self.slide = slide
        self.level = level
        self.impl: SlideBackend = slide._check_open()
        self.ox, self.oy, self.width, self.height = rect
        self.chunk_w = min(self.width, 4096)
        self.chunk_h = max(1, CHUNK_PIXELS // self.chunk_w)
        self.xs = np.arange(0, self.width, self.chunk_w, dtype=np.int64)
        self.mask = self.impl.segment_mask(level)
        self._direct = type(self.impl).read_level_rgb is not SlideBackend.read_level_rgb

    def present(self, y0: int, y1: int) -> NDArray[np.int64]:
        """Left edges of the chunks of level rows ``[y0, y1)`` that hold stored data."""
        if self.mask is None:
            return self.xs
        present, (sw, sh) = self.mask
        r0 = (self.oy + y0) // sh
        r1 = min(present.shape[0] - 1, (self.oy + y1 - 1) // sh)
        col_any: NDArray[np.bool_] = np.asarray(present[r0 : r1 + 1].any(axis=0))
        cumulative = np.concatenate([[0], np.cumsum(col_any, dtype=np.int64)])
        ends = np.minimum(self.xs + self.chunk_w, self.width)
        first = np.minimum((self.ox + self.xs) // sw, len(col_any))
        last = np.minimum((self.ox + ends - 1) // sw + 1, len(col_any))
        return self.xs[cumulative[last] - cumulative[first] > 0]

    def read(self, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """RGB ``(h, w, 3)`` of pixels ``[x, x + w) x [y, y + h)`` of the rectangle."""
        slide = self.slide
        x, y = x + self.ox, y + self.oy
        if not self._direct:  # OpenSlide: level-0 coordinates
            ds = slide.level_downsamples[self.level]
            location = (round(x * ds), round(y * ds))
            return np.asarray(slide.read_region(location, self.level, (w, h), as_array=True))
        with reading(slide.path, "level {} pixels at {} size {}", self.level, (x, y), (w, h)):
            rgb = self.impl.read_level_rgb(self.level, x, y, w, h)
        return slide._apply_color_array(np.asarray(rgb))


def read_level_resized(
    slide: Slide,
    level: int,
    size: tuple[int, int],
    *,
    rect: tuple[int, int, int, int] | None = None,
) -> NDArray[np.uint8]:
    """The whole of ``level`` (or ``rect``) shrunk to ``size`` by box means, RGB uint8 ``(h, w, 3)``.

    Parameters
    ----------
    slide
        An open :class:`~tilestream.slide.Slide`.
    level
        The pyramid level.
    size
        ``(width, height)`` of the result, at least 1 and at most the size read.
    rect
        ``(x, y, width, height)`` in pixels of ``level``, inside it: read only
        that rectangle (default: the whole level).

    Raises
    ------
    SlideTooLargeError
        When the result is over the slide's region budget.
    CorruptSlideError
        When stored data is damaged.
    """
    level = slide._check_level(level)
    level_w, level_h = slide.level_dimensions[level]
    x, y, lw, lh = (int(v) for v in (rect or (0, 0, level_w, level_h)))
    if not (x >= 0 and y >= 0 and lw >= 1 and lh >= 1 and x + lw <= level_w and y + lh <= level_h):
        raise ValueError(f"rect {rect!r} is not inside level {level} ({level_w}x{level_h})")
    reader = _LevelReader(slide, level, (x, y, lw, lh))
    ow, oh = (int(v) for v in size)
    if not (1 <= ow <= lw and 1 <= oh <= lh):
        raise ValueError(f"size must be between 1x1 and the {lw}x{lh} read, not {size!r}")
    slide.limits.check_region(ow, oh, 3, path=slide.path, what=f"level {level} resized")
    out = np.empty((oh, ow, 3), np.uint8)
    if (ow, oh) == (lw, lh):
        _copy_level(reader, out)
        return out
    bx, by = box_boundaries(lw, ow), box_boundaries(lh, oh)
    band = max(1, BAND_BYTES // (ow * 3 * 8))
    for i0 in range(0, oh, band):
        i1 = min(oh, i0 + band)
        _fill_band(reader, out, bx, by, i0, i1)
    return out


def _box_sums(a: NDArray[Any], starts: NDArray[np.int64], axis: int) -> NDArray[np.uint32]:
    """Sums of ``a`` over the boxes starting at ``starts`` along ``axis`` (``np.add.reduceat``).

    Short boxes (the usual low-resolution ratios) are summed by adding the
    ``o``-th pixel of every box for each offset ``o``: whole rows or columns at
    a time, several times faster than ``reduceat`` on uint8 pixels.

    >>> a = np.arange(12, dtype=np.uint8).reshape(2, 6)
    >>> _box_sums(a, np.array([0, 2, 3]), 1).tolist()
    [[1, 2, 12], [13, 8, 30]]
    """
    sizes = np.diff(np.append(starts, a.shape[axis]))
    longest = int(sizes.max())
    if longest > 16:
        return np.add.reduceat(a, starts, axis=axis, dtype=np.uint32)
    out = np.take(a, starts, axis=axis).astype(np.uint32)
    for offset in range(1, longest):
        boxes = np.flatnonzero(sizes > offset)
        add = np.take(a, starts[boxes] + offset, axis=axis)
        if len(boxes) == len(starts):
            out += add
        elif axis == 0:
            out[boxes] += add
        else:
            out[:, boxes] += add
    return out


def _copy_level(reader: _LevelReader, out: NDArray[np.uint8]) -> None:
    """``out`` = the level itself, chunk by chunk (empty chunks filled, not read)."""
    for y in range(0, reader.height, reader.chunk_h):
        h = min(reader.chunk_h, reader.height - y)
        out[y : y + h] = _BLANK
        for x in reader.present(y, y + h).tolist():
            w = min(reader.chunk_w, reader.width - x)
            out[y : y + h, x : x + w] = reader.read(x, y, w, h)


def _fill_band(
    reader: _LevelReader,
    out: NDArray[np.uint8],
    bx: NDArray[np.int64],
    by: NDArray[np.int64],
    i0: int,
    i1: int,
) -> None:
    """Output rows ``[i0, i1)``: box means of level rows ``[by[i0], by[i1])``."""
    y_start, y_end = int(by[i0]), int(by[i1])
    chunks = [
        (y, min(reader.chunk_h, y_end - y), reader.present(y, min(y + reader.chunk_h, y_end)))
        for y in range(y_start, y_end, reader.chunk_h)
    ]
    if not any(len(xs) for _, _, xs in chunks):
        out[i0:i1] = _BLANK  # no stored data under these rows: nothing to read
        return
    row_counts = np.diff(by[i0 : i1 + 1])
    col_counts = np.diff(bx)
    count = row_counts[:, None] * col_counts[None, :]
    # With chunks skipped, start from all-blank and correct by what the chunks
    # holding data hold; else (a dense level) just add the chunks up.
    sparse = any(len(xs) < len(reader.xs) for _, _, xs in chunks)
    sums = np.zeros((i1 - i0, out.shape[1], 3), np.int64)
    if sparse:
        sums[:] = (_BLANK * count)[..., None]
    for y, h, xs in chunks:
        ia = int(np.searchsorted(by, y, "right")) - 1
        ib = int(np.searchsorted(by, y + h - 1, "right"))
        rows = np.maximum(by[ia:ib], y) - y
        r_counts = np.diff(np.append(rows, h))
        for x in xs.tolist():
            w = min(reader.chunk_w, reader.width - x)
            ja = int(np.searchsorted(bx, x, "right")) - 1
            jb = int(np.searchsorted(bx, x + w - 1, "right"))
            cols = np.maximum(bx[ja:jb], x) - x
            c_counts = np.diff(np.append(cols, w))
            pixels = reader.read(x, y, w, h)
            part = _box_sums(_box_sums(pixels, rows, 0), cols, 1)
            target = sums[ia - i0 : ib - i0, ja:jb]
            target += part
            if sparse:
                target -= (_BLANK * r_counts[:, None] * c_counts[None, :])[..., None]
    # The mean rounded half up, floor((2 * sum + n) / (2 * n)): exact in float64
    # (integers below 2^53, and no quotient within 2^-44 of an integer for
    # boxes under 2^40 pixels), and far faster than int64 division.
    twice = (2 * count).astype(np.float64)[..., None]
    out[i0:i1] = np.floor((2 * sums + count[..., None]) / twice)
