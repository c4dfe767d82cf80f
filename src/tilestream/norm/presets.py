"""Default reference targets and augmentation spreads, shipped as numbers.

Sources (public, published with their libraries):

- ``reinhard`` and ``reinhard_mask``: Slideflow's ``reinhard_fast`` preset
  ``v3``, the LAB means and standard deviations averaged over about 50,000
  tiles from about 450 TCGA slides (Slideflow computes it, like tilestream,
  without a brightness standardisation step).
- ``macenko``: the reference H&E matrix and 99th-percentile concentrations of
  Macenko's original implementation as published in HEnorm_python and used as
  torchstain's default (also Slideflow's ``macenko`` preset ``v2``), for a
  transmitted intensity ``io=240``.
- ``vahadane``: Slideflow's ``vahadane_spams`` preset ``v1`` stain matrix;
  Slideflow ships no concentrations for it, so the Macenko reference
  concentrations above are used (both matrices are unit stain vectors of
  similar direction, so the concentration scales agree).
- Augmentation spreads: Slideflow's augmentation preset ``v1`` (the standard
  deviation of fit values over the same TCGA tiles, times 5); Vahadane uses the
  Macenko spreads.

Examples
--------
>>> sorted(DEFAULT_FITS)
['macenko', 'reinhard', 'reinhard_mask', 'vahadane']
>>> DEFAULT_FITS["macenko"]["max_concentrations"]
[1.9705, 1.0308]
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUGMENT_SPREADS", "DEFAULT_FITS", "METHODS"]

#: The stain normalisation methods.
METHODS = ("reinhard", "reinhard_mask", "macenko", "vahadane")

_REINHARD = {
    "target_means": [58.12343, 26.483482, -12.701005],
    "target_stds": [14.675022, 7.5744166, 5.226378],
}

#: Default fit of each method (what ``StainNormalizer(method)`` starts with).
DEFAULT_FITS: dict[str, dict[str, Any]] = {
    "reinhard": dict(_REINHARD),
    "reinhard_mask": dict(_REINHARD),
    "macenko": {
        # Rows are the stain vectors (hematoxylin, eosin) in RGB optical density.
        "stain_matrix": [[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]],
        "max_concentrations": [1.9705, 1.0308],
    },
    "vahadane": {
        "stain_matrix": [[0.54176575, 0.75441414, 0.37060648], [0.17089975, 0.8640189, 0.4735658]],
        "max_concentrations": [1.9705, 1.0308],
    },
}

_MACENKO_SPREAD = {
    # Rows: stains (H, E); columns: R, G, B (Slideflow's matrix_stdev, transposed).
    "stain_matrix": [
        [0.00893346 * 5, 0.00659814 * 5, 0.00726339 * 5],
        [0.01153686 * 5, 0.00722771 * 5, 0.01352414 * 5],
    ],
    "max_concentrations": [0.06665898 * 5, 0.06770515 * 5],
}
_REINHARD_SPREAD = {
    "target_means": [1.2963034 * 5, 1.0061347 * 5, 0.90867484 * 5],
    "target_stds": [0.47548684 * 5, 0.3956356 * 5, 0.23499836 * 5],
}

#: Standard deviation of the normal perturbation of each fit value in stain augmentation.
AUGMENT_SPREADS: dict[str, dict[str, Any]] = {
    "reinhard": _REINHARD_SPREAD,
    "reinhard_mask": _REINHARD_SPREAD,
    "macenko": _MACENKO_SPREAD,
    "vahadane": _MACENKO_SPREAD,
}
