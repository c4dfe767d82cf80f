"""The options of the tile datasets, declared and checked once: :class:`TileOptions`.

:class:`tilestream.torch.TileDataset`, :class:`tilestream.torch.IndexedTileDataset`,
:func:`tilestream.tf.tile_dataset` and the tile planner
(:func:`tilestream.loaders.tiles.plan_tiles`) take the same options. Each
takes them as keyword arguments (the convenient front door) or as one frozen
:class:`TileOptions` object through ``options=`` (to build once, share, and
derive with :func:`dataclasses.replace`); both ways give the same dataset.
Giving an option both ways with different values is a
:class:`~tilestream.errors.ConfigError`; a keyword fills an option the object
leaves at its default.

The keyword arguments are typed (:class:`TileKwargs`, :class:`IndexedTileKwargs`,
:class:`PlanKwargs`, for ``**kwargs: Unpack[...]``), so a type checker sees
every option where a caller passes them through.

Examples
--------
>>> opts = TileOptions(labels={"a": 0}, augment="xy", seed=3)
>>> resolve_options(opts, {"seed": 3}, where="f") is opts  # the same value: no conflict
True
>>> resolve_options(opts, {"shuffle": False}, where="f").shuffle  # fills a default
False
>>> resolve_options(opts, {"seed": 4}, where="f")
Traceback (most recent call last):
...
tilestream.errors.ConfigError: f: seed=4 conflicts with options.seed=3 (give each option one way)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np

from tilestream.errors import ConfigError
from tilestream.loaders.augment import parse_augment
from tilestream.loaders.labels import Balance
from tilestream.loaders.sampling import WeightSpec

__all__ = [
    "ClipSpec",
    "IndexedTileKwargs",
    "LabelSpec",
    "NormalizerSpec",
    "OnError",
    "PlanKwargs",
    "TileKwargs",
    "TileOptions",
    "check_on_error",
    "check_seed",
    "reject_inapplicable",
    "resolve_options",
]

#: Records to keep per file: one cap for all, or ``{file: cap}`` (files not named are not clipped).
ClipSpec = int | Mapping[str | os.PathLike[str], int] | None
#: What a corrupt record or unreadable file does: raise, or be skipped (logged, counted).
OnError = Literal["raise", "skip"]
#: ``{slide name: label}``, or an annotations CSV (with ``label_column``), or None.
LabelSpec = Mapping[str, Any] | str | os.PathLike[str] | None
#: A stain normaliser method name, a normaliser object, or a callable on each uint8 HWC tile.
NormalizerSpec = Callable[[np.ndarray], np.ndarray] | str | None


def check_seed(seed: Any) -> int:
    """``seed`` as an int, or a :class:`ConfigError` when it is not a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_on_error(on_error: Any) -> OnError:
    """``on_error`` checked: ``"raise"`` or ``"skip"``."""
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    checked: OnError = on_error
    return checked


def _check_positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TileOptions:
    """Every option of a tile dataset, checked on creation.

    Attributes
    ----------
    labels
        ``{slide name: label}`` (the records' ``slide`` feature), or an
        annotations CSV (with ``label_column``). Without labels, the label is 0.
    label_column
        The CSV column of labels; text labels become category indices.
    weights
        Per-file sampling weights (list or ``{file: weight}``), normalised.
    balance
        ``"tile"``, ``"slide"`` or ``"category"``: weights as Slideflow balances
        (not with ``weights``).
    clip
        Records per file: an int or ``{file: cap}``.
    indices
        Per-file offsets or index files (default: beside each file, or a scan).
    on_error
        ``"raise"`` a :class:`~tilestream.errors.CorruptRecordError` naming file,
        record and offset (default), or ``"skip"``: a corrupt record is passed
        over (logged and counted), a file that cannot be read (cut short,
        corrupt framing, no readable record, an index that does not fit it) is
        left out at construction (logged, recorded in ``skipped_files``).
    verify
        Check record CRCs.
    infinite
        Stream forever (files restart reshuffled when they run out). With
        ``epoch_length`` an "epoch" ends after that many records per rank.
    epoch_length
        Records each rank yields per epoch in infinite mode (default: all
        records divided by the world size), the same on every rank so ranks
        stay in step.
    shuffle
        Shuffle records within files and interleave files at random (per epoch).
    seed
        Seed of every random choice: the same seed and epoch give the same stream.
    augment
        Augmentation letters ``x y r j b n`` or True (``"xyrjb"``); ``n``
        (stain augmentation) needs a stain ``normalizer``.
    standardize
        Standardised float32 images instead of uint8.
    normalizer
        A stain normaliser method name (``"reinhard"``, ``"macenko"``, ...), a
        :class:`tilestream.norm.StainNormalizer`, or a callable on each uint8
        HWC image (after augmentation).
    img_size
        Expected tile size in pixels (a mismatch is an error).
    incl_slidenames, incl_loc
        Also yield the slide name, and ``loc_x, loc_y``.
    as_dict
        Yield ``{"image", "label", "slide", "loc_x", "loc_y"}`` dicts instead of tuples.
    batch_size
        Yield whole batches (each dataset says how it builds them).
    drop_last
        With ``batch_size``: drop the short last batch.
    storage_options
        Options of the store of TFRecords given by URL (credentials,
        ``endpoint_url``...); never shown in a ``repr`` or compared.
    block_records
        TFRecords read by URL: records of one ranged request (a block of
        consecutive records; also the unit of shuffling, see
        :mod:`tilestream.loaders.remote`).
    read_ahead
        TFRecords read by URL: bytes of blocks fetched ahead of the consumer.
    shuffle_buffer
        TFRecords read by URL, with ``shuffle``: records mixed in the shuffle
        buffer after reading (0: none).

    Raises
    ------
    ConfigError
        A bad value (a negative seed, an unknown ``on_error``, ``epoch_length``
        without ``infinite``, ``weights`` with ``balance``, unknown
        augmentation letters, ...).

    Examples
    --------
    >>> import dataclasses
    >>> train = TileOptions(labels={"a": 0, "b": 1}, augment=True, infinite=True)
    >>> val = dataclasses.replace(train, augment=False, infinite=False, shuffle=False)
    >>> val.labels == train.labels, val.augment
    (True, False)
    """

    labels: LabelSpec = None
    label_column: str | None = None
    weights: WeightSpec | None = None
    balance: Balance | None = None
    clip: ClipSpec = None
    indices: Sequence[Any] | None = None
    on_error: OnError = "raise"
    verify: bool = True
    infinite: bool = False
    epoch_length: int | None = None
    shuffle: bool = True
    seed: int = 0
    augment: bool | str = False
    standardize: bool = False
    normalizer: NormalizerSpec = None
    img_size: int | None = None
    incl_slidenames: bool = False
    incl_loc: bool = False
    as_dict: bool = False
    batch_size: int | None = None
    drop_last: bool = False
    storage_options: Mapping[str, Any] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    block_records: int = 64
    read_ahead: int = 64 << 20
    shuffle_buffer: int = 1024

    def __post_init__(self) -> None:
        _check_positive("batch_size", self.batch_size)
        _check_positive("block_records", self.block_records)
        _check_positive("read_ahead", self.read_ahead)
        if isinstance(self.shuffle_buffer, bool) or self.shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer!r}")
        check_seed(self.seed)
        check_on_error(self.on_error)
        if self.epoch_length is not None and not self.infinite:
            raise ConfigError("epoch_length applies to infinite=True only")
        _check_positive("epoch_length", self.epoch_length)
        if self.weights is not None and self.balance is not None:
            raise ConfigError("give weights= or balance=, not both")
        parse_augment(self.augment)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TileOptions)}


