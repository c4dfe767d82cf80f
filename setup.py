"""Build script for the optional compiled core; all metadata lives in pyproject.toml.

``tilestream.tfrecord._native`` (C, no dependencies beyond Python) speeds up
reading TFRecords; ``tilestream.slide._jpegdct`` (C, no dependencies) assembles
JPEG tiles losslessly in the DCT domain. Both are optional: where it cannot be compiled (no C
compiler), the install goes on and the pure-Python reader is used.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup

compile_args = (
    []
    if sys.platform == "win32"
    else [
        "-O3",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-missing-field-initializers",
    ]
)

setup(
    ext_modules=[
        Extension(
            "tilestream.tfrecord._native",
            ["src/tilestream/tfrecord/_native.c"],
            extra_compile_args=compile_args,
            optional=True,
        ),
        Extension(
            "tilestream.slide._jpegdct",
            ["src/tilestream/slide/_jpegdct.c"],
            extra_compile_args=compile_args,
            optional=True,
        ),
    ]
)
