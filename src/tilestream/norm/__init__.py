"""H&E stain normalisation and stain augmentation: Reinhard, Macenko, Vahadane.

:class:`StainNormalizer` fits a target to reference tissue (or starts from the
shipped defaults in :mod:`tilestream.norm.presets`), transforms single uint8
RGB tiles or batches, perturbs the target for stain augmentation and saves its
fit as JSON. :func:`build_normalizer` makes one from a method name and an
optional reference (an image file or a saved fit), as the extraction and
loader options ``normalizer=`` / ``normalizer_source=`` do.

Examples
--------
>>> import numpy as np
>>> from tilestream.norm import StainNormalizer
>>> rng = np.random.default_rng(1)
>>> tiles = np.clip(rng.normal((180, 110, 160), 30, (2, 32, 32, 3)), 0, 255).astype(np.uint8)
>>> norm = StainNormalizer("macenko")
>>> out = norm.transform(tiles)
>>> out.shape == tiles.shape and bool((out[1] == norm.transform(tiles[1])).all())
True
>>> aug = norm.augment(tiles[0], np.random.default_rng(5))
>>> bool((aug == norm.augment(tiles[0], np.random.default_rng(5))).all())
True
"""

from __future__ import annotations

import os

from tilestream.norm.normalizer import FitSource, StainNormalizer
from tilestream.norm.presets import AUGMENT_SPREADS, DEFAULT_FITS, METHODS

__all__ = [
    "AUGMENT_SPREADS",
    "DEFAULT_FITS",
    "METHODS",
    "FitSource",
    "StainNormalizer",
    "build_normalizer",
]


def build_normalizer(method: str, source: str | os.PathLike[str] | None = None) -> StainNormalizer:
    """A normaliser for ``method``, fitted to ``source`` when given.

    Parameters
    ----------
    method
        One of :data:`METHODS`.
    source
        ``None`` (the shipped default target), a reference image file (fitted
        to) or a ``.json`` fit saved by :meth:`StainNormalizer.save`.

    Raises
    ------
    ConfigError
        Unknown method, unreadable source, a reference without tissue, or a
        saved fit for another method.

    Examples
    --------
    >>> build_normalizer("reinhard").get_fit()["target_means"]
    [58.12343, 26.483482, -12.701005]
    """
    from tilestream.errors import ConfigError

    if source is None:
        return StainNormalizer(method)
    if os.fspath(source).lower().endswith(".json"):
        norm = StainNormalizer.load(source)
        if norm.method != method:
            raise ConfigError(f"this stain fit is for {norm.method!r}, not {method!r}", path=source)
        return norm
    return StainNormalizer(method).fit(source)