class _SelectKwargs(TypedDict, total=False):
    storage_options: Mapping[str, Any] | None
    labels: LabelSpec
    label_column: str | None
    clip: ClipSpec
    indices: Sequence[Any] | None


class _SampleKwargs(TypedDict, total=False):
    weights: WeightSpec | None
    balance: Balance | None
    on_error: OnError


class _ImageKwargs(TypedDict, total=False):
    verify: bool
    seed: int
    augment: bool | str
    standardize: bool
    normalizer: NormalizerSpec
    img_size: int | None
    incl_slidenames: bool
    incl_loc: bool
    as_dict: bool


class _StreamKwargs(TypedDict, total=False):
    block_records: int
    read_ahead: int
    shuffle_buffer: int
    infinite: bool
    epoch_length: int | None
    shuffle: bool
    batch_size: int | None
    drop_last: bool


class PlanKwargs(_SelectKwargs, _SampleKwargs, total=False):
    """The options of the tile planner, as keyword arguments (see :class:`TileOptions`)."""


class IndexedTileKwargs(_SelectKwargs, _ImageKwargs, total=False):
    """The options of a map-style dataset, as keyword arguments (see :class:`TileOptions`)."""


class TileKwargs(PlanKwargs, _ImageKwargs, _StreamKwargs, total=False):
    """Every option of :class:`TileOptions`, as keyword arguments."""


def _keys(kind: Any) -> frozenset[str]:
    return frozenset(kind.__required_keys__ | kind.__optional_keys__)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays and the like: equal only when identical
        return False


def resolve_options(
    options: TileOptions | None,
    given: Mapping[str, Any],
    *,
    where: str,
    accepts: Any = TileKwargs,
) -> TileOptions:
    """The options of a call: the ``options=`` object, the keyword arguments, or both.

    A keyword fills an option the object leaves at its default, or repeats
    its value; any other keyword is a conflict.

    Raises
    ------
    TypeError
        A keyword ``where`` does not take (``accepts`` lists those it does).
    ConfigError
        ``options`` that is not a :class:`TileOptions`, a conflict (naming
        each option), or a bad value.
    """
    allowed = _keys(accepts)
    for name in given:
        if name not in allowed:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    if options is None:
        return TileOptions(**given)
    if not isinstance(options, TileOptions):
        raise ConfigError(f"{where}: options must be a TileOptions, got {type(options).__name__}")
    changes: dict[str, Any] = {}
    conflicts: list[str] = []
    for name, value in given.items():
        current = getattr(options, name)
        if _same(current, value):
            continue
        if _same(current, _DEFAULTS[name]):
            changes[name] = value
        else:
            conflicts.append(f"{name}={value!r} conflicts with options.{name}={current!r}")
    if conflicts:
        raise ConfigError(f"{where}: {'; '.join(conflicts)} (give each option one way)")
    return dataclasses.replace(options, **changes) if changes else options


def reject_inapplicable(options: TileOptions, accepts: Any, *, where: str) -> None:
    """A :class:`ConfigError` naming the options set that ``where`` has no use for."""
    allowed = _keys(accepts)
    unused = [
        name
        for name, default in _DEFAULTS.items()
        if name not in allowed and not _same(getattr(options, name), default)
    ]
    if unused:
        raise ConfigError(
            f"{where} does not take {', '.join(unused)} (leave them at their defaults)"
        )
