"""The colour-management methods of :class:`~tilestream.slide.Slide` (``color="srgb"``).

The ICC transform is built once per slide, on first use (building one costs
far more than applying it); :mod:`tilestream.slide.color` is imported only then.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

if TYPE_CHECKING:
    from tilestream.slide.color import ColorTransform

__all__ = ["ColorMethods"]


class ColorMethods:
    """ICC -> sRGB conversion of a slide's pixels (the ``color=`` option of ``open_slide``)."""

    path: Path | str
    _color: str | None
    _color_transform: ColorTransform | None
    _color_lock: threading.Lock

    if TYPE_CHECKING:

        @property
        def color_profile(self) -> bytes | None: ...

    def color_transform(self) -> ColorTransform | None:
        """The ICC -> sRGB transform of this slide (built once), ``None`` without a profile."""
        if self._color_transform is None and self.color_profile is not None:
            with self._color_lock:
                if self._color_transform is None:
                    from tilestream.slide.color import ColorTransform

                    self._color_transform = ColorTransform(self.color_profile, path=self.path)
        return self._color_transform

    def _apply_color_array(self, rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if self._color is None:
            return rgb
        transform = self.color_transform()
        return rgb if transform is None else transform.apply_array(rgb)

    def _color_image(self, image: Image.Image) -> Image.Image:
        transform = self.color_transform()
        return image if transform is None else transform.apply(image)
