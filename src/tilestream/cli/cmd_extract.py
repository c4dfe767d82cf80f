"""``tilestream extract`` and ``tilestream demo``."""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tilestream import __version__
from tilestream.cli._storage import storage_option
from tilestream.errors import TileStreamError
from tilestream.extract import (
    ExtractConfig,
    ExtractionRun,
    RunProgress,
    SlideResult,
    extract_slides,
    run_demo,
)
from tilestream.extract.demo import DEMO_SLIDE
from tilestream.extract.report import REPORT_FILE
from tilestream.extract.runner import STAGE_MODES
from tilestream.extract.select import REJECT_REASONS
from tilestream.runfolder import SUMMARY_FILE, slide_outputs
from tilestream.storage import is_url

__all__ = ["EXIT_BUG", "EXIT_ERROR", "EXIT_FAILED", "register"]

console = Console()

#: Exit codes of ``tilestream extract`` (see its help).
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_BUG = 3
ISSUES_URL = "https://github.com/tilestream/tilestream/issues"


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar over slides, with tiles/s; yields the library callback."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("slides  {task.fields[tiles]} tiles  {task.fields[rate]} tiles/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task("extracting", total=None, tiles=0, rate="-")
        start = bar.get_time()

        def callback(p: RunProgress) -> None:
            tiles = p.tiles_done + (p.slide_tiles_done if p.result is None else 0)
            elapsed = max(bar.get_time() - start, 1e-6)
            desc = p.slide if p.slide and p.result is None else "extracting"
            bar.update(
                job,
                total=p.slides_total,
                completed=p.slides_done,
                tiles=tiles,
                rate=f"{tiles / elapsed:,.0f}",
                description=desc,
            )

        yield callback


def summary_table(run: ExtractionRun) -> Table:
    """The per-slide summary of a run (failure reasons are listed by :func:`print_summary`)."""
    table = Table(title=f"tilestream extraction: {run.run_dir.name}")
    longest = max((len(r.slide) for r in run.results), default=5)
    table.add_column("slide", overflow="fold", min_width=min(30, longest))
    table.add_column("status")
    for col in ("tiles", "grid"):
        table.add_column(col, justify="right")
    table.add_column("rejected", overflow="fold", max_width=12)  # one reason a line
    table.add_column("seconds", justify="right")
    styles = {"done": "green", "skipped": "cyan", "failed": "red"}
    for r in sorted(run.results, key=lambda r: r.slide):
        rej = ", ".join(f"{k} {r.rejected[k]}" for k in REJECT_REASONS if r.rejected.get(k))
        status = f"[{styles.get(r.status, 'white')}]{r.status}"
        if r.status == "failed":
            status += f" ({r.error_type})"
        table.add_row(r.slide, status, str(r.tiles), str(r.grid), rej, f"{r.seconds:.2f}")
    table.caption = (
        f"{run.done} extracted, {run.skipped} already complete, {len(run.failed)} failed; "
        f"{run.tiles} tiles in {run.seconds:.1f} s"
    )
    return table


