"""One DICOMweb series opened as a slide: its images, their frames, and decoding them.

:class:`DicomWebSeries` checks the series exists and is a whole-slide image
(one QIDO-RS query), reads its metadata through wsidicom (``WsiDicom.open_web``
over our own session, so credentials, retries and timeouts apply), and reads
pixels with :class:`~tilestream.slide.dicomweb._frames.FrameFetcher`: every
stored row of frames a read touches is fetched at once, in batched multi-frame
requests. JPEG baseline frames decode with libjpeg-turbo (simplejpeg), as the
``tifffile`` backend's tiles; other transfer syntaxes with wsidicom's decoders.
"""

from __future__ import annotations

import logging
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg
from numpy.typing import NDArray

from tilestream._util.optional import require
from tilestream.errors import (
    CorruptSlideError,
    RemoteSlideError,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from tilestream.slide.dicomweb._client import DicomWebSession, map_http_error
from tilestream.slide.dicomweb._frames import Frame, FrameFetcher
from tilestream.slide.dicomweb._study import study_associated
from tilestream.slide.dicomweb._url import DicomWebURL

__all__ = ["JPEG_BASELINE", "PREFETCH_FRAMES", "DicomImage", "DicomWebSeries", "check_series"]

logger = logging.getLogger(__name__)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
#: Frames a read fetches at most beyond what it needs (the rest of its stored rows).
PREFETCH_FRAMES = 256
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass
class DicomImage:
    """One tiled image of the series (a pyramid level, a label, an overview, a thumbnail)."""

    instance_uid: str
    series_uid: str
    width: int
    height: int
    tile_w: int
    tile_h: int
    photometric: str
    samples: int
    bits: int
    #: Frame number (1-based) of stored tile ``(col, row)``; 0 where a sparse image has none.
    frame_of: Callable[[int, int], int]

    @property
    def frames_path(self) -> str:
        """The instance's path in its study, as :class:`FrameFetcher` takes it."""
        return f"{self.series_uid}/instances/{self.instance_uid}"

    @property
    def grid(self) -> tuple[int, int]:
        """Stored tiles across and down."""
        return -(-self.width // self.tile_w), -(-self.height // self.tile_h)


def check_series(session: DicomWebSession, url: DicomWebURL) -> None:
    """Refuse an unknown study or series, or a series that is not a whole-slide image.

    One QIDO-RS query (two when the series is missing, to say whether the study is).
    """
    study, series = url.study_uid, url.series_uid
    query = urllib.parse.urlencode({"SeriesInstanceUID": series, "includefield": "00080060"})
    found = session.get_json(f"/studies/{study}/series?{query}", what="the series")
    if not isinstance(found, list):
        raise RemoteSlideError(
            "the server does not speak DICOMweb (QIDO-RS answer is not a list)", path=url.url
        )
    if not found:
        studies = session.get_json(
            f"/studies?{urllib.parse.urlencode({'StudyInstanceUID': study})}", what="the study"
        )
        if not studies:
            raise SlideNotFoundError(f"no study {study} on the server", path=url.url)
        raise SlideNotFoundError(f"no series {series} in study {study} on the server", path=url.url)
    modality = _first(found[0], "00080060")
    if modality not in (None, "SM"):
        raise UnsupportedSlideError(
            f"the series is not a whole-slide image (modality {modality}, not SM)", path=url.url
        )


def _first(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class DicomWebSeries:
    """A series on a DICOMweb server read as a slide (metadata, frames, decoded tiles)."""

    def __init__(self, session: DicomWebSession, url: DicomWebURL) -> None:
        wsidicom = require("wsidicom", extra="dicomweb", purpose="reading DICOMweb slides")
        api = require("dicomweb_client.api", extra="dicomweb", purpose="reading DICOMweb slides")
        self.url = url
        self.session = session
        check_series(session, url)
        client = _client_class(wsidicom)(api.DICOMwebClient(url.base_url, session=session.session))
        try:
            with warnings.catch_warnings():
                # pydicom warns on every off-standard value and on bulk data left on the server
                warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
                self.wsi = wsidicom.WsiDicom.open_web(client, url.study_uid, url.series_uid)
        except SlideError:
            raise
        except Exception as exc:
            raise _open_error(exc, url) from None
        levels = list(self.wsi.levels)
        self.levels = [self._image(level.default_instance) for level in levels]
        self.associated: dict[str, DicomImage] = {}
        for name, series in (
            ("label", self.wsi.labels),
            ("macro", self.wsi.overviews),
            ("thumbnail", self.wsi.levels.thumbnails),
        ):
            if series is not None and len(series):
                self.associated[name] = self._image(series[0].default_instance)
        self.frames = FrameFetcher(session, str(url.study_uid))

    def add_study_associated(self, container: str | None) -> None:
        """Add the label / overview found in other series of the study (if missing here)."""
        wanted = {"label", "macro"} - set(self.associated)
        if wanted:
            found = study_associated(self.session, self.url, container, wanted, DicomImage)
            self.associated.update(found)

    def _image(self, instance: Any) -> DicomImage:
        dataset = instance.dataset
        ds = dataset.as_dataset() if callable(getattr(dataset, "as_dataset", None)) else dataset
        if "ConcatenationUID" in ds:
            raise UnsupportedSlideError(
                f"instance {dataset.instance_uid} is part of a concatenation, which is not read",
                path=self.url.url,
            )
        data = instance.image_data
        tiles = data.tiles
        z, path = data.default_z, data.default_path
        point = require("wsidicom.geometry", extra="dicomweb").Point

        def frame_of(col: int, row: int) -> int:
            return int(tiles.get_frame_index(point(col, row), z, path)) + 1

        return DicomImage(
            instance_uid=str(dataset.instance_uid),
            series_uid=str(self.url.series_uid),
            width=int(data.image_size.width),
            height=int(data.image_size.height),
            tile_w=int(data.tile_size.width),
            tile_h=int(data.tile_size.height),
            photometric=str(data.photometric_interpretation),
            samples=int(data.samples_per_pixel),
            bits=int(data.bits),
            frame_of=frame_of,
        )

    # -- frames -------------------------------------------------------------------
    def fetch_rows(
        self, image: DicomImage, row0: int, row1: int, col0: int = 0, col1: int = 0
    ) -> None:
        """Fetch (in batches) the frames of stored rows ``row0..row1`` not yet cached.

        From column ``col0`` to the end of the row (reads go row-major), at least
        to ``col1``, within a window of :data:`PREFETCH_FRAMES` frames (or
        ``frames_per_request x concurrency`` if more): a random read of a very
        wide level fetches no whole row.
        """
        cols, _ = image.grid
        opts = self.session.options
        rows = row1 - row0 + 1
        budget = max(PREFETCH_FRAMES, opts.frames_per_request * opts.concurrency)
        window = max(col1 - col0 + 1, budget // rows)
        last = min(cols - 1, col0 + window - 1)
        numbers = [
            image.frame_of(c, r) for r in range(row0, row1 + 1) for c in range(col0, last + 1)
        ]
        self.frames.get(image.frames_path, [n for n in numbers if n > 0])

    def frame(self, image: DicomImage, col: int, row: int) -> Frame | None:
        """The encoded frame of stored tile ``(col, row)`` (``None``: not stored, sparse)."""
        number = image.frame_of(col, row)
        if number <= 0:
            return None
        return self.frames.get(image.frames_path, [number])[number]

    def jpeg_bytes(self, image: DicomImage, col: int, row: int) -> bytes | None:
        """Stored tile ``(col, row)`` as a standalone JPEG file, ``None`` when not JPEG baseline."""
        frame = self.frame(image, col, row)
        if frame is None or frame.transfer_syntax != JPEG_BASELINE:
            return None
        return _standalone_jpeg(frame.data, image.photometric)

    def decode(self, image: DicomImage, col: int, row: int) -> NDArray[np.uint8]:
        """Stored tile ``(col, row)`` as RGB ``(tile_h, tile_w, 3)`` (white where sparse)."""
        frame = self.frame(image, col, row)
        if frame is None:
            return np.full((image.tile_h, image.tile_w, 3), 255, np.uint8)
        try:
            rgb = _decode(frame, image)
        except Exception as exc:
            self.frames.drop(image.frames_path, image.frame_of(col, row))
            raise CorruptSlideError(
                f"cannot decode frame {image.frame_of(col, row)} (tile {col},{row}) of instance "
                f"{image.instance_uid}: {type(exc).__name__}: {exc}",
                path=self.url.url,
            ) from None
        if rgb.shape[:2] != (image.tile_h, image.tile_w):
            self.frames.drop(image.frames_path, image.frame_of(col, row))
            raise CorruptSlideError(
                f"frame {image.frame_of(col, row)} of instance {image.instance_uid} decodes to "
                f"{rgb.shape[1]}x{rgb.shape[0]}, not the {image.tile_w}x{image.tile_h} tile size",
                path=self.url.url,
            )
        return rgb

    def close(self) -> None:
        """Stop fetching and drop the caches."""
        self.frames.close()


def _client_class(wsidicom: Any) -> Any:
    """wsidicom's web client, for metadata only.

    No frame probes, no annotation query, and instances without a pixel
    spacing are given a stand-in one.

    wsidicom cannot order levels without a pixel spacing; the stand-in (1 mm
    over the image's width, so the levels' ratios hold) only serves that: the
    slide's mpp comes from the metadata itself (none here: pass ``mpp=``).
    """

    class Client(wsidicom.WsiDicomWebClient):  # type: ignore[misc]
        def get_instance(self, study_uid: Any, series_uid: Any, instance_uid: Any) -> Any:
            dataset = super().get_instance(study_uid, series_uid, instance_uid)
            _stand_in_pixel_spacing(dataset)
            return dataset

        def is_transfer_syntax_supported(self, *args: Any) -> bool:
            # wsidicom would fetch a frame of every instance to probe; its frame
            # reading is not used (frames are fetched as stored, FrameFetcher).
            return True

        def get_annotation_instances(self, *args: Any) -> Any:
            return iter(())  # annotations are not read: no query for them

    return Client


def _stand_in_pixel_spacing(dataset: Any) -> None:
    dataset_cls = require("pydicom", extra="dicomweb").Dataset
    if "TotalPixelMatrixColumns" not in dataset:
        return
    if "SharedFunctionalGroupsSequence" not in dataset:
        dataset.SharedFunctionalGroupsSequence = [dataset_cls()]
    shared = dataset.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures and measures[0].get("PixelSpacing"):
        return
    spacing = f"{1.0 / int(dataset.TotalPixelMatrixColumns):.10g}"
    item = measures[0] if measures else dataset_cls()
    item.PixelSpacing = [spacing, spacing]
    shared.PixelMeasuresSequence = [item]


def _standalone_jpeg(data: bytes, photometric: str) -> bytes:
    if photometric == "RGB" and b"Adobe" not in data[:512]:
        return data[:2] + _ADOBE_RGB + data[2:]
    return data


def _decode(frame: Frame, image: DicomImage) -> NDArray[np.uint8]:
    if frame.transfer_syntax == JPEG_BASELINE and image.samples == 3:
        jpeg = _standalone_jpeg(frame.data, image.photometric)
        return np.asarray(simplejpeg.decode_jpeg(jpeg, colorspace="RGB"))
    codec = require("wsidicom.codec", extra="dicomweb")
    geometry = require("wsidicom.geometry", extra="dicomweb")
    uid = require("pydicom.uid", extra="dicomweb").UID
    if frame.transfer_syntax is None:
        raise ValueError("the server did not name the frame's transfer syntax")
    decoder = codec.Decoder.create(
        uid(frame.transfer_syntax),
        image.samples,
        image.bits,
        geometry.Size(image.tile_w, image.tile_h),
        image.photometric,
    )
    arr = np.asarray(decoder.decode(frame.data))
    if arr.dtype != np.uint8:
        raise ValueError(f"{arr.dtype} pixels are not read (8-bit only)")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _open_error(exc: BaseException, url: DicomWebURL) -> SlideError:
    name = type(exc).__name__
    if name == "WsiDicomNotFoundError":
        return UnsupportedSlideError(
            "the series holds no whole-slide image level wsidicom can read "
            "(VL Whole Slide Microscopy instances with an ImageType of VOLUME)",
            path=url.url,
        )
    if getattr(exc, "response", None) is not None or "requests" in type(exc).__module__:
        return map_http_error(exc, url, "the series' instances")
    return UnsupportedSlideError(
        f"wsidicom cannot read the series ({name}: {_safe_text(exc, url)})", path=url.url
    )


def _safe_text(exc: BaseException, url: DicomWebURL) -> str:
    """An exception's text with every URL of the server replaced by the safe slide URL."""
    text = str(exc)
    if "://" in text:
        return "details withheld: the message quotes a server URL"
    return text[:300]
