"""Checks every slide read shares: a path that can be opened, errors named for the file.

:func:`check_path` refuses what is not a readable regular file before any
backend sees it; :func:`reading` turns a dependency failing on damaged data
into :class:`~tilestream.errors.CorruptSlideError` naming the file and what
was being read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tilestream.errors import CorruptSlideError, SlideError, SlideNotFoundError

__all__ = ["PathLike", "check_path", "reading"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def reading(path: Path, what: str, *args: object) -> Iterator[None]:
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
