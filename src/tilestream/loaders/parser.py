"""Record parsers with Slideflow's semantics: features, decoding, augmentation.

:func:`get_tfrecord_parser` looks at the first record of a TFRecord and returns
a callable turning a record's payload (bytes) into the requested features:

- ``features_to_return=None``: a dict of every feature;
- a list (or tuple) of names: a tuple of values in that order;
- a dict ``{label: feature}``: a dict keyed by the labels;
- a single name: that value.

The image feature (``image_raw``) is decoded to RGB (``decode_images=True``),
augmented, normalised and standardised; ``slide`` becomes a ``str``; a numeric
feature holding one value becomes a Python scalar.

Examples
--------
>>> import tempfile, os
>>> from tilestream.loaders.parser import _demo_tfrecord
>>> path = _demo_tfrecord(os.path.join(tempfile.mkdtemp(), "s1.tfrecords"))
>>> parse = get_tfrecord_parser(path, ["slide", "loc_x", "image_raw"])
>>> from tilestream.loaders.stream import tfrecord_loader
>>> slide, x, img = next(iter(tfrecord_loader(path, parser=parse)))
>>> slide, x, img.shape, img.dtype
('s1', 0, (8, 8, 3), dtype('uint8'))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tilestream.errors import ConfigError, CorruptRecordError, EmptyTFRecordsError
from tilestream.loaders.augment import (
    augment_image,
    normalize_image,
    parse_augment,
    resolve_normalizer,
)
from tilestream.loaders.records import (
    FileHandles,
    file_size,
    frame_sizes,
    load_offsets,
    read_record,
)

__all__ = ["TFRecordParser", "decode_rgb", "get_tfrecord_parser"]

IMAGE_KEY = "image_raw"
_JPEG = b"\xff\xd8"


def decode_rgb(data: bytes, *, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a JPEG (libjpeg-turbo, accurate DCT) or PNG/other image to RGB uint8 HWC.

    Parameters
    ----------
    data
        The encoded image.
    out
        Optional C-contiguous uint8 ``(height, width, 3)`` array to decode a JPEG
        into; it is returned when used. An image of another size is decoded
        into a new array instead.

    Raises
    ------
    CorruptRecordError
        The bytes are not a decodable image.

    Examples
    --------
    >>> import numpy as np, simplejpeg
    >>> jpeg = simplejpeg.encode_jpeg(np.zeros((8, 16, 3), np.uint8))
    >>> decode_rgb(jpeg).shape
    (8, 16, 3)
    """
    if data[:2] == _JPEG:
        import simplejpeg

        try:
            if out is not None:
                height, width, _, _ = simplejpeg.decode_jpeg_header(data)
                if out.shape == (height, width, 3):
                    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
                    return out
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as exc:
            raise CorruptRecordError(f"cannot decode JPEG image: {exc}") from exc
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptRecordError(f"cannot decode image: {exc}") from exc


