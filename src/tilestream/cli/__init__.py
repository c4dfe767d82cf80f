"""The ``tilestream`` command line: a thin layer over the library.

Every subcommand lives in a module ``tilestream.cli.cmd_<name>`` that defines
``register(group)``; modules are discovered at start-up, so each layer's
commands sit beside each other without a central list. Only this package
prints; the library reports through return values, callbacks and logging.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from tilestream import __version__
from tilestream.errors import TileStreamError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tilestream")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """tilestream: whole-slide images to tile datasets, and TFRecords streamed back fast."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            module.register(cli)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; our own errors become a one-line message and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="tilestream", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except TileStreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
