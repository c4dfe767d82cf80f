"""``tilestream dicomweb``: the whole-slide series a DICOMweb server holds.

``tilestream dicomweb list URL [--study UID] [--csv FILE]`` searches a server
(or one study) with QIDO-RS and prints its whole-slide series, with their
size, pyramid levels and microns per pixel, as a table; with ``--csv`` it
writes them as a slide list ``tilestream extract`` takes: a ``slide`` column of
``dicomweb+http(s)://`` series URLs and a ``name`` column of stable names
(the series UIDs). Credentials come from the ``TILESTREAM_DICOMWEB_*``
environment variables and are never printed or written.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tilestream._util.atomic import atomic_path
from tilestream.errors import ConfigError, TileStreamError
from tilestream.extract.remote import redact_url, url_slide_name
from tilestream.slide.dicomweb import SeriesInfo, list_series

__all__ = ["CSV_COLUMNS", "register", "series_rows", "write_series_csv"]

console = Console()

#: The columns of ``--csv``. ``um_per_px`` is informational: an ``mpp`` column
#: would override each slide's own resolution in ``tilestream extract``.
CSV_COLUMNS = (
    "slide",
    "name",
    "study_uid",
    "series_uid",
    "width",
    "height",
    "levels",
    "um_per_px",
    "description",
)


def series_rows(series: Sequence[SeriesInfo]) -> list[dict[str, Any]]:
    """One row per series (:data:`CSV_COLUMNS`), in the order given.

    >>> info = SeriesInfo("1.2", "1.2.3", "dicomweb+http://127.0.0.1/dw/studies/1.2/series/1.2.3",
    ...                   "HE", (4000, 3000), ((4000, 3000), (1000, 750)), (0.25, 0.25), (), 2)
    >>> row = series_rows([info])[0]
    >>> row["name"], row["width"], row["levels"], row["um_per_px"]
    ('1.2.3', 4000, 2, '0.25')
    """
    rows = []
    for s in series:
        width, height = s.dimensions or ("", "")
        rows.append(
            {
                "slide": s.url,
                "name": url_slide_name(s.url),
                "study_uid": s.study_uid,
                "series_uid": s.series_uid,
                "width": width,
                "height": height,
                "levels": len(s.levels),
                "um_per_px": "" if s.mpp is None else f"{s.mpp[0]:.6g}",
                "description": s.description,
            }
        )
    return rows


def write_series_csv(rows: Sequence[dict[str, Any]], out: str) -> None:
    """Write ``rows`` as CSV to ``out`` (atomically), or to standard output for ``-``."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if out == "-":
        sys.stdout.write(buffer.getvalue())
        return
    path = Path(out)
    if path.suffix.lower() != ".csv":
        raise ConfigError("a slide list must be a .csv file", path=path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue(), encoding="utf-8")


def _table(rows: Sequence[dict[str, Any]], where: str) -> Table:
    table = Table(title=f"whole-slide series: {where}")
    table.add_column("name (series UID)", overflow="fold")
    table.add_column("study UID", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("levels", justify="right")
    table.add_column("um/px", justify="right")
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            r["study_uid"],
            f"{r['width']} x {r['height']}" if r["width"] != "" else "-",
            str(r["levels"]),
            r["um_per_px"] or "-",
            r["description"] or "-",
        )
    table.caption = f"{len(rows)} series; extract them: --csv FILE, then tilestream extract FILE"
    return table


@click.group("dicomweb")
def dicomweb_group() -> None:
    """DICOMweb servers: list their whole-slide series (to extract them)."""


@dicomweb_group.command("list")
@click.argument("url")
@click.option("--study", help="Only this study (StudyInstanceUID).")
@click.option(
    "--csv",
    "csv_out",
    metavar="FILE",
    help="Write a slide list for tilestream extract (slide, name, ... columns); - for stdout.",
)
def list_cmd(url: str, study: str | None, csv_out: str | None) -> None:
    """The whole-slide series of the DICOMweb server (or study) at URL.

    URL is the server's DICOMweb root (https://host/dicom-web), with or
    without the dicomweb+ prefix, or a study under it. Credentials come from
    TILESTREAM_DICOMWEB_TOKEN (or _TOKEN_FILE), or TILESTREAM_DICOMWEB_USER
    with _PASSWORD (or _PASSWORD_FILE); the CSV's URLs carry none, so
    tilestream extract reads them from the same variables.

    \b
    Exit codes:
      0  listed (possibly no series)
      1  the server cannot be reached, refused the credentials, or is not DICOMweb
    """
    try:
        series = list_series(url, study=study)
        rows = series_rows(series)
        if csv_out is not None:
            write_series_csv(rows, csv_out)
    except TileStreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise click.exceptions.Exit(1) from None
    if csv_out is None:
        console.print(_table(rows, redact_url(url) + (f" study {study}" if study else "")))
    elif csv_out != "-":
        console.print(f"{len(rows)} series written to {csv_out}", soft_wrap=True)


def register(group: click.Group) -> None:
    """Add the commands to the root group."""
    group.add_command(dicomweb_group)
