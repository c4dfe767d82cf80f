"""DICOMweb: whole-slide series on a DICOMweb server (PACS, Orthanc, Google Healthcare...).

A series is a slide: ``open_slide("dicomweb+https://host/dicom-web/studies/<uid>/series/<uid>")``
reads it with the ``dicomweb`` backend (:mod:`tilestream.slide.backends.dicomweb_`;
the ``dicomweb`` extra: ``pip install 'tilestream[dicomweb]'``).
:func:`list_series` finds the whole-slide series on a server.

Credentials (:class:`DicomWebAuth`): a bearer token or basic auth, given in
:class:`DicomWebOptions` (``open_slide(url, dicomweb=DicomWebOptions(auth=...))``),
else from the environment (``TILESTREAM_DICOMWEB_TOKEN`` or ``..._TOKEN_FILE``;
``TILESTREAM_DICOMWEB_USER`` with ``..._PASSWORD`` or ``..._PASSWORD_FILE``),
else from the URL's userinfo. They are never logged, printed, put in a
``repr`` or an error message; neither is the URL's query string.

Examples
--------
>>> url = DicomWebURL.parse("dicomweb+https://pacs.example/dicom-web/studies/1.2/series/1.3?key=s")
>>> url.url
'dicomweb+https://pacs.example/dicom-web/studies/1.2/series/1.3'
"""

from __future__ import annotations

from tilestream.slide.dicomweb._client import (
    OPTIONS,
    DicomWebOptions,
    DicomWebSession,
    map_http_error,
)
from tilestream.slide.dicomweb._frames import Frame, FrameFetcher, parse_multipart
from tilestream.slide.dicomweb._metadata import first_value, icc_profile, series_properties
from tilestream.slide.dicomweb._search import SeriesInfo, list_series
from tilestream.slide.dicomweb._series import DicomImage, DicomWebSeries
from tilestream.slide.dicomweb._url import (
    ENV_PASSWORD,
    ENV_PASSWORD_FILE,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_USER,
    URL_SCHEMES,
    DicomWebAuth,
    DicomWebURL,
    redact_url,
)

__all__ = [
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "ENV_USER",
    "OPTIONS",
    "URL_SCHEMES",
    "DicomImage",
    "DicomWebAuth",
    "DicomWebOptions",
    "DicomWebSeries",
    "DicomWebSession",
    "DicomWebURL",
    "Frame",
    "FrameFetcher",
    "SeriesInfo",
    "first_value",
    "icc_profile",
    "list_series",
    "map_http_error",
    "parse_multipart",
    "redact_url",
    "series_properties",
]
