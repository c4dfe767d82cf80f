"""Writing one slide's outputs: its tiles with their coordinates, then its tables, outlines, preview.

Two stages of :func:`tilestream.extract.engine.extract_slide_task`, in commit
order (see :mod:`tilestream.extract.engine`): :func:`write_tiles` reads,
encodes and writes the kept tiles (a TFRecord with its index, or loose
images), and :func:`write_outputs` writes what describes them: the
coordinates table, the rejected tiles, the outlines and the preview. The
paths are those of :func:`tilestream.runfolder.slide_outputs`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilestream._util.atomic import atomic_write
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import Grid
from tilestream.extract.outlines import TISSUE_CLASS, class_name, outlines_geojson
from tilestream.extract.plan import SlidePlan
from tilestream.extract.preview import render_preview
from tilestream.extract.quality import estimate_jpeg_quality
from tilestream.extract.roi import roi_feature, split_outlines
from tilestream.extract.select import QC_REASONS, Selection, outline_excluded_classes
from tilestream.extract.task import TileProgress
from tilestream.extract.tiles import EncodedTile, StageTimes, iter_encoded_tiles
from tilestream.slide import Slide
from tilestream.tfrecord import TFRecordWriter, serialized_record

__all__ = [
    "COORDS_COLUMNS",
    "PREVIEW_QUALITY",
    "REJECTED_COLUMNS",
    "PreparedOutputs",
    "WrittenTiles",
    "coords_header",
    "prepare_outputs",
    "reject_blurry",
    "tile_image_name",
    "tile_image_pattern",
    "write_csv",
    "write_outputs",
    "write_tiles",
]

#: The columns of ``<slide>.coords.csv`` before one per QC mask (see :func:`coords_header`).
COORDS_COLUMNS = (
    "record", "loc_x", "loc_y", "x", "y", "width", "height", "level", "tile_um",
    "tissue", "grayspace", "whitespace", "blur", "blurry",
)  # fmt: skip
#: The columns of ``state/<slide>.rejected.csv``.
REJECTED_COLUMNS = ("x", "y", "reason")
#: The JPEG quality of ``previews/<slide>.jpg``.
PREVIEW_QUALITY = 85
_BLURRY = COORDS_COLUMNS.index("blurry")


def coords_header(selection: Selection) -> list[str]:
    """The header of ``<slide>.coords.csv``: :data:`COORDS_COLUMNS`, then each QC mask's reason.

    ``width`` and ``height`` are a tile's extent in level-0 pixels, ``tile_um``
    the microns it covers (``width`` times the slide's microns per pixel:
    the requested size, or what it snapped to, see
    :attr:`tilestream.extract.grid.Grid.snapped`; empty when the slide's
    microns per pixel are unknown). Columns are found by name: a reader of
    tables written before ``tile_um`` existed sees it missing.
    """
    return [*COORDS_COLUMNS, *(QC_REASONS[k] for k in selection.qc_fractions)]


def tile_image_name(name: str, loc_x: int, loc_y: int, img_format: str) -> str:
    """The file name of a tile written as an image (``to_images``): ``<slide>_<loc_x>_<loc_y>.<ext>``.

    >>> tile_image_name("s1", 64, -3, "jpeg"), tile_image_name("s1", 0, 0, "png")
    ('s1_64_-3.jpg', 's1_0_0.png')
    """
    return f"{name}_{loc_x}_{loc_y}.{'jpg' if img_format == 'jpeg' else 'png'}"


def tile_image_pattern(name: str) -> re.Pattern[str]:
    """What the names :func:`tile_image_name` gives slide ``name``'s tiles match (exactly)."""
    return re.compile(rf"{re.escape(name)}_-?[0-9]+_-?[0-9]+\.(?:jpg|png)")


def write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> None:
    """Write a CSV table atomically (``\\n`` line ends)."""
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


@dataclass
class WrittenTiles:
    """What :func:`write_tiles` wrote.

    ``coords_rows`` holds one row of ``<slide>.coords.csv`` per tile written
    (see :func:`coords_header`), in record order; ``blur_rejected`` the grid
    indices of tiles left out as blurry.
    """

    coords_rows: list[list[Any]] = field(default_factory=list)
    blur_rejected: list[int] = field(default_factory=list)
    passthrough: int = 0
    assembled: int = 0
    stored_quality: int | None = None
    write_seconds: float = 0.0
    stage: StageTimes = field(default_factory=StageTimes)

    @property
    def blurry(self) -> int:
        """Tiles written although blurry (``blur_filter`` off)."""
        return sum(int(r[_BLURRY]) for r in self.coords_rows)


