"""ICC colour management: convert a slide's pixels from its ICC profile to sRGB.

The transform is built once per slide (:meth:`tilestream.slide.Slide.color_transform`)
and reused for every region; building one costs far more than applying it.

Examples
--------
>>> from PIL import Image, ImageCms
>>> srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
>>> transform = ColorTransform(srgb)
>>> transform.apply(Image.new("RGB", (2, 2), (10, 120, 200))).getpixel((0, 0))
(10, 120, 200)
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms

from tilestream.errors import SlideError

__all__ = ["ColorTransform"]


class ColorTransform:
    """An ICC profile -> sRGB transform (LittleCMS through Pillow), built once.

    Parameters
    ----------
    icc_profile
        The raw ICC profile of the source pixels.
    path
        The slide the profile comes from (named in errors).
    intent
        Rendering intent; by default the profile's own.
    """

    def __init__(
        self,
        icc_profile: bytes,
        *,
        path: str | os.PathLike[str] | None = None,
        intent: ImageCms.Intent | None = None,
    ) -> None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            if intent is None:
                intent = ImageCms.Intent(ImageCms.getDefaultIntent(source))
            self._rgb = ImageCms.buildTransform(source, target, "RGB", "RGB", intent)
            self._rgba = ImageCms.buildTransform(source, target, "RGBA", "RGBA", intent)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            raise SlideError(f"invalid ICC colour profile: {exc}", path=path) from exc
        self.intent = intent
        self._lock = threading.Lock()  # LittleCMS transforms are not re-entrant safe

    def apply(self, image: Image.Image) -> Image.Image:
        """Convert an RGB or RGBA image to sRGB (a new image; alpha kept)."""
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        transform = self._rgba if image.mode == "RGBA" else self._rgb
        with self._lock:
            result = ImageCms.applyTransform(image, transform)
        assert result is not None
        return result

    def apply_array(self, rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Convert an RGB uint8 ``(h, w, 3)`` array to sRGB."""
        return np.asarray(self.apply(Image.fromarray(rgb, "RGB")))
