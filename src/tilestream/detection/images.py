"""Image bytes for ``image/encoded``: JPEG and PNG copied as they are, others to PNG.

The size is read from the file header (no decode); a structural check catches
truncated JPEG and PNG files (a missing end marker) without decoding them.
``decode=True`` decodes every image fully for a stricter check.

Examples
--------
>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (6, 4)).save(buf, "BMP")
>>> img = load_image_bytes(buf.getvalue())
>>> img.format, img.width, img.height, img.data[:4]
('png', 6, 4, b'\\x89PNG')
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

__all__ = ["ImageBytes", "ImageReadError", "load_image_bytes"]

_JPEG_SOI = b"\xff\xd8\xff"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


class ImageReadError(Exception):
    """An image cannot be used (the converter turns this into a problem)."""


@dataclass(frozen=True)
class ImageBytes:
    """Bytes ready for ``image/encoded`` and what they are."""

    data: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int
    reencoded: bool


def _jpeg_complete(data: bytes) -> bool:
    # The EOI marker normally ends the file; some writers append a few bytes.
    return data.rfind(b"\xff\xd9", max(0, len(data) - 65536)) != -1


def _png_complete(data: bytes) -> bool:
    return data.rfind(b"IEND", max(0, len(data) - 64)) != -1


def load_image_bytes(data: bytes, *, decode: bool = False) -> ImageBytes:
    """Turn a file's bytes into ``image/encoded`` bytes.

    Parameters
    ----------
    data
        The file's content.
    decode
        Decode the pixels fully to check the image (slower).

    Raises
    ------
    ImageReadError
        When the data is empty, truncated, or not an image Pillow can read.
    """
    if not data:
        raise ImageReadError("the image file is empty")
    if data.startswith(_JPEG_SOI):
        fmt = "jpeg"
        complete = _jpeg_complete(data)
    elif data.startswith(_PNG_SIG):
        fmt = "png"
        complete = _png_complete(data)
    else:
        fmt, complete = "", True
    if not complete:
        raise ImageReadError(f"truncated {fmt.upper()} (no end marker)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if decode or not fmt:
                    im.load()
                if fmt:
                    return ImageBytes(data, fmt, width, height, reencoded=False)
                im.seek(0)
                if im.mode not in {"1", "L", "LA", "RGB", "RGBA", "I;16", "P"}:
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                out = io.BytesIO()
                im.save(out, format="PNG")
                return ImageBytes(out.getvalue(), "png", width, height, reencoded=True)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"not a readable image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"image too large ({exc})") from exc