def write_tiles(
    opener: Callable[[], Slide],
    plan: SlidePlan,
    selection: Selection,
    config: ExtractConfig,
    outputs: dict[str, Path],
    *,
    name: str,
    threads: int = 1,
    normalizer: Any = None,
    progress: TileProgress | None = None,
) -> WrittenTiles:
    """Read, encode and write the tiles ``selection`` keeps, in grid order.

    Into ``outputs["tfrecord"]`` (with its index), or one image file each
    into the folder ``outputs["images"]`` when there is one. Tiles rejected
    by their own blur score (``blur_filter``) are left out and listed.
    """
    grid = plan.grid
    kept = selection.kept_indices
    tiles = iter_encoded_tiles(
        opener,
        grid,
        kept,
        config,
        threads=max(1, threads),
        passthrough=plan.passthrough,
        assemble=plan.assemble,
        normalizer=normalizer,
    )
    with contextlib.ExitStack() as stack:
        # closed here, in this thread, however the loop ends: a generator left to the
        # garbage collector shuts its thread pool down wherever the collector runs,
        # which may be one of that pool's own threads ("cannot join current thread")
        stack.enter_context(contextlib.closing(tiles))
        writer = None
        img_dir = outputs.get("images")
        if img_dir is not None:
            img_dir.mkdir(parents=True, exist_ok=True)
        else:
            writer = stack.enter_context(TFRecordWriter(outputs["tfrecord"], index=True))
        tile_um = grid.tile_um(plan.mpp)
        return _write_loop(
            tiles, writer, img_dir, grid, selection, config, name, progress,
            "" if tile_um is None else tile_um,
        )  # fmt: skip


def _write_loop(
    tiles: Iterable[EncodedTile],
    writer: TFRecordWriter | None,
    img_dir: Path | None,
    grid: Grid,
    selection: Selection,
    config: ExtractConfig,
    name: str,
    progress: TileProgress | None,
    tile_um: float | str,
) -> WrittenTiles:
    """The tile loop of :func:`write_tiles` (the hot path: per tile, only what it needs)."""
    out = WrittenTiles()
    stage = out.stage
    coords_rows = out.coords_rows
    blur_reject = out.blur_rejected
    centers = grid.centers
    n_kept = len(selection.kept_indices)
    n_pass = n_assembled = 0
    write_seconds = 0.0
    done = 0
    for tile in tiles:
        if tile.times is not None:
            stage.add(tile.times)
        if tile.passthrough:
            if not n_pass:  # the tables of a slide level are shared: the first tile's
                out.stored_quality = estimate_jpeg_quality(tile.data)
            n_pass += 1
            n_assembled += tile.assembled
        i = tile.index
        blurry = (
            tile.blur is not None
            and config.blur_threshold is not None
            and tile.blur < config.blur_threshold
        )
        if blurry and config.blur_filter:
            blur_reject.append(i)
            continue
        lx, ly = int(centers[i, 0]), int(centers[i, 1])
        tw = time.perf_counter()
        if writer is not None:
            writer.write(serialized_record(name, tile.data, lx, ly), location=(lx, ly))
        else:
            assert img_dir is not None
            with atomic_write(
                img_dir / tile_image_name(name, lx, ly, config.img_format), "wb"
            ) as f:
                f.write(tile.data)
        write_seconds += time.perf_counter() - tw
        coords_rows.append(
            [
                len(coords_rows), lx, ly, int(grid.xs[i]), int(grid.ys[i]),
                grid.extract_px, grid.extract_px, grid.level, tile_um,
                round(float(selection.tissue[i]), 4),
                round(float(selection.grayspace[i]), 4),
                round(float(selection.whitespace[i]), 4),
                "" if tile.blur is None else round(tile.blur, 2),
                int(blurry),
                *(round(float(f[i]), 4) for f in selection.qc_fractions.values()),
            ]
        )  # fmt: skip
        done += 1
        if progress is not None and (done % 64 == 0 or done == n_kept):
            progress(name, done, n_kept)
    out.passthrough = n_pass
    out.assembled = n_assembled
    out.write_seconds = write_seconds
    return out


