"""The :class:`Dataset`: slides, their TFRecords and their annotations, filtered and clipped.

A dataset holds paths and plain values only (no open files), so it pickles
into worker processes. Problems with the inputs are collected, not raised:
a TFRecord folder that does not exist, annotated slides without a TFRecord,
TFRecords without an annotation row, unreadable or empty TFRecords all show
in :meth:`Dataset.summary` and through their own methods.

In an extraction run folder, the TFRecords of stale slides (a slide whose
last extraction failed or did not finish, or that was extracted under another
config than the folder's ``config.json``; see :mod:`tilestream.runfolder`)
are left out of everything the dataset reads and loads, each logged at
WARNING, and listed by :meth:`Dataset.stale_tfrecords` and in the summary.

Reading writes nothing: record counts come from ``manifest.json`` where it
is fresh and are counted in memory otherwise (``tilestream manifest`` saves
them); a read-only folder works.

:meth:`Dataset.summary` returns a :class:`DatasetSummary` and prints nothing
(the library never prints); pass ``print_fn=print`` for a plain-text
rendering, or use ``tilestream dataset summary`` for a rich table.

Examples
--------
>>> import tempfile, pathlib
>>> from tilestream.tfrecord import TFRecordWriter, serialized_record
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for name, n in [("s1", 3), ("s2", 5), ("extra", 1)]:
...     with TFRecordWriter(d / f"{name}.tfrecords") as w:
...         for i in range(n):
...             w.write(serialized_record(name, b"img", i * 256, 0), location=(i * 256, 0))
>>> ann = [{"slide": "s1", "patient": "p1", "label": "tumor"},
...        {"slide": "s2", "patient": "p2", "label": "normal"},
...        {"slide": "s3", "patient": "p3", "label": "tumor"}]
>>> ds = Dataset(tfrecords=d, annotations=ann)
>>> ds.slides(), ds.num_tiles
(['s1', 's2', 's3'], 8)
>>> ds.slides_without_tfrecords(), ds.tfrecords_without_annotations()
(['s3'], ['extra'])
>>> ds.labels("label")
({'s1': 1, 's2': 0, 's3': 1}, ['normal', 'tumor'])
>>> ds.clip(4).num_tiles
7
>>> ds.filter(filters={"label": "tumor"}).slides()
['s1', 's3']
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tilestream.dataset.annotations import Annotations, AnnotationSource, load_annotations
from tilestream.dataset.balance import BalanceStrategy, tfrecord_weights
from tilestream.dataset.crossfolds import CrossfoldResult, generate_crossfolds
from tilestream.dataset.extraction import extract_dataset_slides
from tilestream.dataset.kwargs import CrossfoldKwargs, ExtractTilesKwargs
from tilestream.dataset.scan import TFRecordScan, scan_tfrecords, split_sources
from tilestream.dataset.summary import DatasetSummary, slides_with_rois
from tilestream.errors import AnnotationError, ConfigError
from tilestream.runfolder import run_folder_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tilestream.extract.run import ExtractionRun
    from tilestream.loaders.options import TileKwargs, TileOptions
    from tilestream.tf.dataset import TFTileKwargs
    from tilestream.torch.dataset import TileDataset

__all__ = ["BalanceStrategy", "CrossfoldKwargs", "Dataset", "DatasetSummary", "ExtractTilesKwargs"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _as_paths(value: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def _as_values(value: Any) -> list[str]:
    if isinstance(value, (str, int, float)):
        return [str(value)]
    return [str(v) for v in value]


class Dataset:
    """Per-slide TFRecords with annotations: filter, clip, label, balance, and load them.

    Parameters
    ----------
    slides
        Folder(s) of slides (needed by :meth:`extract_tiles` only).
    tfrecords
        Folder(s) of ``<slide>.tfrecords`` (searched recursively) or TFRecord
        files, or URLs (``s3://bucket/prefix/``, objects, ``gs://``, ``http(s)://``).
        With ``tile_px`` and ``tile_um``, a folder (prefix) holding the
        extraction sub-folder ``<tile_px>px_<tile_um>`` is read from there.
    annotations
        A CSV file or a list of dicts with a ``slide`` column (and usually
        ``patient``, label columns and ``site``); see
        :func:`~tilestream.dataset.annotations.load_annotations`.
    tile_px, tile_um
        The tile size (``tile_um`` in microns or as ``"10x"``).
    filters
        ``{column: value or list of values}``: keep slides whose annotation matches.
    min_tiles
        Leave out slides with fewer tiles.
    clip
        At most this many tiles per TFRecord (or ``{slide: n}``).
    rois
        Folder(s) of ROI files ``<slide>.geojson|.json|.csv`` (counted in the summary).
    encoding
        The annotations CSV's encoding.
    storage_options
        Options of the store of TFRecord URLs (passed to the loaders; never shown).

    Raises
    ------
    AnnotationError
        Annotations that cannot be read (see ``load_annotations``), or a filter on a missing column.
    """

    def __init__(
        self,
        *,
        slides: PathLike | Iterable[PathLike] | None = None,
        tfrecords: PathLike | Iterable[PathLike] | None = None,
        annotations: AnnotationSource | Annotations | None = None,
        tile_px: int | None = None,
        tile_um: str | float | None = None,
        filters: Mapping[str, Any] | None = None,
        min_tiles: int = 0,
        clip: int | Mapping[str, int] | None = None,
        rois: PathLike | Iterable[PathLike] | None = None,
        encoding: str = "utf-8",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.slide_sources = _as_paths(slides)
        self.tfrecord_sources, self.tfrecord_urls = split_sources(tfrecords)
        self._storage_options = storage_options
        self.roi_sources = _as_paths(rois)
        self.tile_px = tile_px
        self.tile_um = None
        if tile_um is not None:
            from tilestream.extract.config import parse_tile_um

            self.tile_um = parse_tile_um(tile_um).label
        self.annotations = (
            load_annotations(annotations, encoding=encoding) if annotations is not None else None
        )
        self._filters: dict[str, list[str]] = {}
        self._filter_blank: list[str] = []
        self.min_tiles = int(min_tiles)
        self._clip: int | dict[str, int] | None = None
        self._weights: dict[str, float] | None = None
        self._scan_cache: TFRecordScan | None = None
        if filters:
            self._add_filters(filters, ())
        if clip is not None:
            self._clip = self._check_clip(clip)

    # ------------------------------------------------------------------ internals

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_scan_cache"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"Dataset(tfrecords={[os.fspath(p) for p in self.tfrecord_sources] + self.tfrecord_urls}, "
            f"tile_px={self.tile_px}, tile_um={self.tile_um!r}, slides={len(self.slides())})"
        )

    def _copy(self) -> Dataset:
        new = copy.copy(self)
        new._filters = {k: list(v) for k, v in self._filters.items()}
        new._filter_blank = list(self._filter_blank)
        new._weights = dict(self._weights) if self._weights is not None else None
        return new

    @staticmethod
    def _check_clip(clip: int | Mapping[str, int]) -> int | dict[str, int]:
        if isinstance(clip, Mapping):
            return {str(k): int(v) for k, v in clip.items()}
        if isinstance(clip, bool) or int(clip) < 0:
            raise ConfigError(f"clip must be a non-negative integer, got {clip!r}")
        return int(clip)

    def _add_filters(self, filters: Mapping[str, Any], blank: Sequence[str]) -> None:
        columns = list(filters) + list(blank)
        if columns and self.annotations is None:
            raise ConfigError("filters need annotations")
        if self.annotations is not None:
            self.annotations.require(*columns)
        for k, v in filters.items():
            self._filters[k] = _as_values(v)
        for c in blank:
            if c not in self._filter_blank:
                self._filter_blank.append(c)

    def _label_dir(self) -> str | None:
        if self.tile_px is None or self.tile_um is None:
            return None
        return run_folder_name(self.tile_px, self.tile_um)

    def _scan(self) -> TFRecordScan:
        if self._scan_cache is None:
            src, urls, opts = self.tfrecord_sources, self.tfrecord_urls, self._storage_options
            self._scan_cache = scan_tfrecords(src, self._label_dir(), urls, opts)
        return self._scan_cache

    def _annotated_slides(self) -> list[str]:
        assert self.annotations is not None
        out = []
        for row in self.annotations.rows:
            if any(row[c] not in vals for c, vals in self._filters.items()):
                continue
            if any(not row[c] for c in self._filter_blank):
                continue
            out.append(row[self.annotations.slide_column or "slide"])
        return out

    def _clip_for(self, slide: str) -> int | None:
        if self._clip is None:
            return None
        if isinstance(self._clip, dict):
            return self._clip.get(slide)
        return self._clip

    # ------------------------------------------------------------------ selection

    def slides(self) -> list[str]:
        """Slide names after filters and ``min_tiles``.

        With annotations: the annotated slides that pass the filters (a slide
        without a TFRecord, or whose TFRecord is stale, stays listed unless
        ``min_tiles`` > 0). Without: the slides of the readable, current
        TFRecords found.
        """
        scan = self._scan()
        if self.annotations is not None:
            names = self._annotated_slides()
        else:
            names = sorted(n for n, p in scan.files.items() if os.fspath(p) not in scan.unreadable)
        if self.min_tiles > 0:
            names = [n for n in names if scan.counts.get(n, 0) >= self.min_tiles]
        return names

    def tfrecords(self) -> list[str]:
        """Paths of the readable TFRecords of :meth:`slides` (never a stale one, see :meth:`stale_tfrecords`)."""
        scan = self._scan()
        out = []
        for name in self.slides():
            path = scan.files.get(name)
            if path is not None and os.fspath(path) not in scan.unreadable:
                out.append(os.fspath(path))
        return out

    def manifest(self) -> dict[str, dict[str, int]]:
        """``{tfrecord: {"total": n, "clipped": m}}`` for :meth:`tfrecords`."""
        scan = self._scan()
        by_path = {os.fspath(p): n for n, p in scan.files.items()}
        out: dict[str, dict[str, int]] = {}
        for path in self.tfrecords():
            name = by_path[path]
            total = scan.counts[name]
            cap = self._clip_for(name)
            out[path] = {"total": total, "clipped": total if cap is None else min(total, cap)}
        return out

    @property
    def num_tiles(self) -> int:
        """Tiles in :meth:`tfrecords`, after clipping."""
        return sum(v["clipped"] for v in self.manifest().values())

    def patients(self) -> dict[str, str]:
        """``{slide: patient}`` (each slide its own patient without a ``patient`` column)."""
        if self.annotations is None or "patient" not in self.annotations.columns:
            return {s: s for s in self.slides()}
        col = self.annotations.column("patient")
        return {s: col[s] or s for s in self.slides()}

    def labels(
        self,
        column: str,
        format: Literal["index", "name"] = "index",
        *,
        use_float: bool = False,
    ) -> tuple[dict[str, Any], list[str] | None]:
        """Labels of :meth:`slides` from one annotation column.

        Returns
        -------
        (dict, list or None)
            ``{slide: label}`` and the sorted category names. Labels are
            indices into the names (``format="index"``), the names themselves
            (``"name"``), or floats (``use_float=True``, names ``None``).

        Raises
        ------
        AnnotationError
            No annotations or no such column, an empty label, a value that is not a number.
        """
        if self.annotations is None:
            raise AnnotationError("labels need annotations")
        if format not in ("index", "name"):
            raise ConfigError(f"format must be 'index' or 'name', not {format!r}")
        ann = self.annotations
        ann.require(column)
        rows = ann.by_slide()
        line = {s: i for i, s in enumerate(ann.slides())}
        raw: dict[str, str] = {}
        for s in self.slides():
            value = rows[s][column]
            if not value:
                raise AnnotationError(f"{ann.where(line[s])}: slide {s!r} has an empty {column!r}")
            raw[s] = value
        if use_float:
            out: dict[str, Any] = {}
            for s, v in raw.items():
                try:
                    out[s] = float(v)
                except ValueError:
                    raise AnnotationError(
                        f"{ann.where(line[s])}: {column!r} value {v!r} is not a number"
                    ) from None
            return out, None
        names = sorted(set(raw.values()))
        if format == "name":
            return dict(raw), names
        lookup = {n: i for i, n in enumerate(names)}
        return {s: lookup[v] for s, v in raw.items()}, names

    # ------------------------------------------------------------------ problems

    def slides_without_tfrecords(self) -> list[str]:
        """Annotated slides (after filters) with no TFRecord found."""
        if self.annotations is None:
            return []
        files = self._scan().files
        return [s for s in self._annotated_slides() if s not in files]

    def tfrecords_without_annotations(self) -> list[str]:
        """Slide names of TFRecords found that have no annotation row."""
        if self.annotations is None:
            return []
        annotated = set(self.annotations.slides())
        return sorted(n for n in self._scan().files if n not in annotated)

    def unreadable_tfrecords(self) -> dict[str, str]:
        """``{path: reason}`` of TFRecords that could not be read or are empty (never deleted)."""
        return dict(self._scan().unreadable)

    def missing_sources(self) -> list[str]:
        """TFRecord sources given that do not exist."""
        return list(self._scan().missing)

    def stale_tfrecords(self) -> dict[str, str]:
        """``{path: reason}`` of TFRecords of stale slides in run folders, left out (never deleted).

        A slide is stale when its last extraction in the run folder failed or
        did not finish, was made under another config than the folder's, or
        its outputs changed since (see :mod:`tilestream.runfolder`).
        """
        return dict(self._scan().stale)

    # ------------------------------------------------------------------ derived datasets

    def filter(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        filter_blank: Sequence[str] = (),
        min_tiles: int | None = None,
    ) -> Dataset:
        """A new dataset with more filters (``{column: values}``, non-blank columns, ``min_tiles``)."""
        new = self._copy()
        new._add_filters(filters or {}, filter_blank)
        if min_tiles is not None:
            new.min_tiles = int(min_tiles)
        return new

    def clip(self, n: int | Mapping[str, int] | None) -> Dataset:
        """A new dataset reading at most ``n`` tiles per TFRecord (``None`` removes the clip)."""
        new = self._copy()
        new._clip = None if n is None else self._check_clip(n)
        return new

    def balance(
        self, headers: str | None = None, strategy: BalanceStrategy = "category"
    ) -> Dataset:
        """A new dataset whose TFRecords are sampled with balancing weights.

        ``"tile"``: each tile equally likely; ``"slide"``: each slide;
        ``"patient"``: each patient (shared among its slides); ``"category"``:
        each category of column ``headers`` equally, tiles equally within it.
        The weights (:attr:`prob_weights`) go to :meth:`torch` and :meth:`tensorflow`.
        """
        manifest = self.manifest()
        slide_of = {os.fspath(p): n for n, p in self._scan().files.items()}
        tiles = {p: float(v["clipped"]) for p, v in manifest.items()}
        patients = self.patients() if strategy == "patient" else None
        categories = None
        if strategy == "category":
            if headers is None:
                raise ConfigError("balance(strategy='category') needs headers= (a label column)")
            categories = self.labels(headers, format="name")[0]
        new = self._copy()
        new._weights = tfrecord_weights(
            strategy, tiles, slide_of, patients=patients, categories=categories
        )
        return new

    def crossfolds(
        self, category: str, k: int = 3, **kwargs: Unpack[CrossfoldKwargs]
    ) -> CrossfoldResult:
        """Cross-validation folds of :meth:`slides` (see :func:`~tilestream.dataset.generate_crossfolds`).

        Site-preserved when the annotations have a ``site`` column (or
        ``site_column=``), else stratified by patient.
        """
        if self.annotations is None:
            raise AnnotationError("cross-folds need annotations")
        ann = self.annotations
        keep = set(self.slides())
        idx = [i for i, r in enumerate(ann.rows) if r[ann.slide_column or "slide"] in keep]
        subset = Annotations(
            [ann.rows[i] for i in idx],
            list(ann.columns),
            ann.path,
            [ann.lines[i] for i in idx],
            ann.slide_column,
        )
        return generate_crossfolds(subset, category, k, **kwargs)

    @property
    def prob_weights(self) -> dict[str, float] | None:
        """``{tfrecord: weight}`` set by :meth:`balance` (``None`` when unbalanced)."""
        return dict(self._weights) if self._weights is not None else None

    # ------------------------------------------------------------------ actions

    def rebuild_index(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Rewrite the index of every TFRecord of the dataset; returns how many."""
        from tilestream.tfrecord import create_index

        paths = self.tfrecords()
        for i, p in enumerate(paths):
            create_index(p)
            if progress is not None:
                progress(i + 1, len(paths))
        self._scan_cache = None
        return len(paths)

    def refresh(self) -> None:
        """Forget cached record counts (after TFRecords changed on disk)."""
        self._scan_cache = None

    def extract_tiles(self, **kwargs: Unpack[ExtractTilesKwargs]) -> ExtractionRun:
        """Extract the dataset's slides with its tile size into its (first) TFRecord folder.

        Slides to TFRecords, as Slideflow's ``Dataset.extract_tiles``: delegates
        to :func:`tilestream.extract.extract_slides` (keyword arguments go
        there; extraction options other than the tile size in ``config=``);
        TFRecords land in ``<tfrecords>/<tile_px>px_<tile_um>/``. With
        annotations only the slides of :meth:`slides` are extracted (slides are
        matched by file name). A TFRecord's tiles to image files is
        :func:`tilestream.dataset.io.tfrecord_to_images`.
        """
        if self.tile_px is None or self.tile_um is None:
            raise ConfigError("extract_tiles needs a dataset with tile_px and tile_um")
        wanted = None
        if self.annotations is not None:
            wanted = set(self.slides() if self.min_tiles == 0 else self._annotated_slides())
        run = extract_dataset_slides(
            self.slide_sources, self.tfrecord_sources, self.tile_px, self.tile_um, wanted, **kwargs
        )
        self._scan_cache = None
        return run

    def _loader_args(
        self,
        label: str | None,
        kwargs: Mapping[str, Any],
        options: TileOptions | None = None,
    ) -> dict[str, Any]:
        """The keywords of a loader: labels, clip and weights from the dataset, unless given."""

        def given(name: str) -> bool:
            return name in kwargs or getattr(options, name, None) is not None

        args: dict[str, Any] = {}
        if self.tfrecord_urls and not given("storage_options"):
            args["storage_options"] = self._storage_options
        if label is not None and not given("labels"):
            args["labels"] = self.labels(label)[0]
        if self._clip is not None and not given("clip"):
            args["clip"] = {p: v["clipped"] for p, v in self.manifest().items()}
        if self._weights is not None and not given("weights") and not given("balance"):
            args["weights"] = dict(self._weights)
        args.update(kwargs)
        return args

    def torch(
        self,
        label: str | None = None,
        *,
        options: TileOptions | None = None,
        **kwargs: Unpack[TileKwargs],
    ) -> TileDataset:
        """A :class:`tilestream.torch.TileDataset` over :meth:`tfrecords`.

        ``label`` names the annotation column of labels; clipping and balance
        weights carry over unless given; ``options`` and other keyword
        arguments go to ``TileDataset``.
        """
        from tilestream._util.optional import require

        require("torch", extra="torch", purpose="Dataset.torch()")
        from tilestream.torch import TileDataset

        args = self._loader_args(label, kwargs, options)
        return TileDataset(self.tfrecords(), options=options, **args)

    def tensorflow(
        self,
        label: str | None = None,
        *,
        options: TileOptions | None = None,
        **kwargs: Unpack[TFTileKwargs],
    ) -> Any:
        """A ``tf.data.Dataset`` from :func:`tilestream.tf.tile_dataset` (options as :meth:`torch`)."""
        from tilestream._util.optional import require

        require("tensorflow", extra="tf", purpose="Dataset.tensorflow()")
        from tilestream.tf import tile_dataset

        args = self._loader_args(label, kwargs, options)
        return tile_dataset(self.tfrecords(), options=options, **args)

    # ------------------------------------------------------------------ summary

    def summary(self, print_fn: Callable[[str], None] | None = None) -> DatasetSummary:
        """Configuration, sizes, sources and problems of the dataset.

        Nothing is printed unless ``print_fn`` is given (it receives one line at a time).
        """
        scan = self._scan()
        slides = self.slides()
        manifest = self.manifest()
        below: list[str] = []
        if self.min_tiles > 0:
            base = self._annotated_slides() if self.annotations is not None else list(scan.files)
            below = sorted(
                s for s in base if s in scan.files and scan.counts.get(s, 0) < self.min_tiles
            )
        result = DatasetSummary(
            tile_px=self.tile_px,
            tile_um=self.tile_um,
            num_slides=len(slides),
            num_patients=len(set(self.patients().values())),
            num_tfrecords=len(manifest),
            num_tiles=sum(v["clipped"] for v in manifest.values()),
            num_tiles_unclipped=sum(v["total"] for v in manifest.values()),
            slides_with_rois=slides_with_rois(self.roi_sources, slides),
            filters={k: list(v) for k, v in self._filters.items()},
            filter_blank=list(self._filter_blank),
            min_tiles=self.min_tiles,
            clip=copy.copy(self._clip),
            tfrecord_sources=[os.fspath(p) for p in self.tfrecord_sources] + self.tfrecord_urls,
            slide_sources=[os.fspath(p) for p in self.slide_sources],
            annotations=(
                os.fspath(self.annotations.path)
                if self.annotations is not None and self.annotations.path is not None
                else ("(list of dicts)" if self.annotations is not None else None)
            ),
            annotation_columns=list(self.annotations.columns) if self.annotations else [],
            missing_sources=list(scan.missing),
            slides_without_tfrecords=self.slides_without_tfrecords(),
            tfrecords_without_annotations=self.tfrecords_without_annotations(),
            unreadable=dict(scan.unreadable),
            below_min_tiles=below,
            stale=dict(scan.stale),
        )
        if print_fn is not None:
            for line in result.lines():
                print_fn(line)
        return result
