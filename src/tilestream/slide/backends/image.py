"""The ``image`` backend: plain images through Pillow (like OpenSlide's ``ImageSlide``).

One level, no tiles; the image is decoded once, on the first pixel read.

Examples
--------
>>> ImageBackend.available()
True
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from tilestream.errors import CorruptSlideError, SlideError, UnsupportedSlideError
from tilestream.slide.backends.base import SlideBackend

__all__ = ["ImageBackend"]

#: Largest image (pixels) the image backend decodes into memory.
MAX_PIXELS = 1 << 30


class ImageBackend(SlideBackend):
    """A plain image (PNG, JPEG, BMP, flat TIFF...) as a one-level slide."""

    name = "image"
    priority = 30

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        super().__init__(path, cache_bytes=cache_bytes)
        self._lock = threading.Lock()
        self._pixels: NDArray[np.uint8] | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns on odd files; we raise
                with Image.open(path) as image:
                    self._size = (int(image.width), int(image.height))
                    self._format = (image.format or "image").lower()
                    self._icc: bytes | None = image.info.get("icc_profile") or None
                    self._frames = int(getattr(image, "n_frames", 1))
        except UnidentifiedImageError as exc:
            raise UnsupportedSlideError("not an image Pillow can identify", path=path) from exc
        except Image.DecompressionBombError as exc:  # declared larger than Pillow decodes
            raise UnsupportedSlideError(f"too large a flat image: {exc}", path=path) from exc
        except OSError as exc:
            raise SlideError(f"cannot read the image: {exc}", path=path) from exc
        if self._size[0] * self._size[1] > MAX_PIXELS:
            raise UnsupportedSlideError(
                f"a {self._size[0]}x{self._size[1]} flat image is too large to decode whole; "
                "convert it to a tiled pyramidal TIFF",
                path=path,
            )
        # The image is decoded whole (Pillow holds RGB as 4 bytes a pixel).
        self.limits.check_region(*self._size, 4, path=path, what="the flat image, decoded whole,")
        self._properties = {
            "openslide.level-count": "1",
            "openslide.level[0].width": str(self._size[0]),
            "openslide.level[0].height": str(self._size[1]),
            "openslide.level[0].downsample": "1",
            "tilestream.format": self._format,
        }

    @classmethod
    def detect_format(cls, path: Path) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns on odd files; we raise
                with Image.open(path) as image:
                    return (image.format or "image").lower()
        except Exception:
            return None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self._size,)

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def vendor(self) -> str | None:
        return None

    @property
    def color_profile(self) -> bytes | None:
        return self._icc

    def _load(self) -> NDArray[np.uint8]:
        with self._lock:
            if self._pixels is None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # Pillow warns on odd files; we raise
                        with Image.open(self.path) as image:
                            rgb = image.convert("RGB")
                except (OSError, ValueError, SyntaxError) as exc:
                    raise CorruptSlideError(
                        f"cannot decode the image: {exc}", path=self.path
                    ) from exc
                self._pixels = np.asarray(rgb)
            return self._pixels

    def read_level_rgb(self, level: int, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        return self._load()[y : y + h, x : x + w]

    def close(self) -> None:
        self._pixels = None