def grid_line(run_dir: Path) -> str | None:
    """One line on the slides whose tile grid snapped (from ``summary.json``), or ``None``."""
    try:
        grid = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))["tile_grid"]
        changes = [
            f"{c['exact_px']} -> {c['extract_px']} level-0 px ({c['tile_um']} um) "
            f"on {len(c['slides'])}"
            for c in grid["changes"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not changes:
        return None
    return (
        f"tile grid snapped to native pixels (no resize) on {len(grid['snapped'])} slide(s): "
        + "; ".join(changes)
        + " (--grid exact to keep the exact size)"
    )


def print_summary(run: ExtractionRun) -> None:
    """The summary table, the report's path, then each failure with its full reason."""
    console.print(summary_table(run))
    line = grid_line(run.run_dir)
    if line is not None:
        console.print(line, soft_wrap=True, highlight=False)
    report = f"{run.url}/report.html" if run.url else run.run_dir / "report.html"
    console.print(f"report: {report}", soft_wrap=True)
    if run.stale:
        console.print(
            f"[yellow bold]{len(run.stale)} slide(s) have stale outputs[/] (kept, not deleted; "
            "left out of the manifest, datasets, loaders and the viewer):",
            soft_wrap=True,
        )
        for name, reason in sorted(run.stale.items()):
            console.print(f"  [yellow]stale[/] {name}: {reason}", soft_wrap=True, highlight=False)
    if not run.failed:
        return
    console.print(
        f"[red bold]{len(run.failed)} of {len(run.results)} slides failed[/] "
        "(recorded in state/; the others are complete):",
        soft_wrap=True,
    )
    for r in sorted(run.failed, key=lambda r: r.slide):
        kind = "BUG" if r.traceback else "failed"
        console.print(f"  [red]{kind}[/] {r.slide}: {r.error}", soft_wrap=True, highlight=False)


def report_bugs(bugs: list[SlideResult]) -> None:
    """Print the tracebacks of failures that are bugs in tilestream, and ask for a report."""
    for r in bugs:
        click.echo(f"\n{r.slide}: internal error\n{r.traceback}", err=True)
    click.secho(
        f"{len(bugs)} slide(s) failed because of a bug in tilestream {__version__}, not because "
        f"of the slides: please report it at {ISSUES_URL} with the traceback above.",
        fg="red",
        err=True,
    )


def _config_from_options(opts: dict[str, Any]) -> ExtractConfig:
    config_file = opts.pop("config_file")
    values = {k: v for k, v in opts.items() if v is not None}
    if config_file is not None:
        return ExtractConfig.from_file(config_file, **values)
    if "tile_px" not in values or "tile_um" not in values:
        raise click.UsageError("--tile-px and --tile-um are required (or --config FILE)")
    return ExtractConfig.from_dict(values)


@click.command("extract")
@click.argument("slides", nargs=-1, required=True, type=click.Path())  # str: a URL stays whole
@click.option(
    "--out",
    "out_dir",
    required=True,
    help="Output root: a folder or a URL (s3://bucket/prefix, gs://...).",
)
@click.option("--tile-px", type=int, help="Tile size in pixels.")
@click.option("--tile-um", help="Tile size in microns (302) or a magnification (10x).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A JSON or TOML file of options; flags override it.",
)
@click.option("--stride-div", type=int, help="1 = no overlap, 2 = half-tile stride.")
@click.option("--max-tiles", type=int, help="At most this many tiles per slide.")
@click.option("--randomize-origin/--no-randomize-origin", default=None)
@click.option("--use-edge-tiles/--no-edge-tiles", default=None)
@click.option("--seed", type=int)
@click.option("--tissue", "tissue_method", type=click.Choice(["otsu", "none"]))
@click.option("--min-tissue", type=float, help="Minimum tissue fraction per tile.")
@click.option("--grayspace-fraction", type=float)
@click.option("--grayspace-threshold", type=float)
@click.option("--whitespace-fraction", type=float)
@click.option("--whitespace-threshold", type=float)
@click.option(
    "--blur-threshold", type=float, help="Laplacian variance below which a tile is blurry."
)
@click.option("--blur-filter/--no-blur-filter", default=None, help="Reject blurry tiles.")
@click.option(
    "--pen",
    type=click.Choice(["remove", "keep", "off"]),
    help="Marker ink: remove it from the tissue and its tiles (default), keep (only measure), off.",
)
@click.option("--max-pen-fraction", type=float, help="Most ink a kept tile may hold (default 0).")
@click.option(
    "--fold",
    type=click.Choice(["remove", "keep", "off"]),
    help="Dark folds / thick tissue: remove, keep (only measure; default), off.",
)
@click.option("--max-fold-fraction", type=float, help="Most fold a kept tile may hold (0.5).")
@click.option(
    "--blur-map",
    type=click.Choice(["remove", "keep", "off"]),
    help="Out-of-focus areas of the slide: remove, keep (only measure; default), off.",
)
@click.option("--max-blur-fraction", type=float, help="Most out-of-focus area per tile (0.5).")
@click.option("--roi-method", type=click.Choice(["auto", "inside", "outside", "ignore"]))
@click.option(
    "--roi-fraction", type=float, help="Fraction of a tile inside the ROI (else: centre)."
)
@click.option(
    "--roi-dir", type=click.Path(path_type=Path, file_okay=False), help="Folder of ROI files."
)
@click.option("--img-format", type=click.Choice(["jpeg", "png"]))
@click.option("--quality", type=int, help="JPEG quality (default 95).")
@click.option(
    "--jpeg-subsampling",
    type=click.Choice(["444", "420"]),
    help="Chroma subsampling of encoded JPEG tiles: 444 (default, full colour detail) or 420 "
    "(Slideflow's; smaller, decodes faster).",
)
@click.option("--jpeg-passthrough/--no-jpeg-passthrough", default=None)
@click.option("--mpp", "mpp_override", type=float, help="Microns per pixel for every slide.")
@click.option(
    "--normalizer",
    type=click.Choice(["reinhard", "reinhard_mask", "macenko", "vahadane"]),
    help="Stain normalisation of every tile before encoding.",
)
@click.option(
    "--normalizer-source",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Reference IMAGE to fit the normaliser to (or a saved .json fit).",
)
@click.option(
    "--resizer",
    type=click.Choice(["auto", "pillow", "vips"]),
    help="Lanczos resize by libvips (faster; tilestream[vips]) or Pillow; auto: vips if installed.",
)
@click.option(
    "--grid",
    type=click.Choice(["snap", "exact"]),
    help="snap (default): a tile within 1% of a pyramid level's native tiles is read as "
    "tile-px native pixels, not resized (e.g. 256 px / 128 um at 0.499 um/px: 256 px, "
    "Slideflow's grid); the microns a tile covers are recorded. exact: the exact size, resized.",
)
@click.option("--workers", type=int, help="Processes (default: all cores).")
@click.option("--threads", type=int, help="Threads per slide.")
@click.option("--overwrite", is_flag=True, help="Re-extract complete slides.")
@click.option("--to-images", is_flag=True, help="Write loose images instead of TFRecords.")
@click.option("--cluster", help="Run on a local Dask cluster: local:N (needs tilestream[dask]).")
@click.option(
    "--scheduler", help="Run on a running Dask scheduler (or set DASK_SCHEDULER_ADDRESS)."
)
@click.option(
    "--retries",
    type=int,
    default=2,
    show_default=True,
    help="Dask retries of a task that hit a transient error or lost its worker.",
)
@storage_option
@click.option(
    "--stage",
    type=click.Choice(list(STAGE_MODES)),
    default="auto",
    show_default=True,
    help="Slide URLs: read by range (never), copy to local scratch first (always), or by format.",
)
@click.option(
    "--scratch",
    type=click.Path(file_okay=False),
    help="With --out URL: the local folder slides are extracted into before upload "
    "(default $TILESTREAM_SCRATCH or the temporary folder; on Dask each worker's own).",
)
@click.option(
    "--force-lease",
    is_flag=True,
    help="With --out on a store without conditional writes (S3 and GCS have them): run without an exclusive "
    "lease (make sure no other run writes the same folder).",
)
@click.option("--no-progress", is_flag=True)
def extract_cmd(
    slides: tuple[str, ...],
    out_dir: str,
    roi_dir: Path | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    no_progress: bool,
    cluster: str | None,
    scheduler: str | None,
    retries: int,
    storage_options: dict[str, Any] | None,
    stage: str,
    scratch: str | None,
    force_lease: bool,
    **opts: Any,
) -> None:
    """Extract tiles from SLIDES (files, folders, DICOMweb series URLs or a CSV with a 'slide' column).

    A slide that fails is recorded with its reason and the others go on.
    Re-running the same command skips the slides already complete. One run
    at a time per output folder: a second one is refused, naming the first.

    \b
    Exit codes:
      0  every slide extracted (or already complete)
      1  some slides failed (listed at the end; the others are complete)
      2  nothing ran: invalid options or slide list, or the output folder
         is not writable, full, or in use by another run
      3  a bug in tilestream (traceback printed; please report it)
    """
    try:
        run = _run(
            slides, out_dir, opts, workers=workers, threads=threads, overwrite=overwrite,
            to_images=to_images, roi_dir=roi_dir, no_progress=no_progress, cluster=cluster,
            scheduler=scheduler, retries=retries,
            remote={"storage_options": storage_options, "stage": stage, "scratch": scratch,
                    "force_lease": force_lease},
        )  # fmt: skip
    except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
        raise
    except TileStreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except Exception:
        click.echo(traceback.format_exc(), err=True)
        click.secho(
            f"internal error: a bug in tilestream {__version__}; please report it at "
            f"{ISSUES_URL} with the traceback above.",
            fg="red",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_BUG) from None
    print_summary(run)
    if run.bugs:
        report_bugs(run.bugs)
        raise click.exceptions.Exit(EXIT_BUG)
    if run.failed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _run(
    slides: tuple[str, ...],
    out_dir: str,
    opts: dict[str, Any],
    *,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    to_images: bool,
    roi_dir: Path | None,
    no_progress: bool,
    cluster: str | None,
    scheduler: str | None,
    retries: int,
    remote: dict[str, Any],
) -> ExtractionRun:
    config = _config_from_options(opts)
    with contextlib.ExitStack() as stack:
        executor = None
        if cluster or scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"):
            from tilestream.distributed import dask_executor

            dask = stack.enter_context(
                dask_executor(cluster=cluster, scheduler=scheduler, retries=retries)
            )
            executor = dask.executor
            console.print(
                f"Dask: {dask.workers} workers; dashboard: {dask.dashboard_link or 'not served'}",
                soft_wrap=True,
            )
        callback = stack.enter_context(progress_bar(not no_progress))
        run = extract_slides(
            slides,
            out_dir if is_url(out_dir) else Path(out_dir),
            config=config,
            executor=executor,
            workers=workers,
            threads=threads,
            overwrite=overwrite,
            to_images=to_images,
            roi_dir=roi_dir,
            progress=callback,
            **remote,
        )
    return run


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="tilestream-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to write the demo outputs.",
)
def demo_cmd(out_dir: Path) -> None:
    """Extract the bundled sample slide and read a few tiles back."""
    console.print(
        "[bold]tilestream demo[/]: extracting the bundled CMU-1-Small-Region.svs "
        "(Aperio, CC0) at 256 px / 128 um"
    )
    with progress_bar() as callback:
        result = run_demo(out_dir, progress=callback)
    run = result.run
    print_summary(run)
    if run.failed:
        raise click.exceptions.Exit(1)
    table = Table(title=f"tiles read back through TFRecord: {result.tfrecord.name}")
    for col in ("record", "slide", "loc_x", "loc_y", "shape", "mean RGB"):
        table.add_column(col)
    for s in result.samples:
        table.add_row(
            str(s["index"]),
            s["slide"],
            str(s["loc_x"]),
            str(s["loc_y"]),
            "x".join(map(str, s["shape"])),
            ", ".join(map(str, s["mean_rgb"])),
        )
    console.print(table)
    outputs = slide_outputs(run.run_dir, Path(DEMO_SLIDE).stem)
    console.print(
        "Look at:\n"
        f"  preview  {outputs['preview']}  (kept tiles green, rejected red)\n"
        f"  report   {run.run_dir / REPORT_FILE}\n"
        f"  tiles    {result.tfrecord}  (+ .index.npz, .coords.csv)\n"
        f"  inspect  tilestream inspect {result.tfrecord}",
        soft_wrap=True,
    )


def register(group: click.Group) -> None:
    """Add the commands to the root group."""
    group.add_command(extract_cmd)
    group.add_command(demo_cmd)
