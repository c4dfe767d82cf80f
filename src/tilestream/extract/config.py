"""The extraction configuration: one frozen object, hashed for resume.

Examples
--------
>>> cfg = ExtractConfig(tile_px=299, tile_um=302)
>>> cfg.label
'299px_302um'
>>> ExtractConfig(tile_px=256, tile_um="10x").label
'256px_10x'
>>> cfg.replace(stride_div=2).stride_div
2
>>> len(cfg.hash())
16
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from tilestream.errors import ConfigError
from tilestream.runfolder import run_folder_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "SNAP_TOLERANCE",
    "ConfigKwargs",
    "ConfigOptions",
    "ExtractConfig",
    "GridMode",
    "Subsampling",
    "TileSize",
    "parse_tile_um",
]

_MAG_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[xX]\s*$")
_UM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:um|µm|micron|microns)?\s*$")

RoiMethod = Literal["auto", "inside", "outside", "ignore"]
TissueMethod = Literal["otsu", "none"]
ImgFormat = Literal["jpeg", "png"]
QCMode = Literal["remove", "keep", "off"]
GridMode = Literal["snap", "exact"]
Subsampling = Literal["444", "420"]

SNAP_TOLERANCE = 0.01
"""How far (relative, either way) a tile's exact extent may be from a level's native tiles and snap.

With ``grid="snap"``, a tile whose exact level-0 extent (``tile_um / mpp``) is
within this fraction of ``tile_px`` times a pyramid level's downsample is
read as ``tile_px`` native pixels of that level: no resize, and the slide's
stored JPEG tiles can pass through. The tile then covers up to this fraction
more or less tissue than asked; the microns it does cover are recorded.

