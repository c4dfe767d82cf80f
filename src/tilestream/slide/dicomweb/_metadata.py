"""A DICOMweb series' metadata in OpenSlide's vocabulary: properties, mpp, objective, ICC profile.

Values come from the base level's DICOM JSON (WADO-RS ``/metadata``): the
pixel spacing (``SharedFunctionalGroupsSequence > PixelMeasuresSequence >
PixelSpacing``, row spacing first, in mm) gives ``openslide.mpp-x/y`` as
OpenSlide computes them, ``ObjectiveLensPower`` of the first optical path
``openslide.objective-power``, and that optical path's ICC profile (inline, or
fetched from its ``BulkDataURI`` on the same server) the colour profile.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tilestream.errors import SlideError
from tilestream.slide.dicomweb._client import DicomWebSession
from tilestream.slide.dicomweb._frames import parse_multipart

__all__ = ["first_value", "icc_profile", "pixel_spacing_mpp", "series_properties"]

logger = logging.getLogger(__name__)

_PIXEL_SPACING = ("52009229", "00289110", "00280030")
_OPTICAL_PATHS = "00480105"
_TEXT_TAGS = {
    "00080070": "Manufacturer",
    "00081090": "ManufacturerModelName",
    "00181020": "SoftwareVersions",
    "00080016": "SOPClassUID",
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00209311": "DimensionOrganizationType",
    "00280004": "PhotometricInterpretation",
}


def first_value(item: Mapping[str, Any], *path: str) -> Any:
    """The first value at a path of tags through sequences' first items, or ``None``.

    Examples
    --------
    >>> first_value({"00280030": {"vr": "DS", "Value": [0.5, 0.25]}}, "00280030")
    0.5
    """
    node: Any = item
    for tag in path:
        values = (node or {}).get(tag, {}).get("Value") if isinstance(node, Mapping) else None
        if not values:
            return None
        node = values[0]
    return node


def _values(item: Mapping[str, Any], *path: str) -> Sequence[Any]:
    node: Any = item
    for tag in path[:-1]:
        node = first_value(node, tag)
        if not isinstance(node, Mapping):
            return []
    return list(node.get(path[-1], {}).get("Value") or []) if isinstance(node, Mapping) else []


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number > 0 else None


def _fmt(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text


def pixel_spacing_mpp(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(mpp_x, mpp_y)`` as strings from the pixel spacing (mm, row spacing first), or ``None``.

    Examples
    --------
    >>> spacing = {"00280030": {"Value": ["0.000499", "0.000499"]}}
    >>> pixel_spacing_mpp({"52009229": {"Value": [{"00289110": {"Value": [spacing]}}]}})
    ('0.499', '0.499')
    """
    spacing = _values(item, *_PIXEL_SPACING)
    if len(spacing) != 2:
        return None
    row, col = _number(spacing[0]), _number(spacing[1])
    if row is None or col is None:
        return None
    return _fmt(col * 1000), _fmt(row * 1000)


def series_properties(item: Mapping[str, Any]) -> dict[str, str]:
    """``openslide.vendor``, ``mpp-x/y``, ``objective-power`` and a few ``dicom.*`` values."""
    props = {"openslide.vendor": "dicom"}
    mpp = pixel_spacing_mpp(item)
    if mpp is not None:
        props["openslide.mpp-x"], props["openslide.mpp-y"] = mpp
    power = _number(first_value(item, _OPTICAL_PATHS, "00480112"))
    if power is not None:
        props["openslide.objective-power"] = _fmt(power)
    for tag, name in _TEXT_TAGS.items():
        value = first_value(item, tag)
        if value is not None and str(value):
            props[f"dicom.{name}"] = str(value)
    return props


def icc_profile(item: Mapping[str, Any], session: DicomWebSession) -> bytes | None:
    """The first optical path's ICC profile: inline, or fetched from its bulk-data URI.

    Only the URI's path is used, on the slide's server (a server behind a proxy
    may name itself by another address; credentials never go to another host);
    a path outside the DICOMweb root is not followed. A profile that cannot be
    fetched is logged and ``None``.
    """
    optical = first_value(item, _OPTICAL_PATHS)
    element = optical.get("00282000") if isinstance(optical, Mapping) else None
    if not isinstance(element, Mapping):
        return None
    if "InlineBinary" in element:
        return base64.b64decode(element["InlineBinary"])
    uri = element.get("BulkDataURI")
    if not isinstance(uri, str):
        return None
    # Servers behind a proxy often name themselves by their inner address: only the
    # path is used, always on our server (the credentials never go elsewhere).
    path = urllib.parse.urlsplit(uri).path
    if not path.startswith(session.url.root + "/"):
        logger.warning(
            "%s: not following an ICC profile URI outside the DICOMweb root", session.url.url
        )
        return None
    try:
        response = session.get(
            path.removeprefix(session.url.root),
            accept='multipart/related; type="application/octet-stream"',
            what="the ICC profile",
        )
        parts = parse_multipart(response.content, response.headers.get("Content-Type", ""))
    except (SlideError, ValueError) as exc:
        logger.warning("%s: cannot fetch the ICC profile: %s", session.url.url, exc)
        return None
    return parts[0].data if parts else None
