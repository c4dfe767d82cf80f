"""``tilestream view PATH``: a local web viewer of slides and extracted tiles.

``PATH`` is a slide, a folder of slides, or an extraction output folder. The
server listens on loopback (``--host 127.0.0.1``) by default and prints its URL;
Ctrl-C stops it. See :mod:`tilestream.viewer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from tilestream.viewer import ViewerServer

__all__ = ["register"]

console = Console()


def register(group: click.Group) -> None:
    """Add ``tilestream view`` to the root group."""

    @group.command("view")
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
                  help="Port to listen on (0: any free port).")  # fmt: skip
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on (loopback: only this computer).")  # fmt: skip
    @click.option("--roi-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                  help="Folder of <slide>.geojson/.json/.csv ROI files to draw.")  # fmt: skip
    def view(path: Path, port: int, host: str, roi_dir: Path | None) -> None:
        """Browse slides, their tile grids and extracted tiles in a web browser."""
        server = ViewerServer(path, host=host, port=port, roi_dir=roi_dir)
        slides = len(server.app.catalog.entries)
        console.print(f"tilestream viewer: {slides} slide{'s' * (slides != 1)} from {path}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]listening on {host}: reachable from other computers[/]")
        # plain and flushed: scripts and tests wait for this line on a pipe
        click.echo(f"open {server.url}  (Ctrl-C to stop)")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("stopped")
        finally:
            server.close()
