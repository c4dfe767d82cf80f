"""Names that become file names: which are safe, and whether a path stays inside its folder.

A slide's name is used as a file-name component of its outputs
(``<run>/<name>.tfrecords``, ``state/<name>.json``...). A name from a shared
slide list must not be able to point anywhere else.

Examples
--------
>>> name_problem("TCGA-01"), name_problem("../../escape")
(None, 'contains a path separator')
>>> portable_key("Slide-A") == portable_key("slide-a")
True
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "name_problem", "outside", "portable_key"]

#: Longest name in UTF-8 bytes: with ``.rejected.csv`` and a temporary file's
#: ``.<name>.<token>.tmp`` it stays under the usual 255-byte file-name limit.
MAX_NAME_BYTES = 200

# Control characters, format characters (bidi overrides, zero-width), line and
# paragraph separators, and surrogates (undecodable bytes from a file name).
_BAD_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a slide's output files; ``None`` when it can."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if name.startswith("."):
        return "starts with '.' (its outputs would be hidden files, which readers skip)"
    bad = next((c for c in name if unicodedata.category(c) in _BAD_CATEGORIES), None)
    if bad is not None:
        return f"contains the control or invisible character U+{ord(bad):04X}"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def portable_key(name: str) -> str:
    """``name`` as a case-insensitive, normalising file system (macOS, Windows) sees it."""
    return unicodedata.normalize("NFC", name).casefold()


def outside(root: str | os.PathLike[str], paths: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The first of ``paths`` that does not resolve to a file inside ``root``, else ``None``.

    The folder of each path is resolved (symbolic links followed); the file
    name itself must be a plain name (a link there is replaced, not followed,
    by an atomic write).

    >>> outside("/data/run", ["/data/run/a.json", "/data/run/state/../../b.json"])
    PosixPath('/data/run/state/../../b.json')
    """
    base = Path(os.path.realpath(root))
    for p in paths:
        path = Path(p)
        name = path.name
        parent = Path(os.path.realpath(path.parent))
        if name in ("", ".", "..") or not (parent == base or parent.is_relative_to(base)):
            return path
    return None
