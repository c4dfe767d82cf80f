"""Label and overview images stored in another series of the slide's study.

Scanners often put the label and the overview (macro) of a slide in series of
their own. :func:`study_associated` looks through the study's other ``SM``
series (one QIDO-RS query, one metadata request per series) for LABEL and
OVERVIEW instances of the same physical slide (same ``ContainerIdentifier``
when both say) and describes them as images the series reads like its own.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from tilestream.errors import SlideAccessDeniedError, SlideError
from tilestream.slide.dicomweb._client import DicomWebSession
from tilestream.slide.dicomweb._metadata import first_value
from tilestream.slide.dicomweb._url import DicomWebURL

__all__ = ["ASSOCIATED_KINDS", "associated_from_metadata", "study_associated"]

logger = logging.getLogger(__name__)

#: DICOM ImageType flavours read as associated images, and their OpenSlide names.
ASSOCIATED_KINDS = {"LABEL": "label", "OVERVIEW": "macro"}
_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_CONTAINER = "00400512"


def _int(item: Mapping[str, Any], tag: str) -> int | None:
    value = first_value(item, tag)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def associated_from_metadata(
    item: Mapping[str, Any], series_uid: str, make: Callable[..., Any]
) -> tuple[str, Any] | None:
    """``(name, image)`` for a LABEL or OVERVIEW instance's DICOM JSON, else ``None``.

    ``make`` builds the image from keyword fields (the series' ``DicomImage``).
    Only TILED_FULL (or single-frame) 8-bit images are described.
    """
    kinds = item.get("00080008", {}).get("Value") or []
    name = ASSOCIATED_KINDS.get(str(kinds[2]).upper()) if len(kinds) > 2 else None
    if name is None or first_value(item, "00080016") != _WSI_SOP_CLASS:
        return None
    tile_w, tile_h = _int(item, "00280011"), _int(item, "00280010")
    if not tile_w or not tile_h:
        return None
    width = _int(item, "00480006") or tile_w
    height = _int(item, "00480007") or tile_h
    frames = _int(item, "00280008") or 1
    organisation = first_value(item, "00209311")
    if frames > 1 and organisation not in (None, "TILED_FULL"):
        return None
    cols = -(-width // tile_w)

    def frame_of(col: int, row: int) -> int:
        return row * cols + col + 1

    image = make(
        instance_uid=str(first_value(item, "00080018")),
        series_uid=series_uid,
        width=width,
        height=height,
        tile_w=tile_w,
        tile_h=tile_h,
        photometric=str(first_value(item, "00280004") or "RGB"),
        samples=_int(item, "00280002") or 3,
        bits=_int(item, "00280101") or 8,
        frame_of=frame_of,
    )
    return name, image


def study_associated(
    session: DicomWebSession,
    url: DicomWebURL,
    container: str | None,
    wanted: set[str],
    make: Callable[..., Any],
) -> dict[str, Any]:
    """Label / overview images (names in ``wanted``) from the study's other SM series.

    A series that cannot be read is logged and skipped (the slide opens
    without that image); refused credentials are raised.
    """
    query = urllib.parse.urlencode({"Modality": "SM"})
    found: dict[str, Any] = {}
    try:
        series = session.get_json(
            f"/studies/{url.study_uid}/series?{query}", what="the study's series"
        )
    except SlideAccessDeniedError:
        raise
    except SlideError as exc:
        logger.info("%s: cannot list the study's series: %s", url.url, exc.message)
        return found
    for entry in series if isinstance(series, list) else []:
        uid = first_value(entry, "0020000E")
        if not uid or uid == url.series_uid or not (wanted - set(found)):
            continue
        try:
            meta = session.get_json(
                f"/studies/{url.study_uid}/series/{uid}/metadata", what=f"series {uid}"
            )
        except SlideAccessDeniedError:
            raise
        except SlideError as exc:
            logger.info("%s: skipping series %s: %s", url.url, uid, exc.message)
            continue
        for item in meta if isinstance(meta, list) else []:
            if container and first_value(item, _CONTAINER) not in (None, container):
                continue
            described = associated_from_metadata(item, str(uid), make)
            if described is not None and described[0] in wanted and described[0] not in found:
                found[described[0]] = described[1]
    return found
