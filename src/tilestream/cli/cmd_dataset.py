"""Dataset commands: ``tfrecord ...`` utilities, ``manifest``, ``dataset summary``, ``crossfolds``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table

from tilestream.cli._storage import PathOrURL, storage_option

__all__ = ["register"]


def _console() -> Console:
    return Console(soft_wrap=True)


def _parse_filters(items: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(
                f"{item!r} is not COLUMN=VALUE[,VALUE...]", param_hint="--filter"
            )
        col, values = item.split("=", 1)
        out.setdefault(col.strip(), []).extend(v.strip() for v in values.split(","))
    return out


def _top_level_tfrecords(
    paths: tuple[str, ...], storage_options: dict[str, Any] | None = None
) -> list[Path | str]:
    """Files as given; a folder gives its top-level ``*.tfrecords`` (not searched further).

    A URL is an object, or a prefix whose ``*.tfrecords`` objects are listed.
    """
    from tilestream.dataset.io import tfrecord_files

    return tfrecord_files(paths, storage_options=storage_options)


def _add_file_commands(tfrecord_group: click.Group) -> None:
    """``tfrecord merge`` and ``split``."""

    @tfrecord_group.command("merge")
    @click.argument("inputs", nargs=-1, required=True, type=PathOrURL(exists=True))
    @click.option("-o", "--output", required=True, type=PathOrURL(dir_okay=False))
    @click.option("--overwrite", is_flag=True, help="Replace an existing output.")
    @storage_option
    def merge_cmd(
        inputs: tuple[str, ...],
        output: str,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Concatenate TFRecords (files, folders, URLs or prefixes of *.tfrecords) into OUTPUT.

        OUTPUT may be a URL (s3://bucket/key.tfrecords): uploaded whole, with its index.
        """
        from tilestream.dataset.io import merge_tfrecords

        files = _top_level_tfrecords(inputs, storage_options)
        n = merge_tfrecords(files, output, overwrite=overwrite, storage_options=storage_options)
        _console().print(f"merged {len(files)} TFRecords: {n} records -> [green]{output}[/green]")

    @tfrecord_group.command("split")
    @click.argument("tfrecord", type=PathOrURL(exists=True, dir_okay=False))
    @click.argument("out_dir", type=PathOrURL(file_okay=False))
    @click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
    @storage_option
    def split_cmd(
        tfrecord: str, out_dir: str, overwrite: bool, storage_options: dict[str, Any] | None
    ) -> None:
        """Split TFRECORD (a file or URL) by slide into OUT_DIR/<slide>.tfrecords.

        OUT_DIR may be a URL prefix (s3://bucket/prefix): each output is uploaded whole.
        """
        from tilestream.dataset.io import split_tfrecord

        counts = split_tfrecord(
            tfrecord, out_dir, overwrite=overwrite, storage_options=storage_options
        )
        table = Table("slide", "records", title=f"{tfrecord} -> {out_dir}")
        for slide, n in sorted(counts.items()):
            table.add_row(slide, str(n))
        _console().print(table)


