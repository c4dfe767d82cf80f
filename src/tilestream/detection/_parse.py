"""Small readers the annotation parsers share: sizes, image extensions, UTF-8 text files.

Examples
--------
>>> positive_int(640.0), positive_int(True), positive_int(-3), positive_int("640")
(640, None, None, None)
>>> positive_int_text("640"), positive_int_text("640.5"), positive_int_text(""), positive_int_text(None)
(640, None, None, None)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tilestream.errors import AnnotationError

#: Extensions of the image files the folder readers (VOC, YOLO) look for.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def positive_int(value: object) -> int | None:
    """``value`` when it is a positive whole number (``int`` or ``float``, not ``bool``), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value <= 0 or value != int(value):
        return None
    return int(value)


def positive_int_text(text: str | None) -> int | None:
    """The positive whole number ``text`` spells (``"640"``, ``"640.0"``), else ``None``."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    # as positive_int, inline: called twice per image of a CSV
    if not math.isfinite(number) or number <= 0 or number != int(number):
        return None
    return int(number)


def read_utf8(path: str | os.PathLike[str], *, missing: str, unreadable: str) -> str:
    """The text of a UTF-8 file (a byte-order mark dropped).

    Raises
    ------
    AnnotationError
        ``missing`` when the file does not exist; ``unreadable: <why>`` when it
        cannot be read or is not UTF-8.
    """
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise AnnotationError(missing, path=path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{unreadable}: {exc}", path=path) from exc
