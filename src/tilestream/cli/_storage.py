"""The ``--storage-option KEY=VALUE`` option every command that takes a URL shares.

Values are JSON where they parse as JSON (``true``, ``8``, ``{"a": 1}``) and
strings otherwise; a dotted key nests (``client_kwargs.region_name=eu-west-1``
gives ``{"client_kwargs": {"region_name": "eu-west-1"}}``). The options go to
fsspec (:func:`tilestream.storage.store_for`); credentials are better left to
the environment or ``~/.aws``, since a command line is visible to other users.

Examples
--------
>>> parse_storage_options(["endpoint_url=http://127.0.0.1:8333", "anon=true"])
{'endpoint_url': 'http://127.0.0.1:8333', 'anon': True}
>>> parse_storage_options(["client_kwargs.region_name=eu-west-1"])
{'client_kwargs': {'region_name': 'eu-west-1'}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from tilestream.storage import is_url

__all__ = ["PathOrURL", "parse_storage_options", "storage_option"]

F = TypeVar("F", bound=Callable[..., Any])


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a (nested) options dict; a malformed item is a usage error."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise click.BadParameter(
                f"expected KEY=VALUE, got {item.split('=')[0]!r}...",
                param_hint="--storage-option",
            )
        target = options
        for part in parts[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise click.BadParameter(
                    f"{key!r}: {part!r} is already a value", param_hint="--storage-option"
                )
            target = nested
        target[parts[-1]] = _value(value)
    return options


def storage_option(func: F) -> F:
    """Add ``--storage-option KEY=VALUE`` (repeatable), passed on as ``storage_options``."""

    def _callback(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> Any:
        return parse_storage_options(value) or None

    return click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_callback,
        help="An fsspec option for s3://, gs:// and http(s):// URLs (repeatable; "
        "credentials are better left to the environment or ~/.aws).",
    )(func)


class PathOrURL(click.ParamType):
    """A URL (``s3://``, ``gs://``, ``http(s)://``), kept whole, or a path checked like ``click.Path``.

    ``click.Path`` would fold a URL's ``//`` and refuse it as a missing file.
    """

    name = "path_or_url"

    def __init__(self, **path_options: Any) -> None:
        self._path = click.Path(**path_options)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The URL as given, or what ``click.Path`` makes of a path."""
        if isinstance(value, str) and is_url(value):
            return value
        return self._path.convert(value, param, ctx)
