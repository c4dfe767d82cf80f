"""The tilestream exception tree.

Every error tilestream raises on purpose derives from :class:`TileStreamError`.
Each subclass also mixes in the builtin exception a caller would naturally
catch, so ``except ValueError`` or ``except OSError`` keep working::

    TileStreamError (Exception)
    ├── TFRecordError
    │   ├── CorruptRecordError (ValueError)
    │   │   └── TruncatedRecordError
    │   ├── EmptyTFRecordsError (ValueError)
    │   ├── InvalidTFRecordIndex (IndexError)
    │   ├── UnsupportedRecordError (ValueError)
    │   └── RecordNotFoundError (KeyError)
    ├── SlideError (OSError)
    │   ├── SlideNotFoundError (FileNotFoundError)
    │   ├── UnsupportedSlideError
    │   ├── CorruptSlideError
    │   ├── SlideTooLargeError
    │   ├── MissingMPPError (ValueError)
    │   └── RemoteSlideError (ConnectionError)
    │       └── SlideAccessDeniedError (PermissionError)
    ├── ExtractionError
    │   └── ROIError (ValueError)
    ├── StorageError (OSError)
    │   ├── StorageNotFoundError (FileNotFoundError)
    │   ├── StorageAccessDeniedError (PermissionError)
    │   ├── StorageReadOnlyError (PermissionError)
    │   └── StorageUnavailableError (ConnectionError)
    │       └── StorageThrottledError
    ├── AnnotationError (ValueError)
    ├── ConfigError (ValueError)
    └── MissingDependencyError (ImportError)

Errors about a file carry it in ``path`` (and, for records, ``record`` and
``offset``) and name it in their message.

Examples
--------
>>> from tilestream.errors import CorruptRecordError, TileStreamError
>>> err = CorruptRecordError("data CRC mismatch", path="a.tfrecords", record=3, offset=128)
>>> isinstance(err, TileStreamError) and isinstance(err, ValueError)
True
>>> str(err)
'a.tfrecords: record 3 at byte 128: data CRC mismatch'
"""

from __future__ import annotations

import os

__all__ = [
    "AnnotationError",
    "ConfigError",
    "CorruptRecordError",
    "CorruptSlideError",
    "EmptyTFRecordsError",
    "ExtractionError",
    "InvalidTFRecordIndex",
    "MissingDependencyError",
    "MissingMPPError",
    "ROIError",
    "RecordNotFoundError",
    "RemoteSlideError",
    "SlideAccessDeniedError",
    "SlideError",
    "SlideNotFoundError",
    "SlideTooLargeError",
    "StorageAccessDeniedError",
    "StorageError",
    "StorageNotFoundError",
    "StorageReadOnlyError",
    "StorageThrottledError",
    "StorageUnavailableError",
    "TFRecordError",
    "TileStreamError",
    "TruncatedRecordError",
    "UnsupportedRecordError",
    "UnsupportedSlideError",
]


class TileStreamError(Exception):
    """Root of every error tilestream raises on purpose.

    Parameters
    ----------
    message
        What went wrong.
    path
        The file concerned, if any; it is prefixed to the message.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        super().__init__(self._format())

    def _format(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword-only constructor arguments do not survive the default
        # pickling of exceptions; errors cross process boundaries (workers).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[TileStreamError], state: dict[str, object]) -> TileStreamError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._format())
    return err


class TFRecordError(TileStreamError):
    """A TFRecord file, record or index cannot be used."""


class CorruptRecordError(TFRecordError, ValueError):
    """A record's framing, checksum or payload is invalid.

    Parameters
    ----------
    message
        What is wrong with the record.
    path
        The file the record is in.
    record
        Zero-based number of the record in the file, when known.
    offset
        Byte offset of the record's start in the (uncompressed) stream.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        record: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.record = record
        self.offset = offset
        super().__init__(message, path=path)

    def _format(self) -> str:
        where = str(self.path) if self.path else ""
        if self.record is not None:
            where += f"{': ' if where else ''}record {self.record}"
        if self.offset is not None:
            sep = " at" if self.record is not None else (": at" if where else "at")
            where += f"{sep} byte {self.offset}"
        return f"{where}: {self.message}" if where else self.message


class TruncatedRecordError(CorruptRecordError):
    """The file ends inside a record (as after a crash or an interrupted copy)."""


class EmptyTFRecordsError(TFRecordError, ValueError):
    """A TFRecord file, or a set of them, holds no records where some are needed."""


class InvalidTFRecordIndex(TFRecordError, IndexError):
    """An index does not describe its TFRecord, or a record number is out of range."""


class UnsupportedRecordError(TFRecordError, ValueError):
    """A record is valid but of a kind tilestream does not decode (e.g. ``SequenceExample``)."""


class RecordNotFoundError(TFRecordError, KeyError):
    """No record matches the requested key (e.g. a tile location)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self._format()


class SlideError(TileStreamError, OSError):
    """A slide cannot be opened or read."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide file does not exist."""


class UnsupportedSlideError(SlideError):
    """No backend can read this file."""


class CorruptSlideError(SlideError):
    """The slide opened but its pixel data is damaged."""


class SlideTooLargeError(SlideError):
    """Decoding or reading what the slide declares would exceed the memory budget.

    Raised before anything is allocated: a stored tile or strip, a region, a
    thumbnail or an associated image larger than the budget of
    :class:`tilestream.slide.limits.SlideLimits` (``open_slide(..., limits=)``).
    """


class MissingMPPError(SlideError, ValueError):
    """The slide has no usable resolution (microns per pixel); pass ``mpp=``."""


class RemoteSlideError(SlideError, ConnectionError):
    """A slide server (DICOMweb) failed, did not answer, or does not speak the protocol.

    ``path`` is the slide's URL without credentials or query string.
    """


class SlideAccessDeniedError(RemoteSlideError, PermissionError):
    """The slide server refused the credentials (HTTP 401 or 403)."""


class StorageError(TileStreamError, OSError):
    """An object or file in a store (local folder, S3, GCS, HTTP) cannot be read or written.

    ``path`` is the object's URL without credentials or query string; the
    message never holds a secret.
    """


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, or the bucket holding it, does not exist."""


class StorageAccessDeniedError(StorageError, PermissionError):
    """The store refused the credentials or the operation (HTTP 401 or 403)."""


class StorageReadOnlyError(StorageError, PermissionError):
    """The store cannot be written (e.g. ``http(s)://``), or cannot write conditionally."""


class StorageUnavailableError(StorageError, ConnectionError):
    """A transient failure (5xx, reset connection, timeout) persisted after every retry."""


class StorageThrottledError(StorageUnavailableError):
    """The store kept asking to slow down (HTTP 503 ``SlowDown``, 429) after every retry."""


class ExtractionError(TileStreamError):
    """Tile extraction of a slide failed."""


class ROIError(ExtractionError, ValueError):
    """An ROI file is malformed or does not fit its slide."""


class AnnotationError(TileStreamError, ValueError):
    """An annotation (labels CSV, detection annotation, label map) is invalid."""


class ConfigError(TileStreamError, ValueError):
    """Options are invalid or inconsistent."""


class MissingDependencyError(TileStreamError, ImportError):
    """An optional dependency is needed; the message says which extra installs it."""
