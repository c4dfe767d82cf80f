"""Random tile augmentation with Slideflow's letters, reproducible from a seed.

========  =======================================================
letter    augmentation
========  =======================================================
``x``     horizontal flip, 50% chance
``y``     vertical flip, 50% chance
``r``     rotation by a random multiple of 90 degrees
``j``     JPEG recompression, 50% chance, quality 50-100
``b``     Gaussian blur, 10% chance, sigma 0.5-2.0
``n``     stain augmentation: normalise towards a randomly perturbed
          stain target (needs a stain ``normalizer``, see
          :func:`resolve_normalizer`); applied by the parsers in place
          of plain normalisation
========  =======================================================

``True`` means ``"xyrjb"``. All randomness comes from the
:class:`numpy.random.Generator` passed in, drawn in a fixed order, so the same
seed gives the same augmented tiles.

Examples
--------
>>> import numpy as np
>>> parse_augment(True)
'xyrjb'
>>> img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
>>> a = augment_image(img, "xyr", np.random.default_rng(7))
>>> b = augment_image(img, "xyr", np.random.default_rng(7))
>>> bool((a == b).all()) and a.shape == img.shape
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tilestream.errors import ConfigError

__all__ = ["ALL_AUGMENTATIONS", "augment_image", "parse_augment", "resolve_normalizer"]

#: What ``augment=True`` means.
ALL_AUGMENTATIONS = "xyrjb"
_KNOWN = "xyrjbn"


def parse_augment(augment: bool | str | None) -> str:
    """Validate an ``augment`` option and return its letters in canonical order.

    Raises
    ------
    ConfigError
        For unknown letters.

    Examples
    --------
    >>> parse_augment("rx")
    'xr'
    >>> parse_augment(False)
    ''
    >>> parse_augment("nx")
    'xn'
    """
    if augment is None or augment is False:
        return ""
    if augment is True:
        return ALL_AUGMENTATIONS
    if not isinstance(augment, str):
        raise ConfigError(f"augment must be True, False or a string of letters, got {augment!r}")
    unknown = sorted(set(augment) - set(_KNOWN))
    if unknown:
        raise ConfigError(
            f"unknown augmentation letter(s) {''.join(unknown)!r} in {augment!r}; "
            f"known: x, y, r, j, b, n"
        )
    return "".join(letter for letter in _KNOWN if letter in augment)


def resolve_normalizer(normalizer: Any, augment: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """Check a ``normalizer`` option against the augmentation letters.

    Parameters
    ----------
    normalizer
        None, a method name for :func:`tilestream.norm.build_normalizer`
        (``"reinhard"``, ``"macenko"``, ...), a
        :class:`tilestream.norm.StainNormalizer`, or any callable on a uint8
        HWC image.
    augment
        Letters from :func:`parse_augment`.

    Returns
    -------
    callable or None

    Raises
    ------
    ConfigError
        ``n`` without a stain normaliser (one with an ``augment(image, rng)`` method).

    Examples
    --------
    >>> resolve_normalizer(None, "xy") is None
    True
    >>> resolve_normalizer(None, "n")
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: augmentation 'n' (stain augmentation) needs a stain normalizer, e.g. normalizer='reinhard'
    """
    if isinstance(normalizer, str):
        from tilestream.norm import build_normalizer

        normalizer = build_normalizer(normalizer)
    if normalizer is not None and not callable(normalizer):
        raise ConfigError(f"normalizer must be a method name or a callable, got {normalizer!r}")
    if "n" in augment and not callable(getattr(normalizer, "augment", None)):
        raise ConfigError(
            "augmentation 'n' (stain augmentation) needs a stain normalizer, "
            "e.g. normalizer='reinhard'"
        )
    return normalizer


def normalize_image(
    img: np.ndarray,
    normalizer: Callable[[np.ndarray], np.ndarray] | None,
    augment: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stain-normalise one image: towards a random target with ``n``, else the fitted one."""
    if normalizer is None:
        return img
    img = np.ascontiguousarray(img)
    if "n" in augment:
        return normalizer.augment(img, rng)  # type: ignore[attr-defined]
    return normalizer(img)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import simplejpeg

    data = simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace="RGB")
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def augment_image(img: np.ndarray, augment: str, rng: np.random.Generator) -> np.ndarray:
    """Augment one uint8 RGB image (height, width, 3).

    Parameters
    ----------
    img
        The image, HWC uint8.
    augment
        Letters from :func:`parse_augment`.
    rng
        Source of randomness. Each letter draws from it in a fixed order,
        whether or not its augmentation fires, so streams stay in step.

    Returns
    -------
    numpy.ndarray
        The augmented image (maybe a view of ``img``; flips and rotations do not copy).
    """
    if not augment:
        return img
    if "x" in augment and rng.random() < 0.5:
        img = img[:, ::-1]
    if "y" in augment and rng.random() < 0.5:
        img = img[::-1]
    if "r" in augment:
        k = int(rng.integers(4))
        if k:
            img = np.rot90(img, k)
    if "j" in augment:
        fire, quality = rng.random() < 0.5, int(rng.integers(50, 101))
        if fire:
            img = _jpeg(img, quality)
    if "b" in augment:
        fire, sigma = rng.random() < 0.1, float(rng.uniform(0.5, 2.0))
        if fire:
            img = _blur(np.ascontiguousarray(img), sigma)
    return img
