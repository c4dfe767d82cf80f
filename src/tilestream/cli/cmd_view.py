"""``tilestream view PATH``: a local web viewer of slides and extracted tiles.

``PATH`` is a slide, a folder of slides, or an extraction output folder, or a
URL: a slide object (``s3://bucket/slides/a.svs``, ``https://host/a.svs``), a
run folder in a store (``s3://bucket/out/256px_128um``) or a DICOMweb series,
with ``--storage-option KEY=VALUE`` for the store (never shown). The
server listens on loopback (``--host 127.0.0.1``) by default and prints its URL;
Ctrl-C (``SIGINT``) or ``SIGTERM`` stops it (see :func:`serve_until_signalled`).
Off loopback it requires a random access token, printed in the URL
(``?token=...``); ``--token`` asks for one on loopback too, ``--no-token``
runs without one off loopback (anyone who can reach it sees everything). See
:mod:`tilestream.viewer`.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from tilestream.cli._storage import storage_option
from tilestream.viewer import ViewerServer, is_loopback
from tilestream.viewer.httpd import MAX_CONNECTIONS, REQUEST_TIMEOUT

__all__ = ["STOP_SIGNALS", "register", "serve_until_signalled"]

#: Signals that stop the viewer cleanly (exit status 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

console = Console()
err_console = Console(stderr=True)


def register(group: click.Group) -> None:
    """Add ``tilestream view`` to the root group."""

    @group.command("view")
    @click.argument("path")  # not click.Path: it folds the "//" of s3://
    @click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
                  help="Port to listen on (0: any free port).")  # fmt: skip
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on (loopback: only this computer).")  # fmt: skip
    @click.option("--roi-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                  help="Folder of <slide>.geojson/.json/.csv ROI files to draw.")  # fmt: skip
    @click.option("--token/--no-token", "token", default=None,
                  help="Require a random access token (printed in the URL); the default "
                  "off loopback. --no-token: none, even off loopback (insecure).")  # fmt: skip
    @click.option("--timeout", type=click.FloatRange(0, min_open=True), default=REQUEST_TIMEOUT,
                  show_default=True, help="Seconds a request may take to arrive, and an idle "
                  "connection may stay open.")  # fmt: skip
    @click.option("--max-connections", type=click.IntRange(1), default=MAX_CONNECTIONS,
                  show_default=True, help="Connections answered at once (more get 503).")  # fmt: skip
    @storage_option
    def view(
        path: str,
        port: int,
        host: str,
        roi_dir: Path | None,
        token: bool | None,
        timeout: float,
        max_connections: int,
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Browse slides, their tile grids and extracted tiles in a web browser.

        PATH: a slide, a folder of slides, a run folder or a folder of runs, or a URL:
        a slide object (s3://bucket/slides/a.svs, https://host/a.svs), a run folder in
        a store (s3://bucket/out/256px_128um) or a DICOMweb series
        (dicomweb+https://.../studies/<UID>/series/<UID>).
        """
        server = ViewerServer(
            path,
            host=host,
            port=port,
            roi_dir=roi_dir,
            token=token,
            request_timeout=timeout,
            max_connections=max_connections,
            storage_options=storage_options,
        )
        slides = len(server.app.catalog.entries)
        console.print(f"tilestream viewer: {slides} slide{'s' * (slides != 1)} from {path}")
        if not is_loopback(host):
            if server.token is None:
                err_console.print(
                    f"[bold red]WARNING: listening on {host} WITHOUT an access token "
                    "(--no-token): anyone who can reach this computer sees every slide, "
                    "label image, property and TFRecord served.[/]"
                )
            else:
                console.print(
                    f"[yellow]listening on {host}: reachable from other computers, "
                    "with the access token in the URL below (keep it secret)[/]"
                )
        # plain and flushed: scripts and tests wait for this line on a pipe
        click.echo(f"open {server.open_url}  (Ctrl-C to stop)")
        if host in ("0.0.0.0", "::", ""):  # every interface: the URL from elsewhere
            name = socket.gethostname()
            click.echo(
                f"  or {server.open_url.replace(server.url, f'http://{name}:{server.address[1]}/')}"
            )
        sys.stdout.flush()
        try:
            serve_until_signalled(server)
            console.print("stopped")
        finally:
            server.close()


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler of a stop signal: the wakeup byte does the work."""


def serve_until_signalled(server: ViewerServer, signals: Sequence[int] = STOP_SIGNALS) -> int:
    """Serve on a background thread until one of ``signals`` arrives; return its number.

    The main thread waits on the signal wakeup fd (:func:`signal.set_wakeup_fd`),
    which the interpreter's C-level handler writes whichever thread the kernel
    delivers the signal to, with no Python code in between. Waiting for a
    ``KeyboardInterrupt`` to surface in ``serve_forever`` instead lost the
    signal now and then on a loaded machine (the handler had run, no signal was
    pending, and the server went on serving). A signal ignored when the viewer
    started (``SIG_IGN``, as for a background job) stays ignored. The previous
    handlers are back before this returns (a second Ctrl-C while the server
    closes interrupts as usual). Off the main thread, where signal handlers
    cannot be set, this is ``serve_forever`` until ``KeyboardInterrupt``.

    Examples
    --------
    >>> import os, threading
    >>> from tilestream.extract import demo_slide_path
    >>> server = ViewerServer(demo_slide_path(), port=0)
    >>> timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    >>> timer.start()
    >>> serve_until_signalled(server) == signal.SIGTERM
    True
    >>> server.close()
    """
    if threading.current_thread() is not threading.main_thread():
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return signal.SIGINT
        return 0
    wanted = {int(s) for s in signals if signal.getsignal(s) is not signal.SIG_IGN}
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # the C handler must never block on a full buffer
    previous = {s: signal.getsignal(s) for s in wanted}
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        for s in wanted:
            signal.signal(s, _ignore)
        server.start()
        while True:
            for byte in reader.recv(64):
                if byte in wanted:
                    return byte
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, left as it was
                signal.signal(s, handler)
        reader.close()
        writer.close()
