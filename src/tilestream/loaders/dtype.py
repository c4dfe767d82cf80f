"""Convert tiles between numpy, PyTorch and TensorFlow layouts, as Slideflow does.

==================  ==========================================================
``dtype``           image
==================  ==========================================================
``np.uint8``        RGB, height x width x channels (HWC), uint8
``np.float32``      HWC, standardised ``img / 127.5 - 1`` (from a TensorFlow
                    source: per-image standardisation, like ``tf.float32``)
``torch.uint8``     RGB, channels first (CHW), uint8
``torch.float32``   CHW, standardised ``img / 127.5 - 1``
``tf.uint8``        HWC uint8 tensor
``tf.float32``      HWC, ``tf.image.per_image_standardization``
==================  ==========================================================

A batch (a leading axis) converts the same way (NHWC / NCHW). Per-image
standardisation cannot be undone, so a ``tf.float32`` image does not convert to
uint8.

Examples
--------
>>> import numpy as np
>>> img = np.array([[[0, 127, 255]]], dtype=np.uint8)
>>> convert_dtype(img, np.float32).astype(float).round(3).tolist()
[[[-1.0, -0.004, 1.0]]]
>>> convert_dtype(convert_dtype(img, np.float32), np.uint8).tolist()
[[[0, 127, 255]]]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from tilestream.errors import ConfigError

__all__ = ["convert_dtype", "per_image_standardization"]


def _framework(obj: Any) -> str:
    module = type(obj).__module__ or ""
    if module.startswith("torch"):
        return "torch"
    if module.startswith(("tensorflow", "tf_keras", "keras")):
        return "tf"
    return "numpy"


def per_image_standardization(img: np.ndarray) -> np.ndarray:
    """``tf.image.per_image_standardization`` in numpy, per image of an HWC image or NHWC batch.

    Examples
    --------
    >>> import numpy as np
    >>> per_image_standardization(np.array([[[0, 2]]], dtype=np.uint8)).tolist()
    [[[-1.0, 1.0]]]
    """
    x = np.asarray(img, dtype=np.float32)
    axes = tuple(range(x.ndim - 3, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    n = np.prod([x.shape[a] for a in axes])
    adjusted = np.maximum(std, np.float32(1.0 / np.sqrt(n)))
    return ((x - mean) / adjusted).astype(np.float32)


def _check_rank(arr: np.ndarray) -> None:
    if arr.ndim not in (3, 4):
        raise ConfigError(
            f"an image must be 3-D (one image) or 4-D (a batch), got shape {arr.shape}"
        )


def _target(dtype: Any) -> tuple[str, bool]:
    """(framework, is_float) of a target dtype."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        if dtype == torch.uint8:
            return "torch", False
        if dtype == torch.float32:
            return "torch", True
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(dtype, tf.dtypes.DType):
        if dtype == tf.uint8:
            return "tf", False
        if dtype == tf.float32:
            return "tf", True
    try:
        npd = np.dtype(dtype)
    except TypeError:
        npd = None
    if npd == np.uint8:
        return "numpy", False
    if npd == np.float32:
        return "numpy", True
    raise ConfigError(
        f"cannot convert to {dtype!r}: use np.uint8, np.float32, torch.uint8, torch.float32, "
        "tf.uint8 or tf.float32"
    )


def convert_dtype(img: Any, dtype: Any) -> Any:
    """Convert an image or a batch of images to ``dtype`` (see the module table).

    Parameters
    ----------
    img
        A numpy array (HWC/NHWC, uint8 or standardised float), a torch tensor
        (CHW/NCHW, uint8 or standardised float) or a TensorFlow tensor (HWC/NHWC,
        uint8 or per-image-standardised float).
    dtype
        One of ``np.uint8``, ``np.float32``, ``torch.uint8``, ``torch.float32``,
        ``tf.uint8``, ``tf.float32``.

    Returns
    -------
    numpy.ndarray, torch.Tensor or tf.Tensor

    Raises
    ------
    ConfigError
        For an unknown dtype, a non-image shape, or a TensorFlow float image to uint8.
    """
    kind, want_float = _target(dtype)
    src = _framework(img)
    # Bring the source to numpy HWC, and note what its values mean.
    if src == "torch":
        arr = img.detach().cpu().numpy()
        _check_rank(arr)
        arr = np.moveaxis(arr, -3, -1)
    elif src == "tf":
        arr = img.numpy()
        _check_rank(arr)
    else:
        arr = np.asarray(img)
        _check_rank(arr)
    src_float = arr.dtype != np.uint8
    if src_float and not np.issubdtype(arr.dtype, np.floating):
        raise ConfigError(f"an image must be uint8 or float, got {arr.dtype}")
    if src == "tf" and src_float and not want_float:
        raise ConfigError(
            "a TensorFlow float image is per-image standardised, which cannot be undone: "
            "convert from the uint8 image instead"
        )

    if not want_float:
        if src_float:
            arr = np.clip(np.rint((arr.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        out = arr
    elif kind == "tf" or src == "tf":
        if src_float and src == "tf":
            out = arr.astype(np.float32)
        else:
            uint8 = arr if not src_float else convert_dtype(arr, np.uint8)
            out = per_image_standardization(uint8)
    elif src_float:
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32) / np.float32(127.5) - np.float32(1.0)

    if kind == "numpy":
        return np.ascontiguousarray(out)
    if kind == "torch":
        torch = sys.modules["torch"]
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, -1, -3)))
    tf = sys.modules["tensorflow"]
    if want_float and not (src == "tf" and src_float):
        # Use TensorFlow's own op so results match a tf.data pipeline exactly.
        uint8 = arr if not src_float else convert_dtype(arr, np.uint8)
        return tf.image.per_image_standardization(tf.convert_to_tensor(uint8))
    return tf.convert_to_tensor(out)
