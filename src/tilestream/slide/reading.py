"""Checks every slide read shares: a path that can be opened, errors named for the file.

:func:`check_location` tells a slide URL (``scheme://...``, read by a backend
declaring that scheme in ``url_schemes``) from a file, and :func:`check_path`
refuses what is not a readable regular file before any backend sees it;
:func:`reading` turns a dependency failing on damaged data into
:class:`~tilestream.errors.CorruptSlideError` naming the file (or the URL,
without credentials) and what was being read.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tilestream.errors import CorruptSlideError, SlideError, SlideNotFoundError

__all__ = [
    "PathLike",
    "SlideLocation",
    "check_location",
    "check_path",
    "reading",
    "safe_location",
    "url_scheme",
]

PathLike = str | os.PathLike[str]
#: Where a slide is: a local file, or a URL (a ``str`` with a scheme, e.g. ``dicomweb+https://``).
SlideLocation = Path | str

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(location: object) -> str | None:
    """The lower-case scheme of a URL string (``dicomweb+https``...), ``None`` for a path.

    Examples
    --------
    >>> url_scheme("dicomweb+https://host/dicom-web/studies/1/series/2"), url_scheme("a/b.svs")
    ('dicomweb+https', None)
    """
    if not isinstance(location, str):
        return None
    match = _URL.match(location)
    return match.group(1).lower() if match else None


def safe_location(location: SlideLocation) -> Path | str:
    """What may be shown of a location: a path as is, a URL without userinfo or query.

    Examples
    --------
    >>> safe_location("dicomweb+https://me:pw@host/dw/studies/1?token=x")
    'dicomweb+https://host/dw/studies/1'
    """
    if url_scheme(location) is None:
        return location
    parts = urllib.parse.urlsplit(str(location))
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_location(location: PathLike) -> SlideLocation:
    """A URL string kept as is (its backend checks it), else :func:`check_path`."""
    if url_scheme(location) is not None:
        return str(location)
    return check_path(location)


@contextlib.contextmanager
def reading(path: Path | str, what: str, *args: object) -> Iterator[None]:
    """Turn a dependency failing on damaged data into :class:`CorruptSlideError`.

    The message is ``what.format(*args)``, built only when something failed.
    :class:`SlideError` and :class:`MemoryError` pass through unchanged.
    """
    try:
        yield
    except (SlideError, MemoryError):
        raise
    except Exception as exc:
        raise CorruptSlideError(
            f"cannot read {what.format(*args)}: {type(exc).__name__}: {exc}", path=path
        ) from exc


def check_path(path: PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` once it is a readable regular file.

    Raises
    ------
    SlideNotFoundError
        No such file.
    SlideError
        A directory, a FIFO or device, or unreadable (permission denied...).
    """
    p = Path(path)
    if not p.exists():
        raise SlideNotFoundError("no such slide file", path=p)
    if p.is_dir():
        raise SlideError("is a directory, not a slide file", path=p)
    if not p.is_file():  # a FIFO or device would block or never end
        raise SlideError("not a regular file", path=p)
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise SlideError(f"cannot read the file: {exc.strerror or exc}", path=p) from exc
    return p