Why one percent: it is the size of the disagreement between scanners about
their own pixel size (one model declares slightly different microns per
pixel from one calibration to the next, and models sold as the same
magnification differ by about as much), so a scale difference that small is
below what the declared pixel size can vouch for, while resizing by it costs
a Lanczos pass that blurs every tile and rules out pass-through. It is far
below the factor between pyramid levels, so a tile only ever snaps to the one
level whose scale it nearly has. A size chosen deliberately further off a
level's scale (Slideflow's 299 px / 302 um at exactly a quarter micron per
pixel is just over one percent off) is kept as asked. ``grid="exact"`` never
snaps.
"""


@dataclass(frozen=True)
class TileSize:
    """A tile's physical size: microns, or a magnification such as ``10x``.

    Examples
    --------
    >>> parse_tile_um("10x")
    TileSize(microns=None, magnification=10.0)
    >>> parse_tile_um(302)
    TileSize(microns=302.0, magnification=None)
    >>> parse_tile_um("128um").label
    '128um'
    """

    microns: float | None = None
    magnification: float | None = None

    @property
    def label(self) -> str:
        """The folder-name form: ``302um`` or ``10x``."""
        if self.magnification is not None:
            return f"{_fmt(self.magnification)}x"
        assert self.microns is not None
        return f"{_fmt(self.microns)}um"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_tile_um(value: str | float | int | TileSize) -> TileSize:
    """Parse ``tile_um``: microns as a number (or ``"302um"``), or a magnification ``"10x"``."""
    if isinstance(value, TileSize):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"tile_um must be microns or a magnification like '10x', not {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"tile_um must be positive, not {value!r}")
        return TileSize(microns=float(value))
    if isinstance(value, str):
        m = _MAG_RE.match(value)
        if m:
            mag = float(m.group(1))
            if mag <= 0:
                raise ConfigError(f"magnification must be positive, not {value!r}")
            return TileSize(magnification=mag)
        m = _UM_RE.match(value)
        if m:
            return parse_tile_um(float(m.group(1)))
    raise ConfigError(
        f"tile_um must be microns (e.g. 302) or a magnification (e.g. '10x'), not {value!r}"
    )


class ConfigOptions(TypedDict, total=False):
    """:class:`ExtractConfig`'s fields other than the tile size, as keywords.

    For ``**options: Unpack[...]``: :func:`~tilestream.extract.extract_tiles`
    takes the tile size by name and the rest through this, so a type checker
    sees each option (a misspelt one is an error there, and a
    :class:`~tilestream.errors.ConfigError` at run time).
    """

    stride_div: int
    max_tiles: int | None
    randomize_origin: bool
    use_edge_tiles: bool
    seed: int
    tissue_method: TissueMethod
    min_tissue: float
    grayspace_fraction: float | None
    grayspace_threshold: float
    whitespace_fraction: float | None
    whitespace_threshold: float
    blur_threshold: float | None
    blur_filter: bool
    pen: QCMode
    max_pen_fraction: float
    fold: QCMode
    max_fold_fraction: float
    blur_map: QCMode
    max_blur_fraction: float
    roi_method: RoiMethod
    roi_fraction: float | None
    img_format: ImgFormat
    quality: int
    jpeg_subsampling: Subsampling
    jpeg_passthrough: bool
    mpp_override: float | None
    normalizer: str | None
    normalizer_source: str | None
    resizer: str
    grid: GridMode


class ConfigKwargs(ConfigOptions, total=False):
    """All of :class:`ExtractConfig`'s fields as keywords.

    Taken by :func:`~tilestream.extract.extract_slides` and :meth:`ExtractConfig.replace`.
    """

    tile_px: int
    tile_um: TileSize | str | float


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides which tiles are extracted and how they are encoded.

    Two runs with equal configs produce identical outputs; :meth:`hash` keys
    resume. Run-time options that do not change outputs (number of workers,
    progress reporting) are not part of it.

    Parameters
    ----------
    tile_px
        Output tile width and height in pixels.
    tile_um
        Tile width in microns, or a magnification such as ``"10x"``.
    stride_div
        Stride is the tile's extent divided by this (1 = no overlap).
    max_tiles
        Keep at most this many tiles per slide (a seeded random subset), or all.
    randomize_origin
        Shift the grid origin by a seeded random offset below one stride.
    use_edge_tiles
        Also extract tiles that run over the slide's right or bottom edge
        (padded with the slide's background colour).
    seed
        Seed for ``randomize_origin`` and ``max_tiles``.
    tissue_method
        ``"otsu"`` (Otsu threshold on HSV saturation of a low-resolution image) or ``"none"``.
    min_tissue
        Minimum fraction of a tile covered by tissue.
    grayspace_fraction, grayspace_threshold
        Reject a tile when more than ``grayspace_fraction`` of it has HSV
        saturation below ``grayspace_threshold`` (Slideflow's defaults 0.6, 0.05).
    whitespace_fraction, whitespace_threshold
        Reject a tile when more than ``whitespace_fraction`` of it has mean RGB
        above ``whitespace_threshold`` (off by default, threshold 230).
    blur_threshold
        Laplacian-variance threshold below which a tile is flagged blurry
        (``None``: no blur QC).
    blur_filter
        Reject blurry tiles instead of only flagging them.
    pen
        Marker ink (blue, green, red, black) found on the low-resolution image
        (:mod:`tilestream.extract.qc`): ``"remove"`` takes it out of the
        tissue mask and rejects tiles with more than ``max_pen_fraction`` of
        ink (reason ``pen``); ``"keep"`` only measures it (areas, per-tile
        fractions); ``"off"`` does not look for it.
    max_pen_fraction
        The largest fraction of ink a kept tile may hold (default 0: none).
    fold, max_fold_fraction
        The same for dark folds and thick tissue (very high optical density);
        off by default (``"keep"``: measured, not removed).
    blur_map, max_blur_fraction
        The same for out-of-focus areas of the low-resolution image (reason
        ``blur_map``); ``"keep"`` by default.
    roi_method, roi_fraction
        How ROIs select tiles (``auto``: inside when the slide has an ROI) and
        the fraction of a tile that must be inside (``None``: its centre).
    img_format, quality
        Encoding of stored tiles.
    jpeg_subsampling
        Chroma subsampling of the JPEG tiles tilestream encodes: ``"444"``
        (default: full colour resolution) or ``"420"`` (Slideflow's and most
        encoders' default: tiles about a quarter smaller and decoded faster,
        at a visible cost in colour detail; ``docs/benchmarks.md``, "Tile encoding:
        chroma"). Tiles passed through keep the scanner's sampling.
    jpeg_passthrough
        Where the grid aligns with the slide's stored JPEG tiles and no resize
        is needed, copy the stored JPEG bytes instead of decoding and
        re-encoding (lossless and much faster).
    mpp_override
        Microns per pixel to use for every slide, overriding the file's.
    normalizer
        Stain normalisation applied to each tile before encoding:
        ``"reinhard"``, ``"reinhard_mask"``, ``"macenko"`` or ``"vahadane"``
        (see :class:`tilestream.norm.StainNormalizer`), or ``None``.
    normalizer_source
        The normaliser's target: a reference image file (fitted to) or a
        ``.json`` fit saved by ``StainNormalizer.save``; ``None`` uses the
        shipped default target.
    resizer
        What resizes a read region to ``tile_px`` (Lanczos-3 either way):
        ``"vips"`` (libvips, a quarter of Pillow's CPU time; needs
        ``tilestream[vips]``), ``"pillow"``, or ``"auto"``, which becomes
        ``"vips"`` when pyvips is installed and ``"pillow"`` otherwise when
        the config is made (so the hash records the one used: a run resumed
        where the other one is installed re-extracts, and cluster workers
        need the same extras as the machine that made the config).
    grid
        ``"snap"`` (default): when a tile's exact level-0 extent is within
        :data:`SNAP_TOLERANCE` of ``tile_px`` times a pyramid level's
        downsample, read ``tile_px`` native pixels of that level (no resize;
        stored JPEG tiles pass through where they align) and record the
        microns a tile then covers; this is Slideflow's grid on the usual
        scanner geometries (e.g. 256 px / 128 um at 0.499 um/px: 256 level-0
        px, not 257 resized to 256). ``"exact"``: always the exact extent
        rounded to whole pixels, resized to ``tile_px``.
    """

    tile_px: int
    tile_um: TileSize | str | float = field(default=None)  # type: ignore[assignment]
    stride_div: int = 1
    max_tiles: int | None = None
    randomize_origin: bool = False
    use_edge_tiles: bool = False
    seed: int = 0
    tissue_method: TissueMethod = "otsu"
    min_tissue: float = 0.5
    grayspace_fraction: float | None = 0.6
    grayspace_threshold: float = 0.05
    whitespace_fraction: float | None = None
    whitespace_threshold: float = 230.0
    blur_threshold: float | None = None
    blur_filter: bool = False
    pen: QCMode = "remove"
    max_pen_fraction: float = 0.0
    fold: QCMode = "keep"
    max_fold_fraction: float = 0.5
    blur_map: QCMode = "keep"
    max_blur_fraction: float = 0.5
    roi_method: RoiMethod = "auto"
    roi_fraction: float | None = None
    img_format: ImgFormat = "jpeg"
    quality: int = 95
    jpeg_subsampling: Subsampling = "444"
    jpeg_passthrough: bool = True
    mpp_override: float | None = None
    normalizer: str | None = None
    normalizer_source: str | None = None
    resizer: str = "auto"
    grid: GridMode = "snap"

    def __post_init__(self) -> None:
        if self.tile_um is None:
            raise ConfigError(
                "tile_um is required (microns, e.g. 302, or a magnification, e.g. '10x')"
            )
        object.__setattr__(self, "tile_um", parse_tile_um(self.tile_um))
        _check(isinstance(self.tile_px, int) and self.tile_px > 0, "tile_px must be a positive int")
        _check(isinstance(self.stride_div, int) and self.stride_div >= 1, "stride_div must be >= 1")
        _check(self.max_tiles is None or self.max_tiles > 0, "max_tiles must be positive")
        _check(self.tissue_method in ("otsu", "none"), "tissue_method must be 'otsu' or 'none'")
        _check(0.0 <= self.min_tissue <= 1.0, "min_tissue must be in [0, 1]")
        for name in ("pen", "fold", "blur_map"):
            _check(
                getattr(self, name) in ("remove", "keep", "off"), f"{name} must be remove/keep/off"
            )
        for name in ("grayspace_fraction", "whitespace_fraction", "roi_fraction"):
            value = getattr(self, name)
            _check(value is None or 0.0 <= value <= 1.0, f"{name} must be in [0, 1] or None")
        for name in ("max_pen_fraction", "max_fold_fraction", "max_blur_fraction"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            _check(number and 0.0 <= value <= 1.0, f"{name} must be a number in [0, 1]")
        _check(self.roi_method in ("auto", "inside", "outside", "ignore"), "invalid roi_method")
        _check(self.img_format in ("jpeg", "png"), "img_format must be 'jpeg' or 'png'")
        _check(1 <= self.quality <= 100, "quality must be in [1, 100]")
        _check(self.jpeg_subsampling in ("444", "420"), "jpeg_subsampling must be '444' or '420'")
        _check(self.grid in ("snap", "exact"), "grid must be 'snap' or 'exact'")
        _check(self.mpp_override is None or self.mpp_override > 0, "mpp_override must be > 0")
        from tilestream.norm.presets import METHODS

        _check(self.normalizer in (None, *METHODS), f"normalizer must be one of {METHODS} or None")
        _check(
            self.normalizer_source is None or self.normalizer is not None,
            "normalizer_source needs a normalizer",
        )
        if self.normalizer_source is not None:
            object.__setattr__(self, "normalizer_source", os.fspath(self.normalizer_source))
        from tilestream.extract.resample import resolve_resizer

        object.__setattr__(self, "resizer", resolve_resizer(self.resizer))

    @property
    def size(self) -> TileSize:
        """``tile_um`` parsed."""
        assert isinstance(self.tile_um, TileSize)
        return self.tile_um

    @property
    def label(self) -> str:
        """The output subfolder name, e.g. ``299px_302um`` or ``256px_10x``."""
        return run_folder_name(self.tile_px, self.size.label)

    def replace(self, **changes: Unpack[ConfigKwargs]) -> ExtractConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``tile_um`` in its input form)."""
        data = dataclasses.asdict(self)
        size = self.size
        data["tile_um"] = size.label if size.magnification is not None else size.microns
        return data

    def hash(self) -> str:
        """A short stable hash of everything that decides the outputs.

        Options added after a release are left out while they hold the value
        that reproduces the earlier outputs, so runs made before keep their
        hash and resume. A snapping grid is hashed with its tolerance, so
        that a different :data:`SNAP_TOLERANCE` never passes as the same run.
        """
        data = self.to_dict()
        if data.get("grid") == "snap":
            data["snap_tolerance"] = SNAP_TOLERANCE
        for name, earlier in _HASH_SINCE.items():
            if data.get(name) == earlier:
                del data[name]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExtractConfig:
        """Build from a mapping, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown extraction option(s): {', '.join(unknown)}")
        if "tile_px" not in data:
            raise ConfigError("tile_px is required")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], **overrides: Unpack[ConfigKwargs]
    ) -> ExtractConfig:
        """Load a JSON or TOML config file; ``overrides`` win over the file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config: {exc.strerror or exc}", path=p) from exc
        try:
            data: dict[str, Any]
            if p.suffix.lower() != ".toml":
                data = json.loads(text)
            elif sys.version_info >= (3, 11):
                import tomllib

                data = tomllib.loads(text)
            else:  # pragma: no cover
                raise RuntimeError("TOML config files need Python 3.11 or newer")
        except ValueError as exc:
            raise ConfigError(f"not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}", path=p) from exc
        if not isinstance(data, dict):
            raise ConfigError("a config file must hold a table/object of options", path=p)
        data.pop("hash", None)
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=p) from exc


#: Options added later -> the value that gives the outputs of the versions before them.
_HASH_SINCE: dict[str, Any] = {"resizer": "pillow", "grid": "exact", "jpeg_subsampling": "444"}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
