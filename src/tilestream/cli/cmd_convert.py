"""``tilestream convert``: object-detection data sets to OD API TFRecords, and back."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["register"]


def _common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--out",
            "out_dir",
            required=True,
            type=click.Path(file_okay=False),
            help="Output folder for the TFRecords, label map and summary.",
        ),
        click.option(
            "--label-map",
            type=click.Path(exists=True, dir_okay=False),
            help="label_map.pbtxt to use (default: built from the classes).",
        ),
        click.option(
            "--add-unknown",
            is_flag=True,
            help="Add classes missing from --label-map instead of failing.",
        ),
        click.option(
            "--split",
            default=None,
            help="Fractions, e.g. 0.8,0.1,0.1 (train,valid,test) or train=0.9,val=0.1.",
        ),
        click.option(
            "--shards",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="Files per split (train.tfrecord-00000-of-0000N).",
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            type=int,
            help="Seed of the split and record order.",
        ),
        click.option("--no-shuffle", is_flag=True, help="Keep annotation order within a split."),
        click.option(
            "--on-error",
            type=click.Choice(["fail", "skip", "clip"]),
            default="fail",
            show_default=True,
            help="fail: list every problem, write nothing; skip: leave out images with "
            "problems; clip: clip boxes, drop what cannot be repaired.",
        ),
        click.option("--skip-empty", is_flag=True, help="Leave out images with no objects."),
        click.option(
            "--jpeg-format",
            type=click.Choice(["jpeg", "jpg"]),
            default="jpeg",
            show_default=True,
            help="image/format value for JPEG (jpg = what the tutorial script writes).",
        ),
        click.option("--decode-images", is_flag=True, help="Fully decode images to check them."),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Threads reading and hashing images (default: CPU count).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace existing output files."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run(reader: Callable[[], Any], options: dict[str, Any]) -> None:
    from tilestream.detection import convert

    console = Console(stderr=True)
    out_dir = options.pop("out_dir")
    options["shuffle"] = not options.pop("no_shuffle")
    source = reader()
    with Progress(
        TextColumn("[bold]converting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("convert", total=len(source.images))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = convert(source, out_dir, progress=progress, **options)
    _print_summary(summary)


def _print_summary(summary: Any) -> None:
    console = Console()
    splits = list(summary.splits.values())
    table = Table(title=f"{summary.format} -> {summary.out_dir}")
    for col in ("split", "files", "images", "negatives", "objects"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for s in splits:
        table.add_row(s.name, str(len(s.files)), str(s.images), str(s.negatives), str(s.objects))
    console.print(table)
    classes = Table(title="objects per class")
    classes.add_column("id", justify="right")
    classes.add_column("class")
    for s in splits:
        classes.add_column(s.name, justify="right")
    items = list(summary.label_map)
    for item in items[:50]:
        classes.add_row(
            str(item.id), item.name, *(str(s.classes.get(item.name, 0)) for s in splits)
        )
    console.print(classes)
    if len(items) > 50:
        console.print(f"({len(items) - 50} more classes in summary.json)")
    console.print(
        f"{summary.images} images in {summary.seconds:.1f} s; skipped {summary.skipped_images} "
        f"(problems) + {summary.skipped_empty} (empty); dropped objects "
        f"{summary.dropped_objects}; clipped boxes {summary.clipped_boxes}; "
        f"re-encoded to PNG {summary.reencoded_images}"
    )
    if summary.problems:
        console.print(f"[yellow]{len(summary.problems)} problem(s) tolerated:[/yellow]")
        for p in summary.problems[:20]:
            console.print(f"  {p}", markup=False, highlight=False, soft_wrap=True)
        if len(summary.problems) > 20:
            console.print(f"  ... and {len(summary.problems) - 20} more (README.md in the output)")


def _images_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--images", "images_dir", type=click.Path(exists=True, file_okay=False), help=help
    )


@click.command("voc")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--image-set", default=None, help="Only the ids in ImageSets/Main/<SET>.txt.")
@_common_options
def voc(data_dir: str, image_set: str | None, **options: Any) -> None:
    """PASCAL VOC XML (Annotations/ + JPEGImages/, or XML beside images)."""
    from tilestream.detection import read_voc

    _run(functools.partial(read_voc, data_dir, image_set=image_set), options)


@click.command("coco")
@click.argument("annotations", type=click.Path(exists=True, dir_okay=False))
@_images_option("Folder the file_names are relative to (default: the JSON's folder).")
@click.option(
    "--masks",
    "include_masks",
    is_flag=True,
    help="Add image/object/mask PNGs from polygons and RLE.",
)
@click.option(
    "--keep-category-ids",
    is_flag=True,
    help="Without --label-map, use the COCO category ids as label ids.",
)
@_common_options
def coco(annotations: str, images_dir: str | None, **options: Any) -> None:
    """COCO instances JSON."""
    from tilestream.detection import read_coco

    _run(functools.partial(read_coco, annotations, images_dir=images_dir), options)


@click.command("csv")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@_images_option("Folder of the images (default: the CSV's folder).")
@_common_options
def csv(labels: str, images_dir: str | None, **options: Any) -> None:
    """TF Object Detection CSV: filename,width,height,class,xmin,ymin,xmax,ymax."""
    from tilestream.detection import read_csv

    _run(functools.partial(read_csv, labels, images_dir=images_dir), options)


@click.command("yolo")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--classes",
    type=click.Path(exists=True, dir_okay=False),
    help="classes.txt / obj.names (default: found in DATA_DIR).",
)
@_common_options
def yolo(data_dir: str, classes: str | None, **options: Any) -> None:
    """YOLO / Darknet text labels (class cx cy w h, normalised)."""
    from tilestream.detection import read_yolo

    _run(functools.partial(read_yolo, data_dir, classes=classes), options)


@click.command("tfrecord-to-coco")
@click.argument("records", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The COCO JSON file to write.",
)
@click.option(
    "--label-map",
    type=click.Path(exists=True, dir_okay=False),
    help="Category names from this label map (default: class/text).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def to_coco(
    records: tuple[str, ...], out_path: str, label_map: str | None, overwrite: bool
) -> None:
    """OD API TFRecords back to a COCO instances JSON."""
    from tilestream.detection import write_coco
    from tilestream.errors import ConfigError

    if Path(out_path).exists() and not overwrite:
        raise ConfigError(f"{out_path} exists; pass --overwrite to replace it")
    files: list[str] = []
    for r in records:
        if os.path.isdir(r):
            files.extend(sorted(str(p) for p in Path(r).glob("*.tfrecord*")))
        else:
            files.append(r)
    coco = write_coco(files, out_path, label_map=label_map)
    Console().print(
        f"{len(coco['images'])} images, {len(coco['annotations'])} annotations, "
        f"{len(coco['categories'])} categories -> {out_path}"
    )


def register(group: click.Group) -> None:
    """Add ``convert`` and its subcommands to the root group."""

    @group.group("convert")
    def convert_group() -> None:
        """Object-detection data sets (VOC, COCO, CSV, YOLO) to TF Object Detection TFRecords."""

    for command in (voc, coco, csv, yolo, to_coco):
        convert_group.add_command(command)
