"""HTTP plumbing of the viewer: errors, safe paths, query parameters, streamed files.

Every bad request is an :class:`HTTPError` the server answers with its status
and a one-line JSON ``{"error": ...}``. Query parameters are validated here
(finite, integral, in range); files are sent in chunks (never read whole), with
a single ``Range`` honoured.

Examples
--------
>>> int_param({"x": ["12"]}, "x", low=0, high=100)
12
>>> int_param({"x": ["inf"]}, "x", low=0, high=100)
Traceback (most recent call last):
...
tilestream.viewer.httpio.HTTPError: parameter 'x' must be a finite number, not 'inf'
>>> parse_range("bytes=10-19", 100), parse_range("bytes=-5", 100), parse_range("bytes=90-", 100)
((10, 20), (95, 100), (90, 100))
>>> parse_range("bytes=100-", 100) is UNSATISFIABLE, parse_range("bytes=0-1,4-5", 100)
(True, None)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Final

__all__ = [
    "CHUNK",
    "UNSATISFIABLE",
    "HTTPError",
    "int_param",
    "number_param",
    "parse_range",
    "safe_join",
]

#: Bytes read from a file and written to the socket at a time.
CHUNK = 256 * 1024


class HTTPError(Exception):
    """An error answered with ``status`` and a one-line JSON message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def safe_join(base: Path, relative: str) -> Path:
    """``base / relative`` if it stays inside ``base`` once symlinks are resolved.

    Raises
    ------
    HTTPError
        403 for ``..``, absolute paths, backslashes, NUL bytes or a resolved path outside
        ``base``; 404 when there is no such file.

    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> _ = (base / "a.txt").write_text("x")
    >>> safe_join(base, "a.txt").name
    'a.txt'
    >>> safe_join(base, "../etc/passwd")
    Traceback (most recent call last):
    ...
    tilestream.viewer.httpio.HTTPError: path outside the served folder
    """
    parts = relative.split("/")
    if (
        "\x00" in relative
        or "\\" in relative
        or relative.startswith("/")
        or any(p == ".." for p in parts)
        or (len(relative) > 1 and relative[1] == ":")
    ):
        raise HTTPError(403, "path outside the served folder")
    root = base.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise HTTPError(403, "path outside the served folder")
    if not candidate.is_file():
        raise HTTPError(404, "no such file")
    return candidate


def _text(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return repr(shown)


def number_param(
    query: dict[str, list[str]],
    name: str,
    *,
    low: float,
    high: float,
    default: float | None = None,
) -> float:
    """The finite number ``query[name]`` in ``[low, high]`` (``default`` when absent).

    Raises
    ------
    HTTPError
        400 when it is missing (without a default), not a number, not finite or out of range.
    """
    values = query.get(name)
    if not values:
        if default is None:
            raise HTTPError(400, f"missing parameter {name!r}")
        return default
    raw = values[0]
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        raise HTTPError(400, f"parameter {name!r} is not a number: {_text(raw)}") from None
    if not math.isfinite(number):
        raise HTTPError(400, f"parameter {name!r} must be a finite number, not {_text(raw)}")
    if not low <= number <= high:
        raise HTTPError(400, f"parameter {name!r} must be in [{low:g}, {high:g}], not {_text(raw)}")
    return number


def int_param(
    query: dict[str, list[str]],
    name: str,
    *,
    low: int,
    high: int,
    default: int | None = None,
) -> int:
    """The integer ``query[name]`` in ``[low, high]`` (``default`` when absent).

    Raises
    ------
    HTTPError
        400 when it is missing (without a default), not an integer or out of range.
    """
    number = number_param(
        query, name, low=low, high=high, default=None if default is None else float(default)
    )
    if number != int(number):
        raise HTTPError(400, f"parameter {name!r} must be an integer, not {_text(query[name][0])}")
    return int(number)


class _Unsatisfiable:
    def __repr__(self) -> str:
        return "UNSATISFIABLE"


#: :func:`parse_range`'s answer for a valid range holding none of the file (416).
UNSATISFIABLE: Final = _Unsatisfiable()

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | _Unsatisfiable | None:
    """The ``[start, stop)`` byte span one ``Range`` header asks of a ``size``-byte file.

    ``None`` when there is no header or it is not one valid byte range (the whole
    file is then sent, as RFC 9110 asks); :data:`UNSATISFIABLE` when the range holds
    no byte of the file.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            return UNSATISFIABLE
        return (max(0, size - n), size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    stop = size if not last else int(last) + 1
    return (start, min(stop, size))
