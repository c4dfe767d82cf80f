"""``tilestream inspect`` and ``tilestream index``: look into TFRecords and index them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from tilestream.cli._storage import storage_option
from tilestream.errors import TileStreamError, UnsupportedRecordError

__all__ = ["register"]


def _describe_value(value: Any) -> str:
    if value is None:
        return "(empty feature)"
    if isinstance(value, bytes):
        if len(value) > 40:
            return f"<{len(value)} bytes>"
        try:
            return repr(value.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, np.ndarray):
        if value.size > 6:
            head = ", ".join(str(v) for v in value[:5].tolist())
            return f"[{head}, ...] ({value.size} values)"
        return str(value.tolist())
    if isinstance(value, list):
        if len(value) > 3:
            return f"{len(value)} byte strings"
        return ", ".join(_describe_value(v) for v in value)
    return str(value)


def _inspect_one(
    console: Console, path: str, storage_options: dict[str, Any] | None = None
) -> None:
    from tilestream.tfrecord import (
        TFRecord,
        decode_example,
        decode_image,
        detect_image_format,
        iter_records,
    )
    from tilestream.tfrecord.tfrecord_file import IMAGE_KEYS

    record = TFRecord(path, create_index=False, storage_options=storage_options)
    it = iter_records(path, storage_options=storage_options)
    first: bytes | None = None
    count = 0
    for data in it:
        if first is None:
            first = data
        count += 1
    console.print(f"[bold]{record.path}[/bold]", soft_wrap=True)
    console.print(f"  records: {count}    size: {record.get_size():,} bytes")
    if first is None:
        console.print("  (no records)")
        return
    try:
        features = decode_example(first, path=record.path, record=0)
    except UnsupportedRecordError as exc:
        console.print(f"  [yellow]not decoded:[/yellow] {exc.message}", soft_wrap=True)
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("feature")
    table.add_column("type")
    table.add_column("first record")
    try:
        values = record[0]
        has_locations = record.locations is not None
    finally:
        record.close()
    for name, feature in features.items():
        kind = feature.kind or "(no kind)"
        table.add_row(name, f"{kind}[{len(feature)}]", _describe_value(values.get(name)))
    console.print(table)
    image_info = "none"
    for key in IMAGE_KEYS:
        value = values.get(key)
        if isinstance(value, bytes):
            fmt = detect_image_format(value) or "unknown"
            try:
                shape = decode_image(value).shape
                image_info = f"{fmt} {shape[1]}x{shape[0]} ({key})"
            except TileStreamError:
                image_info = f"{fmt}, not decodable ({key})"
            break
    console.print(f"  image: {image_info}    locations: {'yes' if has_locations else 'no'}")


def _tfrecord_files(paths: tuple[str, ...]) -> list[Path]:
    """Files as given; folders searched recursively for TFRecords (hidden entries skipped)."""
    from tilestream.runfolder import find_tfrecords

    for p in paths:
        if not os.path.exists(p):
            raise click.BadParameter(f"{p} does not exist", param_hint="PATH")
    return find_tfrecords(paths)


def register(group: click.Group) -> None:
    """Add ``inspect`` and ``index`` to the root command group."""

    @group.command("inspect")
    @click.argument("files", nargs=-1, required=True)
    @storage_option
    def inspect_cmd(files: tuple[str, ...], storage_options: dict[str, Any] | None) -> None:
        """Show fields, types, image format, record count and the first record of TFRecords.

        FILES are paths or URLs (s3://, gs://, http(s)://, file://).
        """
        from tilestream.storage import is_url

        for f in files:
            if not is_url(f) and not os.path.isfile(f.removeprefix("file://")):
                what = "is a directory" if os.path.isdir(f) else "does not exist"
                raise click.BadParameter(f"File '{f}' {what}.", param_hint="FILES")
        console = Console()
        failures = 0
        for f in files:
            try:
                _inspect_one(console, f, storage_options)
            except TileStreamError as exc:
                console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
                failures += 1
        if failures:
            raise click.exceptions.Exit(1)

    @group.command("index")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["npz", "text"]),
        default="npz",
        show_default=True,
        help="npz: Slideflow's <name>.index.npz; text: 'offset length' lines (DALI, tfrecord).",
    )
    @click.option("--verify/--no-verify", default=False, help="Also check every data CRC.")
    def index_cmd(paths: tuple[str, ...], fmt: str, verify: bool) -> None:
        """Build indexes for TFRecord files, or for every TFRecord under folders."""
        from tilestream.tfrecord import create_index

        files = _tfrecord_files(paths)
        if not files:
            raise click.UsageError("no TFRecord files found")
        console = Console(stderr=True)
        total = sum(os.path.getsize(f) for f in files)
        failures = 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("indexing", total=total)
            done = 0
            for f in files:
                size = os.path.getsize(f)
                progress.update(task, description=f"indexing {f.name}")
                base = done

                def report(n: int, _total: int, base: int = base, size: int = size) -> None:
                    progress.update(task, completed=base + min(n, size))

                try:
                    idx = create_index(f, fmt=fmt, verify=verify, progress=report)  # type: ignore[arg-type]
                    progress.console.print(
                        f"{f}: {len(idx)} records"
                        + (", with locations" if idx.locations is not None else "")
                        + f" -> {idx.path}",
                        soft_wrap=True,
                    )
                except (TileStreamError, OSError) as exc:  # OSError: e.g. a read-only folder
                    msg = str(exc) if isinstance(exc, TileStreamError) else f"{f}: {exc}"
                    progress.console.print(f"[red]error:[/red] {msg}", soft_wrap=True)
                    failures += 1
                done += size
                progress.update(task, completed=done)
        if failures:
            raise click.ClickException(f"{failures} of {len(files)} files could not be indexed")