def _add_shuffle_commands(tfrecord_group: click.Group) -> None:
    """``tfrecord shuffle`` and ``join``."""

    @tfrecord_group.command("shuffle")
    @click.argument("tfrecord", type=PathOrURL(exists=True, dir_okay=False))
    @click.option("-o", "--output", type=PathOrURL(dir_okay=False), help="Default: in place.")
    @click.option("--seed", type=int, default=None)
    @storage_option
    def shuffle_cmd(
        tfrecord: str, output: str | None, seed: int | None, storage_options: dict[str, Any] | None
    ) -> None:
        """Shuffle the records of TFRECORD (in place, atomically, unless --output).

        TFRECORD and OUTPUT may be URLs (s3://...); an output URL is uploaded whole.
        """
        from tilestream.dataset.io import shuffle_tfrecord

        n = shuffle_tfrecord(tfrecord, output=output, seed=seed, storage_options=storage_options)
        _console().print(f"shuffled {n} records -> [green]{output or tfrecord}[/green]")

    @tfrecord_group.command("join")
    @click.argument("folder", type=PathOrURL(exists=True, file_okay=False))
    @click.argument("output", type=PathOrURL(dir_okay=False))
    @click.option(
        "--slide", "assign_slide", default=None, help="Give every record this slide name."
    )
    @click.option("--seed", type=int, default=None)
    @click.option("--overwrite", is_flag=True)
    @storage_option
    def join_cmd(
        folder: str,
        output: str,
        assign_slide: str | None,
        seed: int | None,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Interleave the *.tfrecords of FOLDER at random into OUTPUT.

        FOLDER may be a URL prefix (s3://bucket/prefix/), OUTPUT a URL (uploaded whole).
        """
        from tilestream.dataset.io import join_tfrecord

        n = join_tfrecord(
            folder,
            output,
            assign_slide,
            seed=seed,
            overwrite=overwrite,
            storage_options=storage_options,
        )
        _console().print(f"joined {n} records -> [green]{output}[/green]")


def _add_transform_command(tfrecord_group: click.Group) -> None:
    """``tfrecord transform``."""

    @tfrecord_group.command("transform")
    @click.argument("origin", type=PathOrURL(exists=True, dir_okay=False))
    @click.argument("target", type=PathOrURL(dir_okay=False))
    @click.option("--slide", "assign_slide", default=None, help="New slide name.")
    @click.option("--resize", type=int, default=None, help="Resize tiles to N x N pixels.")
    @click.option("--format", "img_format", type=click.Choice(["jpeg", "png"]), default=None)
    @click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True)
    @click.option("--hue-shift", type=float, default=None)
    @click.option("--overwrite", is_flag=True)
    @storage_option
    def transform_cmd(
        origin: str,
        target: str,
        assign_slide: str | None,
        resize: int | None,
        img_format: str | None,
        quality: int,
        hue_shift: float | None,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Copy ORIGIN to TARGET (files or URLs), re-encoding tiles and/or renaming the slide."""
        from tilestream.dataset.io import transform_tfrecord

        n = transform_tfrecord(
            origin,
            target,
            assign_slide,
            hue_shift,
            resize,
            img_format=img_format,
            quality=quality,
            overwrite=overwrite,
            storage_options=storage_options,
        )
        _console().print(f"transformed {n} records -> [green]{target}[/green]")


def _add_image_commands(tfrecord_group: click.Group) -> None:
    """``tfrecord to-images`` and ``from-images``."""

    @tfrecord_group.command("to-images")
    @click.argument("tfrecords", nargs=-1, required=True, type=PathOrURL(exists=True))
    @click.option("-o", "--out", "dest", required=True, type=PathOrURL(file_okay=False))
    @click.option("--overwrite", is_flag=True, help="Replace differing tile files.")
    @storage_option
    def to_images_cmd(
        tfrecords: tuple[str, ...],
        dest: str,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Write the tiles of TFRECORDS (files, folders, URLs) as DEST/<slide>/<slide>_<x>-<y>.<ext>.

        DEST may be a URL prefix (s3://bucket/prefix): each tile is uploaded whole.
        """
        from tilestream.dataset.io import tfrecord_to_images

        table = Table("TFRecord", "tiles", title=f"tiles -> {dest}")
        for f in _top_level_tfrecords(tfrecords, storage_options):
            n = tfrecord_to_images(f, dest, overwrite=overwrite, storage_options=storage_options)
            table.add_row(str(f), str(n))
        _console().print(table)

    @tfrecord_group.command("from-images")
    @click.argument("input_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option(
        "--mode",
        type=click.Choice(["multi", "single", "merge"]),
        default="multi",
        show_default=True,
        help="multi: one TFRecord per subfolder (slide); single: INPUT_DIR's images as one "
        "slide; merge: all subfolders into one TFRecord.",
    )
    @click.option("--slide", default=None, help="single: the slide name (default: folder name).")
    @click.option("--filename", default=None, help="single/merge: the TFRecord's file name.")
    @click.option("--shuffle/--no-shuffle", default=True, show_default=True)
    @click.option("--seed", type=int, default=None)
    @click.option("--overwrite", is_flag=True)
    def from_images_cmd(
        input_dir: str,
        out_dir: str,
        mode: str,
        slide: str | None,
        filename: str | None,
        shuffle: bool,
        seed: int | None,
        overwrite: bool,
    ) -> None:
        """Write loose JPEG/PNG tiles to TFRecords (locations from ..._<x>-<y>.<ext> names)."""
        from tilestream.dataset import io as sfio

        opts: dict[str, Any] = {"shuffle": shuffle, "seed": seed, "overwrite": overwrite}
        name = Path(input_dir).resolve().name
        if mode == "multi":
            n = sfio.write_tfrecords_multi(input_dir, out_dir, **opts)
        elif mode == "single":
            slide = slide or name
            n = sfio.write_tfrecords_single(
                input_dir, out_dir, filename or f"{slide}.tfrecords", slide, **opts
            )
        else:
            n = sfio.write_tfrecords_merge(
                input_dir, out_dir, filename or f"{name}.tfrecords", **opts
            )
        _console().print(f"wrote {n} tiles to TFRecords in [green]{out_dir}[/green]")


def _tfrecord_group(group: click.Group) -> None:
    @group.group("tfrecord")
    def tfrecord_group() -> None:
        """Split, merge, shuffle, transform TFRecords; convert to and from loose images."""

    _add_file_commands(tfrecord_group)
    _add_shuffle_commands(tfrecord_group)
    _add_transform_command(tfrecord_group)
    _add_image_commands(tfrecord_group)


def register(group: click.Group) -> None:
    """Add ``tfrecord``, ``manifest``, ``dataset`` and ``crossfolds`` to the root group."""
    _tfrecord_group(group)

    @group.command("manifest")
    @click.argument("directory")
    @click.option("--force", is_flag=True, help="Recount every file.")
    @click.option(
        "--verify",
        is_flag=True,
        help="Read every record and check its data CRC (else counts come from the framing).",
    )
    @click.option(
        "--out",
        type=click.Path(dir_okay=False),
        default=None,
        help="Default: DIRECTORY/manifest.json.",
    )
    @click.option("--no-write", is_flag=True, help="Only print the counts.")
    @storage_option
    def manifest_cmd(
        directory: str,
        force: bool,
        verify: bool,
        out: str | None,
        no_write: bool,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Count the records of every TFRecord under DIRECTORY into manifest.json (never deletes).

        Exit status 1 when --verify found a damaged, unreadable or empty file.

        TFRecords of stale slides in extraction run folders (last extraction
        failed or unfinished, or made under another config) are left out and listed.

        DIRECTORY may be a URL prefix (s3://bucket/run/): its TFRecords are counted
        from their indexes (cached locally by ETag) and PREFIX/manifest.json written.
        """
        from tilestream.dataset.manifest import scan_manifest
        from tilestream.dataset.remote_manifest import scan_remote_manifest
        from tilestream.storage import is_url

        if is_url(directory):
            if out is not None:
                raise click.UsageError(
                    "--out is for local folders; a URL's manifest is written beside its TFRecords"
                )
            scan = scan_remote_manifest(
                directory, force, storage_options=storage_options, write=not no_write, verify=verify
            )
        elif not os.path.isdir(directory.removeprefix("file://")):
            raise click.BadParameter(
                f"Directory '{directory}' does not exist.", param_hint="DIRECTORY"
            )
        else:
            directory = directory.removeprefix("file://")
            scan = scan_manifest(
                directory, force, manifest_path=out, write=not no_write, verify=verify
            )
        manifest = scan.entries
        table = Table("TFRecord", "records", "problem", title=f"manifest of {directory}")
        for rel, entry in manifest.items():
            err = entry.get("error")
            table.add_row(rel, str(entry["total"]), f"[red]{err}[/red]" if err else "")
        for rel, reason in scan.stale.items():
            table.add_row(rel, "-", f"[yellow]left out, stale: {reason}[/yellow]")
        console = _console()
        console.print(table)
        if scan.problem is not None:
            console.print(f"[yellow]the stored manifest {scan.problem}; counted again[/yellow]")
        if scan.write_error is not None:
            console.print(f"[yellow]{scan.write_error}: counts not saved[/yellow]")
        bad = sum(1 for e in manifest.values() if e.get("error"))
        total = sum(int(e["total"]) for e in manifest.values())
        stale = f", {len(scan.stale)} stale left out" if scan.stale else ""
        console.print(f"{len(manifest)} files, {total} records, {bad} unreadable or empty{stale}")
        unverified = sum(1 for e in manifest.values() if e.get("verified") is not True)
        if unverified:
            console.print(
                f"{unverified} of {len(manifest)} files counted from the record framing, their "
                "data CRCs not verified: use --verify to read and check every record"
            )
        elif manifest:
            console.print("every file read through, each record's CRCs checked (verified)")
        if verify and bad:  # a check that found damage says so in its exit status too
            raise click.exceptions.Exit(1)

    @group.group("dataset")
    def dataset_group() -> None:
        """Datasets of TFRecords and annotations."""

    @dataset_group.command("summary")
    @click.option("--tfrecords", "tfrecords", multiple=True, required=True, type=click.Path())
    @click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None)
    @click.option("--slides", multiple=True, type=click.Path(), help="Slide folder(s).")
    @click.option("--tile-px", type=int, default=None)
    @click.option("--tile-um", default=None)
    @click.option("--filter", "filters", multiple=True, help="COLUMN=VALUE[,VALUE...]")
    @click.option("--min-tiles", type=int, default=0, show_default=True)
    @click.option("--clip", type=int, default=None)
    @click.option("--encoding", default="utf-8", show_default=True, help="Annotations encoding.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def summary_cmd(
        tfrecords: tuple[str, ...],
        annotations: str | None,
        slides: tuple[str, ...],
        tile_px: int | None,
        tile_um: str | None,
        filters: tuple[str, ...],
        min_tiles: int,
        clip: int | None,
        encoding: str,
        as_json: bool,
    ) -> None:
        """Slides, patients, tiles, sources and problems of a dataset."""
        from tilestream.dataset import Dataset

        ds = Dataset(
            tfrecords=list(tfrecords),
            annotations=annotations,
            slides=list(slides) or None,
            tile_px=tile_px,
            tile_um=tile_um,
            filters=_parse_filters(filters),
            min_tiles=min_tiles,
            clip=clip,
            encoding=encoding,
        )
        summary = ds.summary()
        if as_json:
            click.echo(json.dumps(summary.to_dict(), indent=2))
            return
        table = Table(show_header=False, title="Dataset summary", box=None)
        table.add_column("item", style="bold")
        table.add_column("value")
        for line in summary.lines():
            key, _, value = line.partition(": ")
            table.add_row(key, value)
        _console().print(table)

    @group.command("crossfolds")
    @click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--category", required=True, help="The column to balance.")
    @click.option("--k", "k", type=int, default=3, show_default=True)
    @click.option("--site-column", default="site", show_default=True)
    @click.option("--patient-column", default="patient", show_default=True)
    @click.option("--target-column", default=None, help="Default: CV<k>.")
    @click.option(
        "--method",
        type=click.Choice(["auto", "milp", "greedy", "stratified"]),
        default="auto",
        show_default=True,
    )
    @click.option("--timelimit", type=float, default=10, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--encoding", default="utf-8", show_default=True)
    @click.option(
        "-o",
        "--out",
        type=click.Path(dir_okay=False),
        default=None,
        help="Write the CSV with the fold column.",
    )
    @click.option("--in-place", is_flag=True, help="Add the fold column to CSV_FILE (atomically).")
    def crossfolds_cmd(
        csv_file: str,
        category: str,
        k: int,
        site_column: str,
        patient_column: str,
        target_column: str | None,
        method: str,
        timelimit: float,
        seed: int,
        encoding: str,
        out: str | None,
        in_place: bool,
    ) -> None:
        """Site-preserved (or stratified) cross-validation folds for CSV_FILE."""
        from tilestream.dataset.annotations import load_annotations, write_csv
        from tilestream.dataset.crossfolds import Method, generate_crossfolds

        if out and in_place:
            raise click.UsageError("give --out or --in-place, not both")
        ann = load_annotations(csv_file, slide_column=None, encoding=encoding)
        result = generate_crossfolds(
            ann,
            category,
            k,
            target_column=target_column,
            site_column=site_column,
            patient_column=patient_column,
            method=cast(Method, method),
            timelimit=timelimit,
            seed=seed,
        )
        console = _console()
        table = Table(title=f"{k} folds by {category!r} ({result.method})")
        table.add_column(category)
        for i in range(k):
            table.add_column(f"fold {i + 1}", justify="right")
        for value, counts in result.counts.items():
            table.add_row(value, *map(str, counts))
        if result.method != "stratified":
            table.add_row("[dim]sites[/dim]", *[", ".join(f) for f in result.folds])
        console.print(table)
        status = "optimal" if result.optimal else "best found"
        console.print(f"imbalance {result.objective:g} ({status})")
        for note in result.notes:
            console.print(f"[yellow]{note}[/yellow]")
        target = out or (csv_file if in_place else None)
        if target:
            column = target_column or f"CV{k}"
            columns = list(ann.columns) + ([column] if column not in ann.columns else [])
            write_csv(target, result.rows, columns)
            console.print(f"wrote [green]{target}[/green] (column {column!r})")
