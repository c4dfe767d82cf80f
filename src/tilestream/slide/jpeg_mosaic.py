"""Lossless JPEG tiles assembled from stored JPEG tiles in the DCT domain.

When an output tile is a mosaic of whole MCUs (minimum coded units, 8 or 16
px) of a level's stored baseline JPEG tiles - a 256 px tile on a 256 px
stride over 240 px Aperio tiles touches up to four of them - it can be made
without decoding a pixel: the stored tiles are entropy-decoded to their
quantised DCT coefficients, the needed MCU blocks copied into the output and
entropy-encoded again (what ``jpegtran -crop``/``-drop`` do, in process). The
output's coefficients are exactly the stored ones, so there is no generation
loss, and the cost is entropy coding only; less where the output keeps the
stored tiles' Huffman tables: a stored tile without restart markers is only
walked (each block's bit offsets and DC value recorded, AC magnitudes
skipped) and the outputs copy its coded bits, with new DC codes where runs of
blocks from different tiles meet: the same bytes as re-encoding.

Pixels: a decoder sees exactly the stored tiles' coefficients. For 4:4:4
tiles (and for any sampling with a decoder's plain, "fast" chroma upsampling)
the mosaic decodes to the stored tiles' pixels, bit for bit. With subsampled
chroma (4:2:2, 4:2:0) and libjpeg's default "fancy" upsampling, which blends
each chroma sample with its neighbours, the pixels next to a seam between two
stored tiles (and at the output tile's own edges) see different neighbours
than the stored tiles did on their own, so those 1 px bands differ slightly;
everything else is identical.

Huffman tables: stored tiles of a TIFF level share their tables
(``JPEGTables``), and by default the output is coded with them in one pass.
The AC symbols of a block do not change when it moves, so those tables hold
all the output needs, but the DC differences change at the seams and may need
a category the stored DC table lacks: then, when the stored tiles' tables
differ, or with ``optimize=True``, the output gets optimal tables (two passes,
like ``jpegtran -optimize``), which hold every symbol and make files some 5 to
10 % smaller at a higher cost. No restart markers are written.

The work is done by the optional compiled extension ``_jpegdct``; where it
is not built, :func:`available` is false and :func:`mosaic` and
:meth:`CoefficientCache.mosaic` return ``None`` so callers decode and
re-encode instead.

Examples
--------
>>> import io
>>> import numpy as np
>>> from PIL import Image
>>> def jpeg(value):
...     buf = io.BytesIO()
...     Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buf, "JPEG")
...     return buf.getvalue()
>>> tiles = {(0, 0): jpeg(0), (1, 0): jpeg(255)}
>>> out = mosaic(tiles, 32, 32, 16, 0, 32, 32) if available() else None
>>> out is None or Image.open(io.BytesIO(out)).size == (32, 32)
True
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

from tilestream.errors import MissingDependencyError, SlideError, TileStreamError

if TYPE_CHECKING:
    from tilestream.slide.slide import Slide

__all__ = [
    "CoefficientCache",
    "Coefficients",
    "JpegMosaicError",
    "UnsupportedJpegError",
    "assemble",
    "available",
    "can_mosaic",
    "decode_coefficients",
    "mosaic",
    "plan_pieces",
]

_native: ModuleType | None
try:
    from tilestream.slide import _jpegdct as _native
except ImportError:  # pragma: no cover - exercised only where it could not be compiled
    _native = None

if TYPE_CHECKING:
    from tilestream.slide._jpegdct import Coefficients
else:
    #: The decoded coefficients of one stored tile (opaque; made by :func:`decode_coefficients`).
    Coefficients = object if _native is None else _native.Coefficients

logger = logging.getLogger(__name__)

#: A piece of an output: ``(source, src_x, src_y, dst_x, dst_y, n_x, n_y)`` in MCUs.
Piece: TypeAlias = "tuple[Coefficients, int, int, int, int, int, int]"

#: The largest stored tile decoded (pixels); bigger ones are refused as unsupported.
MAX_TILE_PIXELS = 1 << 24


class JpegMosaicError(TileStreamError, ValueError):
    """A stored JPEG tile is corrupt (it cannot be entropy-decoded)."""


class UnsupportedJpegError(JpegMosaicError):
    """A valid JPEG the DCT-domain mosaic does not handle (the caller re-encodes).

    Progressive, arithmetic-coded, 12-bit, multi-scan, 2- or 4-component JPEGs.
    """


def available() -> bool:
    """Whether the compiled extension is built (else nothing is assembled here).

    Examples
    --------
    >>> isinstance(available(), bool)
    True
    """
    return _native is not None


def _module() -> ModuleType:
    if _native is None:
        raise MissingDependencyError(
            "the lossless JPEG mosaic needs tilestream's compiled extension "
            "(reinstall tilestream where a C compiler is available)"
        )
    return _native


def _translate(exc: ValueError, where: str, path: str | None) -> JpegMosaicError:
    native = _module()
    message = f"{where}: {exc}" if where else str(exc)
    if isinstance(exc, native.Unsupported):
        return UnsupportedJpegError(message, path=path)
    return JpegMosaicError(message, path=path)


def decode_coefficients(
    data: bytes, *, where: str = "", path: str | None = None, max_pixels: int = MAX_TILE_PIXELS
) -> Coefficients:
    """Entropy-decode a standalone baseline JPEG to its quantised DCT coefficients.

    Parameters
    ----------
    data
        A standalone JPEG (a TIFF tile merged with its ``JPEGTables``, as
        :meth:`tilestream.slide.fastpath.StoredLevel.read_jpeg_tile` returns).
    where, path
        Named in error messages (e.g. ``"level 0 tile (3, 4)"`` and the slide).
    max_pixels
        Larger images are refused (:class:`UnsupportedJpegError`).

    Raises
    ------
    JpegMosaicError
        Corrupt data; :class:`UnsupportedJpegError` for valid JPEG this does
        not handle. :class:`~tilestream.errors.MissingDependencyError` when
        the extension is not built.
    """
    native = _module()
    try:
        coefficients: Coefficients = native.decode(data, max_pixels=max_pixels)
    except native.Error as exc:
        raise _translate(exc, where, path) from None
    return coefficients


def can_mosaic(
    tile_w: int,
    tile_h: int,
    x: int,
    y: int,
    w: int,
    h: int,
    *,
    mcu: tuple[int, int] = (16, 16),
    image_size: tuple[int, int] | None = None,
    sources: Mapping[tuple[int, int], Coefficients] | None = None,
) -> bool:
    """Whether region ``(x, y, w, h)`` of a level can be assembled from whole MCUs.

    Without ``sources``, the geometric half of the check, before any tile is
    read: the extension is built, the stored tiles and the region are aligned
    with MCUs of ``mcu`` px (16 x 16 covers every usual sampling) and, with
    ``image_size``, the region lies inside the level (the stored tiles' pixels
    past the edge are padding). With ``sources`` (the decoded stored tiles,
    ``(col, row) ->`` :class:`Coefficients`) also the other half: every tile
    the region touches is there, baseline, ``tile_w x tile_h`` px, with the
    same sampling, quantisation tables and colour transform, and the region
    is aligned with their MCUs (:func:`plan_pieces`). :func:`mosaic` makes
    the same checks and returns ``None`` where they fail.

    Examples
    --------
    >>> available() <= can_mosaic(240, 240, 256, 512, 256, 256)
    True
    >>> can_mosaic(240, 240, 250, 0, 256, 256)
    False
    """
    if not available() or w < 1 or h < 1 or x < 0 or y < 0:
        return False
    if not _on_mcu_grid(mcu, tile_w, tile_h, x, y, w, h):
        return False
    if image_size is not None and (x + w > image_size[0] or y + h > image_size[1]):
        return False
    return sources is None or plan_pieces(sources, tile_w, tile_h, x, y, w, h) is not None


def _on_mcu_grid(
    mcu: tuple[int, int], tile_w: int, tile_h: int, x: int, y: int, w: int, h: int
) -> bool:
    """Whether the stored tiles and the region ``(x, y, w, h)`` are whole MCUs of ``mcu`` px."""
    mw, mh = mcu
    return not (tile_w % mw or tile_h % mh or x % mw or y % mh or w % mw or h % mh)


def _tiles_of(tile_w: int, tile_h: int, x: int, y: int, w: int, h: int) -> list[tuple[int, int]]:
    return [
        (col, row)
        for row in range(y // tile_h, (y + h - 1) // tile_h + 1)
        for col in range(x // tile_w, (x + w - 1) // tile_w + 1)
    ]


def plan_pieces(
    sources: Mapping[tuple[int, int], Coefficients],
    tile_w: int,
    tile_h: int,
    x: int,
    y: int,
    w: int,
    h: int,
) -> list[Piece] | None:
    """The pieces assembling region ``(x, y, w, h)``, or ``None`` where it cannot.

    ``sources`` maps ``(col, row)`` of the stored tiles the region touches to
    their coefficients. ``None`` when one is missing, is not ``tile_w x
    tile_h`` px, differs from the others (sampling, quantisation tables,
    colour transform), or the region or tiles are not aligned with its MCUs.
    """
    needed = _tiles_of(tile_w, tile_h, x, y, w, h)
    if any(key not in sources for key in needed):
        return None
    first = sources[needed[0]]
    mw, mh = first.mcu_width, first.mcu_height
    if not _on_mcu_grid((mw, mh), tile_w, tile_h, x, y, w, h):
        return None
    pieces: list[Piece] = []
    for col, row in needed:
        src = sources[(col, row)]
        if (src.width, src.height) != (tile_w, tile_h) or src.signature != first.signature:
            return None
        x0, x1 = max(x, col * tile_w), min(x + w, (col + 1) * tile_w)
        y0, y1 = max(y, row * tile_h), min(y + h, (row + 1) * tile_h)
        pieces.append(
            (
                src,
                (x0 - col * tile_w) // mw,
                (y0 - row * tile_h) // mh,
                (x0 - x) // mw,
                (y0 - y) // mh,
                (x1 - x0) // mw,
                (y1 - y0) // mh,
            )
        )
    return pieces


def assemble(
    pieces: list[Piece], w: int, h: int, *, optimize: bool = False, path: str | None = None
) -> bytes | None:
    """A ``w x h`` px JPEG from ``pieces`` (see :func:`plan_pieces`), or ``None``.

    ``None`` when a DC difference across a seam does not fit baseline coding
    (the caller re-encodes); :class:`JpegMosaicError` for pieces that do not
    tile the output exactly. ``optimize``: optimal Huffman tables even where
    the stored tiles' tables would do. Needs the extension (see :func:`available`).
    """
    native = _module()
    try:
        data: bytes = native.assemble(pieces, w, h, optimize=optimize)
    except native.Unsupported:
        return None  # e.g. a DC difference across a seam too large for baseline
    except native.Error as exc:
        raise _translate(exc, "assembling a tile", path) from None
    return data


def mosaic(
    sources: Mapping[tuple[int, int], bytes | Coefficients],
    tile_w: int,
    tile_h: int,
    x: int,
    y: int,
    w: int,
    h: int,
    *,
    image_size: tuple[int, int] | None = None,
    optimize: bool = False,
    path: str | None = None,
) -> bytes | None:
    """Region ``(x, y, w, h)`` of a level as a JPEG assembled from its stored tiles.

    Parameters
    ----------
    sources
        ``(col, row) ->`` each stored tile the region touches, as a standalone
        JPEG or as decoded :class:`Coefficients` (decode once with
        :func:`decode_coefficients` to share a tile between outputs; or use
        a :class:`CoefficientCache`).
    tile_w, tile_h
        The level's stored tile size; tile ``(col, row)`` covers
        ``[col * tile_w, (col + 1) * tile_w)`` horizontally.
    x, y, w, h
        The region in level pixels, multiples of the MCU size.
    image_size
        The level's size: regions reaching past it are refused.
    optimize
        Optimal Huffman tables for every output (smaller, slower).
    path
        The slide, named in errors.

    Returns
    -------
    bytes or None
        A standalone baseline JPEG of ``w x h`` px, or ``None`` when the region
        cannot be assembled losslessly (unaligned, past the level's edge, a
        tile missing, unsupported or unlike the others, or the extension not
        built): decode and re-encode instead.

    Raises
    ------
    JpegMosaicError
        A stored tile is corrupt.
    """
    if not can_mosaic(tile_w, tile_h, x, y, w, h, mcu=(8, 8), image_size=image_size):
        return None
    decoded: dict[tuple[int, int], Coefficients] = {}
    for key in _tiles_of(tile_w, tile_h, x, y, w, h):
        value = sources.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                value = decode_coefficients(bytes(value), where=f"stored tile {key}", path=path)
            except UnsupportedJpegError:
                return None
        decoded[key] = value
    pieces = plan_pieces(decoded, tile_w, tile_h, x, y, w, h)
    return None if pieces is None else assemble(pieces, w, h, optimize=optimize, path=path)


class CoefficientCache:
    """Decoded stored tiles of one level, shared by the output tiles that need them.

    Each stored tile is read and entropy-decoded once while it stays in the
    cache (least recently used first out); output tiles visited row by row
    need two rows of stored tiles, the default size. Thread-safe: threads
    share the decoded tiles, and a tile is decoded by one thread at a time.

    Parameters
    ----------
    read
        ``read(col, row)``: the stored tile as a standalone JPEG, or ``None``
        or ``b""`` where the level has none (a sparse file).
    tile_w, tile_h
        The level's stored tile size.
    image_size
        The level's size; regions past it are refused.
    max_tiles
        How many decoded tiles are kept; by default two rows and two more.
    optimize
        Optimal Huffman tables for every output (see :func:`mosaic`).
    path
        The slide, named in errors.
    """

    def __init__(
        self,
        read: Callable[[int, int], bytes | None],
        tile_w: int,
        tile_h: int,
        *,
        image_size: tuple[int, int] | None = None,
        max_tiles: int | None = None,
        optimize: bool = False,
        path: str | None = None,
    ) -> None:
        self._read = read
        self.tile_w, self.tile_h = tile_w, tile_h
        self.image_size = image_size
        self.path = path
        self.optimize = optimize
        if max_tiles is None:
            cols = -(-image_size[0] // tile_w) if image_size else 64
            max_tiles = 2 * cols + 4
        self.max_tiles = max(4, max_tiles)
        self._tiles: OrderedDict[tuple[int, int], Coefficients | None] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], threading.Event] = {}
        #: Stored tiles entropy-decoded so far (a tile evicted and needed again counts twice).
        self.decoded = 0

    @classmethod
    def for_slide(cls, slide: Slide, level: int, **options: Any) -> CoefficientCache | None:
        """A cache over ``slide``'s stored tiles of ``level``, or ``None`` if it has none.

        ``None`` unless the level stores plain JPEG tiles
        (:meth:`~tilestream.slide.Slide.stored_tile_grid`) and the extension is
        built. A stored tile that cannot be read as a JPEG (a sparse file's
        missing tile, a truncated file) counts as absent: the caller's
        re-encoding path reads it again and reports or renders it as it always
        does. ``options`` go to the constructor (``max_tiles``, ``optimize``).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from tilestream.slide import open_slide
        >>> from tilestream.testing.synthetic import make_synthetic_slide
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.svs"
        >>> _ = make_synthetic_slide(path, width=600, height=500, levels=1, tile_size=240)
        >>> with open_slide(path, backend="tifffile") as slide:
        ...     cache = CoefficientCache.for_slide(slide, 0)
        ...     out = cache.mosaic(256, 0, 256, 256) if cache else None
        >>> out is None or out[:2] == b"\\xff\\xd8"
        True
        """
        grid = slide.stored_tile_grid(level)
        if grid is None or not available():
            return None

        def read(col: int, row: int) -> bytes | None:
            try:
                return slide.read_stored_tile_bytes(level, col, row)
            except SlideError as exc:
                logger.debug("stored tile (%d, %d) of level %d: %s", col, row, level, exc)
                return None

        width, height = slide.level_dimensions[level]
        return cls(
            read, grid[0], grid[1], image_size=(width, height), path=str(slide.path), **options
        )

    def get(self, col: int, row: int) -> Coefficients | None:
        """Tile ``(col, row)``'s coefficients, or ``None`` (absent or unsupported).

        A tile another thread is decoding is waited for, not decoded twice.
        """
        key = (col, row)
        while True:
            with self._lock:
                if key in self._tiles:
                    self._tiles.move_to_end(key)
                    return self._tiles[key]
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = threading.Event()
                    break
            pending.wait()  # then look again (a failed decode is retried here)
        try:
            value = self._decode(key)
            with self._lock:
                self.decoded += 1
                self._tiles[key] = value
                while len(self._tiles) > self.max_tiles:
                    self._tiles.popitem(last=False)
        finally:
            with self._lock:
                self._pending.pop(key).set()
        return value

    def _decode(self, key: tuple[int, int]) -> Coefficients | None:
        data = self._read(*key)
        if not data:
            return None
        try:
            return decode_coefficients(data, where=f"stored tile {key}", path=self.path)
        except UnsupportedJpegError:
            return None

    def mosaic(self, x: int, y: int, w: int, h: int) -> bytes | None:
        """Region ``(x, y, w, h)`` as a losslessly assembled JPEG, or ``None``.

        ``None`` when it cannot be assembled (see :func:`mosaic`): decode and
        re-encode it instead. Raises :class:`JpegMosaicError` for a corrupt tile.
        """
        tw, th = self.tile_w, self.tile_h
        if not can_mosaic(tw, th, x, y, w, h, mcu=(8, 8), image_size=self.image_size):
            return None
        sources: dict[tuple[int, int], Coefficients] = {}
        for col, row in _tiles_of(tw, th, x, y, w, h):
            value = self.get(col, row)
            if value is None:
                return None
            sources[(col, row)] = value
        pieces = plan_pieces(sources, tw, th, x, y, w, h)
        return (
            None
            if pieces is None
            else assemble(pieces, w, h, optimize=self.optimize, path=self.path)
        )
