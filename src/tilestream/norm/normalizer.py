"""The :class:`StainNormalizer`: fit, transform, stain augmentation, fits as JSON.

Examples
--------
>>> import numpy as np
>>> from tilestream.norm import StainNormalizer
>>> rng = np.random.default_rng(0)
>>> tile = np.clip(rng.normal((190, 120, 170), 25, (64, 64, 3)), 0, 255).astype(np.uint8)
>>> norm = StainNormalizer("reinhard")
>>> out = norm.transform(tile)
>>> out.shape, out.dtype
((64, 64, 3), dtype('uint8'))
>>> white = np.full((64, 64, 3), 250, np.uint8)
>>> bool((norm.transform(white) == white).all()), norm.skipped
(True, 1)
>>> fit = norm.fit(tile).get_fit()
>>> sorted(fit)
['method', 'target_means', 'target_stds']
>>> StainNormalizer("reinhard").set_fit(fit).get_fit() == fit
True
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tilestream._util.atomic import write_json_atomic
from tilestream.errors import ConfigError
from tilestream.norm import methods as m
from tilestream.norm._color import rgb_to_lab
from tilestream.norm.presets import AUGMENT_SPREADS, DEFAULT_FITS, METHODS

__all__ = ["FitSource", "StainNormalizer"]

#: What :meth:`StainNormalizer.fit` accepts: an image, a batch, several images or an image file.
FitSource = NDArray[np.uint8] | Sequence[NDArray[np.uint8]] | str | os.PathLike[str]

_KEYS = {
    "reinhard": ("target_means", "target_stds"),
    "reinhard_mask": ("target_means", "target_stds"),
    "macenko": ("stain_matrix", "max_concentrations"),
    "vahadane": ("stain_matrix", "max_concentrations"),
}
_SHAPES = {
    "target_means": (3,),
    "target_stds": (3,),
    "stain_matrix": (2, 3),
    "max_concentrations": (2,),
}
_DEFAULT_IO = {"macenko": 240.0, "vahadane": 255.0}


def _read_image(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise ConfigError("reference image not found", path=path) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the reference image: {exc}", path=path) from exc


def _check_image(img: Any, what: str) -> NDArray[np.uint8]:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ConfigError(f"{what} must be uint8 RGB, got dtype {arr.dtype}")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ConfigError(
            f"{what} must be (height, width, 3) or (n, height, width, 3) RGB, got shape {arr.shape}"
        )
    return arr


class StainNormalizer:
    """H&E stain normaliser and stain augmenter.

    Parameters
    ----------
    method
        ``"reinhard"`` (LAB means and standard deviations), ``"reinhard_mask"``
        (the same on tissue only; background pixels are left as they are),
        ``"macenko"`` (optical-density SVD) or ``"vahadane"`` (sparse
        non-negative factorisation).
    fit
        A fit from :meth:`get_fit` to start from (default: the shipped
        reference, :data:`tilestream.norm.presets.DEFAULT_FITS`).
    io
        Transmitted light intensity for optical density (Macenko 240 like
        torchstain, Vahadane 255).
    alpha
        Macenko's angular percentile (1: the 1st and 99th percentiles).
    beta
        Optical density below which a channel counts as transparent (background).
    black
        Macenko and Vahadane ignore pixels whose channels are all below this
        level when estimating stains (black padding, pen, dust: their optical
        density is noise). 0 keeps them, as torchstain does.
    min_tissue
        Images with a smaller fraction of tissue pixels (or fewer than 64) are
        returned unchanged and counted in :attr:`skipped`; a fit on such an
        image is an error.

    Notes
    -----
    Tiles that are nearly white, nearly uniform, or give a degenerate stain
    estimate are returned unchanged (never NaN) and counted in
    :attr:`skipped`. A normaliser is thread-safe, pickles (into data-loader
    workers) and is callable: ``norm(img)`` is ``norm.transform(img)``.
    """

    def __init__(
        self,
        method: str = "macenko",
        fit: Mapping[str, Any] | None = None,
        *,
        io: float | None = None,
        alpha: float = 1.0,
        beta: float = 0.15,
        black: int = 16,
        min_tissue: float = 0.05,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(
                f"unknown stain normalisation method {method!r}; known: {', '.join(METHODS)}"
            )
        if not 0.0 <= min_tissue <= 1.0:
            raise ConfigError(f"min_tissue must be in [0, 1], got {min_tissue!r}")
        if not 0.0 <= alpha < 50.0:
            raise ConfigError(f"alpha must be in [0, 50), got {alpha!r}")
        self.method = method
        self.io = float(io) if io is not None else _DEFAULT_IO.get(method, 255.0)
        if not 1.0 < self.io <= 1000.0:
            raise ConfigError(f"io must be in (1, 1000], got {io!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        if not 0 <= int(black) <= 255:
            raise ConfigError(f"black must be in [0, 255], got {black!r}")
        self.black = int(black)
        self.min_tissue = float(min_tissue)
        self._fit: dict[str, NDArray[np.float64]] = {}
        self._lock = threading.Lock()
        self._skipped = 0
        self._normalized = 0
        self.set_fit(DEFAULT_FITS[method] if fit is None else fit)

    # ------------------------------------------------------------------ state

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StainNormalizer({self.method!r})"

    @property
    def skipped(self) -> int:
        """How many images were returned unchanged (background, uniform, degenerate)."""
        return self._skipped

    @property
    def normalized(self) -> int:
        """How many images were normalised (or augmented)."""
        return self._normalized

    def reset_counts(self) -> None:
        """Set :attr:`skipped` and :attr:`normalized` back to 0."""
        with self._lock:
            self._skipped = self._normalized = 0

    def _count(self, skipped: int, normalized: int) -> None:
        with self._lock:
            self._skipped += skipped
            self._normalized += normalized

    # ------------------------------------------------------------------ fits

    def get_fit(self) -> dict[str, Any]:
        """The current fit as a JSON-ready dict (``method``, the values, and ``io`` for OD methods)."""
        out: dict[str, Any] = {"method": self.method}
        for key in _KEYS[self.method]:
            out[key] = self._fit[key].tolist()
        if self.method in _DEFAULT_IO:
            out["io"] = self.io
        return out

    def set_fit(self, fit: Mapping[str, Any]) -> StainNormalizer:
        """Set the fit from a dict like :meth:`get_fit`'s; returns ``self``.

        Raises
        ------
        ConfigError
            The dict is for another method, lacks a value or has a value of the wrong shape.
        """
        if not isinstance(fit, Mapping):
            raise ConfigError(f"a stain fit must be a mapping, got {type(fit).__name__}")
        other = fit.get("method", self.method)
        if other != self.method:
            raise ConfigError(f"this fit is for {other!r}, not {self.method!r}")
        unknown = sorted(set(fit) - {"method", "io", *_KEYS[self.method]})
        if unknown:
            raise ConfigError(f"unknown key(s) in a {self.method} fit: {', '.join(unknown)}")
        new: dict[str, NDArray[np.float64]] = {}
        for key in _KEYS[self.method]:
            if key not in fit:
                raise ConfigError(f"a {self.method} fit needs {key!r}")
            try:
                value = np.asarray(fit[key], np.float64)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key} is not numeric: {exc}") from exc
            if value.shape != _SHAPES[key] or not np.isfinite(value).all():
                raise ConfigError(
                    f"{key} must be finite numbers of shape {_SHAPES[key]}, got {value.tolist()!r}"
                )
            new[key] = value
        if "stain_matrix" in new:
            norms = np.linalg.norm(new["stain_matrix"], axis=1)
            if (norms < 1e-6).any():
                raise ConfigError("stain_matrix rows must be non-zero stain vectors")
            # rows already of unit length are kept as given: dividing by a norm that is
            # 1 within rounding changes the last bit and breaks the save/load round trip
            if np.abs(norms - 1.0).max() > 1e-12:
                new["stain_matrix"] = new["stain_matrix"] / norms[:, None]
        if "max_concentrations" in new and (new["max_concentrations"] <= 0).any():
            raise ConfigError("max_concentrations must be positive")
        if "target_stds" in new and (new["target_stds"] < 0).any():
            raise ConfigError("target_stds must not be negative")
        if "io" in fit and self.method in _DEFAULT_IO:
            io = fit["io"]
            if not isinstance(io, (int, float)) or isinstance(io, bool) or not 1.0 < io <= 1000.0:
                raise ConfigError(f"io must be a number in (1, 1000], got {io!r}")
            self.io = float(io)
        self._fit = new
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`get_fit` to a JSON file (atomically)."""
        write_json_atomic(path, self.get_fit())

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: Any) -> StainNormalizer:
        """A normaliser from a JSON fit written by :meth:`save`.

        Raises
        ------
        ConfigError
            The file is missing, not JSON or not a stain fit.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read stain fit: {exc.strerror or exc}", path=path) from exc
        except ValueError as exc:
            raise ConfigError(f"not a JSON stain fit: {exc}", path=path) from exc
        if not isinstance(data, dict) or data.get("method") not in METHODS:
            raise ConfigError(f"not a stain fit (needs a 'method' among {METHODS})", path=path)
        try:
            return cls(data["method"], data, **options)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=path) from exc

    def fit(self, image_or_images: FitSource) -> StainNormalizer:
        """Fit the target to reference pixels; returns ``self``.

        Parameters
        ----------
        image_or_images
            A uint8 RGB image ``(h, w, 3)``, a batch ``(n, h, w, 3)``, a list of
            images (pooled together) or the path of an image file.

        Raises
        ------
        ConfigError
            The reference has no tissue (nearly white or uniform), or is not an RGB image.
        """
        where = None
        if isinstance(image_or_images, (str, os.PathLike)):
            where = image_or_images
            images = [_read_image(image_or_images)]
        elif isinstance(image_or_images, np.ndarray):
            images = [_check_image(image_or_images, "a reference image")]
        else:
            images = [_check_image(img, "a reference image") for img in image_or_images]
            if not images:
                raise ConfigError("fit needs at least one reference image")
        pixels = np.concatenate([img.reshape(-1, 3) for img in images])
        try:
            self._fit = self._fit_pixels(np.ascontiguousarray(pixels))
        except ConfigError as exc:
            raise ConfigError(exc.message, path=where) from exc
        return self

    def _no_tissue(self, frac: float) -> ConfigError:
        return ConfigError(
            f"no tissue to fit the {self.method} stain normaliser to: {frac:.1%} of the "
            f"reference pixels are tissue (at least {self.min_tissue:.0%} and "
            f"{m.MIN_TISSUE_PIXELS} pixels needed; is the image blank or background?)"
        )

    def _fit_pixels(self, pixels: NDArray[np.uint8]) -> dict[str, NDArray[np.float64]]:
        if self.method in ("reinhard", "reinhard_mask"):
            lab = rgb_to_lab(pixels[None])
            means, stds, frac, _ = m.reinhard_stats(lab, masked=self.method == "reinhard_mask")
            n = float(frac[0]) * pixels.shape[0]
            if frac[0] < self.min_tissue or n < m.MIN_TISSUE_PIXELS:
                raise self._no_tissue(float(frac[0]))
            if stds[0].max() < m.UNIFORM_STD:
                raise ConfigError(
                    f"the reference is uniform in colour (LAB std {stds[0].round(2).tolist()}): "
                    f"no stain statistics to fit the {self.method} normaliser to"
                )
            return {"target_means": means[0], "target_stds": stds[0]}
        od, planes, mask = m.tissue_od(pixels, self.io, self.beta, self.black)
        if not m._enough(mask, self.min_tissue):
            raise self._no_tissue(float(mask.mean()) if mask.size else 0.0)
        est = m.macenko_estimate(planes, mask, alpha=self.alpha)
        if est is None:
            raise ConfigError(
                f"the reference gives no {self.method} stain estimate: its tissue is nearly "
                "uniform in colour (two stains are needed)"
            )
        if self.method == "macenko":
            return {"stain_matrix": est[0], "max_concentrations": est[2]}
        d = m.vahadane_estimate(planes, mask, init=est[0])
        max_c = None if d is None else m.vahadane_concentrations(od, d)
        if d is None or max_c is None:
            raise ConfigError("the reference gives no vahadane stain estimate (degenerate stains)")
        return {"stain_matrix": d, "max_concentrations": max_c}

    # ------------------------------------------------------------------ transform

    def transform(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Normalise one uint8 RGB image ``(h, w, 3)`` or a batch ``(n, h, w, 3)``.

        Each image is normalised on its own statistics, so a batch gives what
        its images give one by one. Images that cannot be normalised
        (background, uniform) come back unchanged and are counted in :attr:`skipped`.
        """
        return self._apply(image, None)

    __call__ = transform

    def augment(self, image: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
        """Stain augmentation: normalise towards a randomly perturbed target.

        Each fit value is perturbed by a normal draw with the spread in
        :data:`tilestream.norm.presets.AUGMENT_SPREADS` (stain matrix and
        concentrations for Macenko and Vahadane, LAB means and standard
        deviations for Reinhard); one draw per image, from ``rng`` only, so a
        seeded generator reproduces the result.
        """
        arr = _check_image(image, "an image to augment")
        n = 1 if arr.ndim == 3 else arr.shape[0]
        spread = AUGMENT_SPREADS[self.method]
        fits = []
        for _ in range(n):
            fit = {}
            for key in _KEYS[self.method]:
                base = self._fit[key]
                value = base + rng.normal(0.0, 1.0, base.shape) * np.asarray(spread[key])
                if key == "stain_matrix":
                    value = np.maximum(value, 1e-3)
                    value /= np.linalg.norm(value, axis=1, keepdims=True)
                elif key == "max_concentrations":
                    value = np.maximum(value, 0.05 * base)
                elif key == "target_stds":
                    value = np.maximum(value, 0.1 * base)
                fit[key] = value
            fits.append(fit)
        return self._apply(arr, fits)

    def _apply(
        self, image: NDArray[np.uint8], fits: list[dict[str, NDArray[np.float64]]] | None
    ) -> NDArray[np.uint8]:
        arr = _check_image(image, "an image to normalise")
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        n, h, w, _ = batch.shape
        flat = np.ascontiguousarray(batch).reshape(n, h * w, 3)
        if n == 0 or h * w == 0:
            return arr.copy()
        if self.method in ("reinhard", "reinhard_mask"):
            if fits is None:
                means, stds = self._fit["target_means"], self._fit["target_stds"]
            else:
                means = np.stack([f["target_means"] for f in fits])
                stds = np.stack([f["target_stds"] for f in fits])
            # Blocks of about 65,536 pixels keep the float temporaries in cache.
            step = max(1, 65536 // (h * w))
            out = np.empty_like(flat)
            skipped = 0
            for a in range(0, n, step):
                part = slice(a, a + step)
                out[part], skip = m.reinhard_transform(
                    flat[part],
                    means if means.ndim == 1 else means[part],
                    stds if stds.ndim == 1 else stds[part],
                    masked=self.method == "reinhard_mask",
                    min_tissue=self.min_tissue,
                )
                skipped += int(skip.sum())
        else:
            out = np.empty_like(flat)
            skipped = 0
            for i in range(n):
                fit = self._fit if fits is None else fits[i]
                res = self._one(flat[i], fit)
                if res is None:
                    out[i] = flat[i]
                    skipped += 1
                else:
                    out[i] = res
        self._count(skipped, n - skipped)
        result = out.reshape(n, h, w, 3)
        return result[0] if single else result

    def _one(
        self, pixels: NDArray[np.uint8], fit: Mapping[str, NDArray[np.float64]]
    ) -> NDArray[np.uint8] | None:
        if self.method == "macenko":
            return m.macenko_transform(
                pixels,
                fit["stain_matrix"],
                fit["max_concentrations"],
                io=self.io,
                alpha=self.alpha,
                beta=self.beta,
                black=self.black,
                min_tissue=self.min_tissue,
            )
        return m.vahadane_transform(
            pixels,
            fit["stain_matrix"],
            fit["max_concentrations"],
            io=self.io,
            beta=self.beta,
            black=self.black,
            min_tissue=self.min_tissue,
        )
