"""tilestream: whole-slide images to training-ready tile datasets, streamed back fast.

The package is layered; import what you need from its subpackages:

- :mod:`tilestream.tfrecord`: the TFRecord format (framing, ``tf.train.Example``,
  indexes, reading, writing, random access), without TensorFlow.
- :mod:`tilestream.slide`: one reader API over OpenSlide, tifffile and Pillow.
- :mod:`tilestream.errors`: the exception tree rooted at :class:`TileStreamError`.

Examples
--------
>>> import tilestream
>>> tilestream.__version__
'0.1.0'
"""

from __future__ import annotations

from tilestream.errors import TileStreamError

__all__ = ["TileStreamError", "__version__"]

__version__ = "0.1.0"