def _first_record(path: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    from tilestream.storage import is_url

    if is_url(path):
        from tilestream.tfrecord import iter_records

        for record in iter_records(path, storage_options=storage_options):
            return record
        raise EmptyTFRecordsError(f"{path} has no records")
    offsets = load_offsets(path)
    sizes = frame_sizes(offsets, file_size(path))
    handles = FileHandles(1)
    try:
        return read_record(handles.get(path), path, 0, int(offsets[0]), int(sizes[0]))
    finally:
        handles.close()


class TFRecordParser:
    """Turns a record's payload into features (see :func:`get_tfrecord_parser`).

    Pickles (into data-loader workers) by value: it holds no open files.
    """

    def __init__(
        self,
        path: str,
        features: str | Sequence[str] | Mapping[str, str] | None,
        available: Sequence[str],
        *,
        to_numpy: bool,
        decode_images: bool,
        standardize: bool,
        img_size: int | None,
        augment: str,
        normalizer: Callable[[np.ndarray], np.ndarray] | None,
        error_if_invalid: bool,
        seed: int | None,
    ) -> None:
        self.path = path
        self.available = tuple(available)
        if features is None:
            self._mode = "dict"
            self._keys: tuple[str, ...] = self.available
            self._names: tuple[str, ...] = self.available
        elif isinstance(features, str):
            self._mode = "single"
            self._keys = self._names = (features,)
        elif isinstance(features, Mapping):
            self._mode = "dict"
            self._names = tuple(features.keys())
            self._keys = tuple(features.values())
        else:
            self._mode = "tuple"
            self._keys = self._names = tuple(features)
        missing = [k for k in self._keys if k not in self.available]
        if missing and error_if_invalid:
            raise ConfigError(
                f"features {missing} are not in this TFRecord (it has {list(self.available)})",
                path=path,
            )
        self.to_numpy = to_numpy
        self.decode_images = decode_images
        self.standardize = standardize
        self.img_size = img_size
        self.augment = augment
        self.normalizer = normalizer
        self.error_if_invalid = error_if_invalid
        self.rng = np.random.default_rng(seed)
        if not to_numpy:
            from tilestream._util.optional import require

            require("torch", extra="torch", purpose="to_numpy=False (torch tensors)")

    def reseed(self, seed: int | Sequence[int] | np.random.SeedSequence) -> None:
        """Restart the augmentation generator from ``seed`` (e.g. per worker and epoch)."""
        self.rng = np.random.default_rng(seed)

    def image(self, data: bytes) -> Any:
        """Decode, augment, normalise, standardise and convert one image."""
        img = decode_rgb(data)
        if self.img_size is not None and img.shape[:2] != (self.img_size, self.img_size):
            raise ConfigError(
                f"image is {img.shape[1]}x{img.shape[0]} px, expected img_size={self.img_size}",
                path=self.path,
            )
        if self.augment:
            img = augment_image(img, self.augment, self.rng)
        img = normalize_image(img, self.normalizer, self.augment, self.rng)
        if self.to_numpy:
            if self.standardize:
                return img.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
            return np.ascontiguousarray(img)
        torch = sys.modules["torch"]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        if self.standardize:
            return t.float().div_(127.5).sub_(1.0)
        return t.contiguous()

    def _value(self, key: str, feature: Any) -> Any:
        from tilestream.tfrecord import feature_value

        if feature is None:
            return None
        value = feature_value(feature)
        if key == IMAGE_KEY and self.decode_images and isinstance(value, bytes):
            return self.image(value)
        if key == "slide" and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    def __call__(self, data: bytes) -> Any:
        """Parse one record payload."""
        from tilestream.tfrecord import decode_example

        ex = decode_example(data)
        if self.error_if_invalid:
            missing = [k for k in self._keys if k not in ex]
            if missing:
                raise CorruptRecordError(f"record lacks features {missing}")
        values = [self._value(k, ex.get(k)) for k in self._keys]
        if self._mode == "single":
            return values[0]
        if self._mode == "tuple":
            return tuple(values)
        return dict(zip(self._names, values, strict=True))


def get_tfrecord_parser(
    path: str | os.PathLike[str],
    features_to_return: str | Sequence[str] | Mapping[str, str] | None = None,
    *,
    to_numpy: bool = True,
    decode_images: bool = True,
    standardize: bool = False,
    img_size: int | None = None,
    augment: bool | str = False,
    normalizer: Callable[[np.ndarray], np.ndarray] | str | None = None,
    error_if_invalid: bool = True,
    seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> TFRecordParser:
    """A parser for the records of ``path``, with Slideflow's semantics.

    Parameters
    ----------
    path
        A TFRecord (a path or URL); its first record tells which features exist.
    features_to_return
        None (a dict of all), a name (that value), a list of names (a tuple) or
        ``{label: feature}`` (a dict keyed by label).
    to_numpy
        Images as numpy HWC (True) or torch CHW tensors (False).
    decode_images
        Decode ``image_raw`` to RGB pixels (else keep the encoded bytes).
    standardize
        Images as float32 ``img / 127.5 - 1`` instead of uint8.
    img_size
        Expected width and height; a tile of another size is an error.
    augment
        Letters of :mod:`tilestream.loaders.augment` (``True`` is ``"xyrjb"``;
        ``n``, stain augmentation, needs a stain ``normalizer``).
    normalizer
        A stain normaliser method name (``"reinhard"``, ``"macenko"``, ...), a
        :class:`tilestream.norm.StainNormalizer`, or a callable on each uint8
        HWC image, applied after augmentation.
    error_if_invalid
        Raise for a requested feature that the TFRecord lacks (else return None for it).
    seed
        Seed of the augmentation generator (see :meth:`TFRecordParser.reseed`).
    storage_options
        Options of the store, for a URL (see :mod:`tilestream.storage`).

    Raises
    ------
    ConfigError
        Unknown features, bad augmentation letters (``n`` is not available yet).
    TFRecordError
        The file is missing, empty or unreadable.
    """
    p = os.fspath(path)
    letters = parse_augment(augment)
    if img_size is not None and (isinstance(img_size, bool) or int(img_size) <= 0):
        raise ConfigError(f"img_size must be a positive integer, got {img_size!r}")
    from tilestream.tfrecord import decode_example

    first = _first_record(p, storage_options)
    available = list(decode_example(first, path=p, record=0))
    return TFRecordParser(
        p,
        features_to_return,
        available,
        to_numpy=to_numpy,
        decode_images=decode_images,
        standardize=standardize,
        img_size=None if img_size is None else int(img_size),
        augment=letters,
        normalizer=resolve_normalizer(normalizer, letters),
        error_if_invalid=error_if_invalid,
        seed=seed,
    )


def _demo_tfrecord(path: str, n: int = 2) -> str:
    """Write a tiny TFRecord of 8 px JPEG tiles (for the examples)."""
    import simplejpeg

    from tilestream.tfrecord import TFRecordWriter, serialized_record

    jpeg = simplejpeg.encode_jpeg(np.full((8, 8, 3), 128, np.uint8))
    with TFRecordWriter(path) as w:
        for i in range(n):
            w.write(serialized_record(os.path.basename(path).split(".")[0], jpeg, i, 0))
    return path