def reject_blurry(selection: Selection, blur_rejected: Sequence[int]) -> None:
    """Record in ``selection`` the tiles left out by their own blur score (reason ``blur``)."""
    if blur_rejected:
        idx = list(blur_rejected)
        selection.keep[idx] = False
        selection.reason[idx] = "blur"
        selection.counts["blur"] = len(idx)


@dataclass(frozen=True)
class PreparedOutputs:
    """What :func:`write_outputs` writes besides the coordinates, made ready to write.

    ``rejected_rows`` (``state/<slide>.rejected.csv``), ``outlines_text``
    (``<slide>.geojson``) and ``preview_jpeg`` (``previews/<slide>.jpg``).
    """

    rejected_rows: list[list[Any]]
    outlines_text: str
    preview_jpeg: bytes


def prepare_outputs(
    plan: SlidePlan, selection: Selection, config: ExtractConfig
) -> PreparedOutputs:
    """Render the rejected tiles, outlines and preview of ``selection`` (nothing is written).

    They depend on the selection alone, so where the tiles cannot change it (no
    blur filter) :func:`tilestream.extract.engine.extract_slide_task` makes them
    while the tiles are being extracted; :func:`write_outputs` writes them after.
    """
    grid = plan.grid
    lowres = plan.lowres
    rej = np.flatnonzero(~selection.keep)
    rejected = [[int(grid.xs[i]), int(grid.ys[i]), str(selection.reason[i])] for i in rej]
    qc_masks = selection.qc_masks
    plain_rois = split_outlines(plan.rois, outline_excluded_classes())[0]
    data = outlines_geojson(
        {TISSUE_CLASS: selection.tissue_mask, **{class_name(k): m for k, m in qc_masks.items()}},
        lowres.downsample,
        extra_features=[roi_feature(r) for r in plain_rois],
    )
    # as tilestream.extract.outlines.write_outlines writes it (json.dumps in one shot: the
    # C encoder), with its final newline
    text = json.dumps(data, indent=None, sort_keys=False) + "\n"
    keep_idx = selection.kept_indices
    preview = render_preview(
        lowres.image,
        lowres.downsample,
        tissue=selection.tissue_mask if config.tissue_method == "otsu" else None,
        kept=np.stack([grid.xs[keep_idx], grid.ys[keep_idx]], axis=1),
        rejected=np.stack([grid.xs[rej], grid.ys[rej]], axis=1),
        extract_px=grid.extract_px,
        rois=plain_rois,
        qc_masks=qc_masks,
    )
    buf = io.BytesIO()  # the bytes tilestream.extract.preview.save_preview writes
    preview.save(buf, format="JPEG", quality=PREVIEW_QUALITY)
    return PreparedOutputs(rejected_rows=rejected, outlines_text=text, preview_jpeg=buf.getvalue())


def write_outputs(
    outputs: dict[str, Path],
    plan: SlidePlan,
    selection: Selection,
    coords_rows: list[list[Any]],
    config: ExtractConfig,
    *,
    prepared: PreparedOutputs | None = None,
) -> None:
    """Write what describes the tiles written: coordinates, rejected tiles, outlines, preview.

    ``<slide>.coords.csv`` (``coords_rows`` under :func:`coords_header`),
    ``state/<slide>.rejected.csv`` (every grid tile ``selection`` does not
    keep, with its reason), ``<slide>.geojson`` (the tissue and QC masks, and
    the slide's plain ROIs) and ``previews/<slide>.jpg``, in that order, each
    atomically. ``prepared``: the last three made beforehand by
    :func:`prepare_outputs` from this same selection (else they are made here).
    """
    write_csv(outputs["coords"], coords_header(selection), coords_rows)
    if prepared is None:
        prepared = prepare_outputs(plan, selection, config)
    write_csv(outputs["rejected"], REJECTED_COLUMNS, prepared.rejected_rows)
    with atomic_write(outputs["outlines"], "w") as f:
        f.write(prepared.outlines_text)
    with atomic_write(outputs["preview"], "wb") as f:
        f.write(prepared.preview_jpeg)
