"""``tilestream slide``: inspect slides, write thumbnails and regions.

``tilestream slide info SLIDE... [--json]`` prints each slide's metadata (a rich
table, or JSON); ``tilestream slide thumbnail SLIDE --out PNG [--size N]`` writes a
thumbnail; ``tilestream slide region SLIDE --x --y --width --height
(--level L | --mag M | --mpp U) --out PNG`` writes one region.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from PIL import Image
from rich.console import Console
from rich.table import Table

from tilestream._util.atomic import atomic_path
from tilestream.cli._storage import storage_option
from tilestream.errors import ConfigError, SlideError, TileStreamError
from tilestream.slide import Slide, available_backends, open_slide

__all__ = ["register", "slide_summary"]

console = Console()

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}


def slide_summary(slide: Slide) -> dict[str, Any]:
    """The metadata ``slide info`` reports, as JSON-ready values."""
    mpp = slide.mpp
    icc = slide.color_profile
    return {
        "path": str(slide.path),
        "backend": slide.backend,
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "level_count": slide.level_count,
        "level_dimensions": [list(d) for d in slide.level_dimensions],
        "level_downsamples": [round(d, 6) for d in slide.level_downsamples],
        "tile_size": list(slide.tile_size) if slide.tile_size else None,
        "mpp": list(mpp) if mpp else None,
        "objective_power": slide.objective_power,
        "bounds": list(slide.bounds),
        "background_color": list(slide.background_color),
        "associated_images": sorted(slide.associated_images),
        "color_profile_bytes": len(icc) if icc else None,
        "properties": len(slide.properties),
    }


def _summary_table(info: dict[str, Any]) -> Table:
    table = Table(title=info["path"], show_header=False, title_justify="left")
    table.add_column("field", style="bold cyan")
    table.add_column("value")
    w, h = info["dimensions"]
    levels = ", ".join(
        f"{lw}x{lh} (/{ds:g})"
        for (lw, lh), ds in zip(info["level_dimensions"], info["level_downsamples"], strict=True)
    )
    mpp = info["mpp"]
    rows = [
        ("backend", info["backend"]),
        ("vendor", info["vendor"] or "-"),
        ("dimensions", f"{w} x {h}"),
        ("levels", f"{info['level_count']}: {levels}"),
        ("tile size", "x".join(map(str, info["tile_size"])) if info["tile_size"] else "not tiled"),
        ("mpp (um/px)", f"{mpp[0]:.4g} x {mpp[1]:.4g}" if mpp else "unknown (pass --slide-mpp)"),
        ("objective", f"{info['objective_power']:g}x" if info["objective_power"] else "-"),
        ("bounds", " ".join(map(str, info["bounds"]))),
        ("background", "#{:02x}{:02x}{:02x}".format(*info["background_color"])),
        ("associated", ", ".join(info["associated_images"]) or "-"),
        (
            "ICC profile",
            f"{info['color_profile_bytes']} bytes" if info["color_profile_bytes"] else "-",
        ),
        ("properties", str(info["properties"])),
    ]
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def _save_image(image: Image.Image, out: Path) -> None:
    fmt = _IMAGE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the image format from {out.name!r}: use .png, .jpg or .tif",
            path=out,
        )
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    with atomic_path(out) as tmp:
        image.save(tmp, format=fmt)


def _read_scaled(
    slide: Slide, x: int, y: int, width: int, height: int, scale: dict[str, float]
) -> Image.Image:
    """``width x height`` output pixels at ``scale`` from level-0 ``(x, y)`` (clipped to the slide)."""
    extent = slide.convert_region_scale(
        {"left": 0, "top": 0, "width": width, "height": height, "units": "mag_pixels"},
        source_scale=scale,
        target_units="base_pixels",
        crop_to_image=False,
    )
    area = {
        "left": x,
        "top": y,
        "width": float(extent["width"]),
        "height": float(extent["height"]),
        "units": "base_pixels",
    }
    image = slide.region(area, scale=scale, format="pil")
    assert isinstance(image, Image.Image)
    return image


def register(group: click.Group) -> None:
    """Add ``tilestream slide ...`` to the root group."""

    backend_option = click.option(
        "--backend",
        type=click.Choice(["auto", *available_backends()]),
        default="auto",
        show_default=True,
        help="Slide reader.",
    )
    slide_mpp_option = click.option(
        "--slide-mpp",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Override the slide's resolution (microns per pixel at level 0).",
    )

    @group.group("slide")
    def slide_group() -> None:
        """Inspect whole-slide images: metadata, thumbnails, regions."""

    @slide_group.command("info")
    @click.argument("slides", nargs=-1, required=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
    @backend_option
    @slide_mpp_option
    @storage_option
    def info(
        slides: tuple[str, ...],
        as_json: bool,
        backend: str,
        slide_mpp: float | None,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Print the metadata of one or more slides (files or URLs: s3://, gs://, https://)."""
        results: list[dict[str, Any]] = []
        errors: list[TileStreamError] = []
        for path in slides:
            try:
                with open_slide(
                    path, backend=backend, mpp=slide_mpp, storage_options=storage_options
                ) as slide:
                    summary = slide_summary(slide)
                    if as_json:
                        summary["properties"] = dict(slide.properties)
            except TileStreamError as exc:
                errors.append(exc)
                results.append({"path": str(path), "error": str(exc)})
                if not as_json:
                    console.print(f"[red]error:[/red] {exc}", highlight=False)
                continue
            results.append(summary)
            if not as_json:
                console.print(_summary_table(summary))
        if as_json:
            click.echo(json.dumps(results if len(slides) > 1 else results[0], indent=2))
        if len(errors) == 1 and len(slides) == 1:
            raise errors[0]
        if errors:
            raise SlideError(f"{len(errors)} of {len(slides)} slides could not be read")

    @slide_group.command("thumbnail")
    @click.argument("slide_path", metavar="SLIDE")
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="Output image.")
    @click.option(
        "--size",
        type=click.IntRange(min=1),
        default=1024,
        show_default=True,
        help="Largest side of the thumbnail in pixels.",
    )
    @backend_option
    @storage_option
    def thumbnail(
        slide_path: str,
        out: Path,
        size: int,
        backend: str,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Write a thumbnail of SLIDE (a file or URL)."""
        with open_slide(slide_path, backend=backend, storage_options=storage_options) as slide:
            image = slide.get_thumbnail((size, size))
        _save_image(image, out)
        console.print(f"wrote {out} ({image.width}x{image.height})", highlight=False)

    @slide_group.command("region")
    @click.argument("slide_path", metavar="SLIDE")
    @click.option("--x", "x", type=int, required=True, help="Left edge, level-0 pixels.")
    @click.option("--y", "y", type=int, required=True, help="Top edge, level-0 pixels.")
    @click.option(
        "--width", type=click.IntRange(min=1), required=True, help="Output width in pixels."
    )
    @click.option(
        "--height", type=click.IntRange(min=1), required=True, help="Output height in pixels."
    )
    @click.option("--level", type=click.IntRange(min=0), default=None, help="Pyramid level.")
    @click.option(
        "--mag",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Magnification (e.g. 10 for 10x).",
    )
    @click.option(
        "--mpp",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Resolution in microns per pixel.",
    )
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="Output image.")
    @backend_option
    @slide_mpp_option
    @storage_option
    def region(
        slide_path: str,
        x: int,
        y: int,
        width: int,
        height: int,
        level: int | None,
        mag: float | None,
        mpp: float | None,
        out: Path,
        backend: str,
        slide_mpp: float | None,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Write a region of SLIDE: top-left (--x, --y) in level-0 pixels, size in output pixels.

        The scale is one of --level (a pyramid level, as OpenSlide's read_region:
        RGBA, transparent outside the slide), --mag (a magnification; needs the
        slide's objective power or resolution) or --mpp (microns per pixel; needs
        the slide's resolution, or --slide-mpp). With --mag/--mpp the region is
        read from the best level and resized with antialiasing (the library's
        Slide.region), RGB, and clipped to the slide.
        """
        chosen = [name for name, v in (("--level", level), ("--mag", mag), ("--mpp", mpp)) if v]
        if level == 0:
            chosen.insert(0, "--level")
        if len(chosen) != 1:
            raise click.UsageError("give exactly one of --level, --mag or --mpp")
        with open_slide(
            slide_path, backend=backend, mpp=slide_mpp, storage_options=storage_options
        ) as slide:
            if level is not None:
                if level >= slide.level_count:
                    raise ConfigError(
                        f"--level {level}: the slide has {slide.level_count} levels "
                        f"(0..{slide.level_count - 1})",
                        path=slide.path,
                    )
                image = slide.read_region((x, y), level, (width, height))
            elif mag is not None:
                image = _read_scaled(slide, x, y, width, height, {"magnification": mag})
            else:
                assert mpp is not None
                slide.require_mpp()
                image = _read_scaled(slide, x, y, width, height, {"mm_x": mpp / 1000.0})
        _save_image(image, out)
        console.print(f"wrote {out} ({image.width}x{image.height})", highlight=False)
