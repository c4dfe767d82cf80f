"""The ``openslide`` backend: OpenSlide (openslide-python + openslide-bin).

Reads every format OpenSlide reads (Aperio, Hamamatsu, Leica, MIRAX, Philips,
Sakura, Trestle, Ventana, Zeiss, DICOM, generic tiled TIFF). OpenSlide *latches*
its first read error on a handle; this backend reopens the handle after a
failed read so one damaged tile does not poison the rest of the slide.

OpenSlide allocates in C: it decodes whole stored tiles (4 bytes a pixel) into
its own tile cache and whole associated images, and glib aborts the process
when such an allocation fails. What can be bounded from here is: the stored
tile size every level declares (checked when the slide is opened, against
:class:`~tilestream.slide.limits.SlideLimits` ``tile_bytes``), the regions we
ask for (``region_bytes``, checked by :class:`~tilestream.slide.Slide`) and the
associated images' declared sizes (checked here before OpenSlide decodes them).

Examples
--------
>>> OpenSlideBackend.available()
True
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.errors import CorruptSlideError, SlideError, UnsupportedSlideError
from tilestream.slide.backends.base import SlideBackend

__all__ = ["OpenSlideBackend"]


def _openslide() -> Any:
    import openslide

    return openslide


class OpenSlideBackend(SlideBackend):
    """Slides through OpenSlide."""

    name = "openslide"
    priority = 20

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        super().__init__(path, cache_bytes=cache_bytes)
        self._lock = threading.Lock()
        self._osr = self._open()
        try:
            self._level_dimensions = tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)
            self._level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
            self._properties = {str(k): str(v) for k, v in self._osr.properties.items()}
            self._associated = tuple(self._osr.associated_images.keys())
            profile = self._osr.color_profile
            self._icc = profile.tobytes() if profile is not None else None
        except Exception as exc:
            self._osr.close()
            raise UnsupportedSlideError(
                f"OpenSlide cannot read its metadata: {type(exc).__name__}: {exc}", path=path
            ) from exc

    def _open(self) -> Any:
        openslide = _openslide()
        try:
            osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise UnsupportedSlideError(
                "not a format OpenSlide reads (unsupported or missing image file)", path=self.path
            ) from exc
        except openslide.OpenSlideError as exc:
            raise UnsupportedSlideError(f"OpenSlide cannot open it: {exc}", path=self.path) from exc
        except OSError as exc:  # pragma: no cover - e.g. permissions raced away
            raise SlideError(f"cannot read the file: {exc}", path=self.path) from exc
        return osr

    @classmethod
    def available(cls) -> bool:
        try:
            _openslide()
        except Exception:  # ImportError, or OSError when the library is missing
            return False
        return True

    @classmethod
    def detect_format(cls, path: Path) -> str | None:
        try:
            fmt = _openslide().OpenSlide.detect_format(str(path))
        except Exception:
            return None
        return str(fmt) if fmt else None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._level_downsamples

    def level_tile_size(self, level: int) -> tuple[int, int] | None:
        try:
            return (
                int(self._properties[f"openslide.level[{level}].tile-width"]),
                int(self._properties[f"openslide.level[{level}].tile-height"]),
            )
        except (KeyError, ValueError):
            return None

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def color_profile(self) -> bytes | None:
        return self._icc

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return self._associated

    def read_associated_image(self, name: str) -> Image.Image:
        openslide = _openslide()
        try:  # OpenSlide decodes it whole, in C: check its declared size first
            width = int(self._properties[f"openslide.associated.{name}.width"])
            height = int(self._properties[f"openslide.associated.{name}.height"])
        except (KeyError, ValueError):
            pass
        else:
            self.limits.check_region(
                width, height, 4, path=self.path, what=f"associated image {name!r}"
            )
        with self._lock:
            try:
                image = self._osr.associated_images[name]
            except openslide.OpenSlideError as exc:
                self._reopen()
                raise CorruptSlideError(
                    f"cannot read associated image {name!r}: {exc}", path=self.path
                ) from exc
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, None, image)
        return background

    def read_region_rgba(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        openslide = _openslide()
        with self._lock:
            try:
                image = self._osr.read_region(location, level, size)
            except (openslide.OpenSlideError, ValueError, KeyError) as exc:
                self._reopen()
                raise CorruptSlideError(
                    f"cannot read region at {location} level {level} size {size}: {exc}",
                    path=self.path,
                ) from exc
        return np.asarray(image)

    def _reopen(self) -> None:
        # OpenSlide latched the error on this handle: replace it with a fresh one.
        try:
            self._osr.close()
        finally:
            self._osr = self._open()

    def close(self) -> None:
        with self._lock:
            self._osr.close()
