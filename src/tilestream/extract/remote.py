"""Slides read from a server, not a file: recognising their URLs, naming them, refusing secrets.

A slide list may name DICOMweb series
(``dicomweb+https://host/dicom-web/studies/<Study>/series/<Series>``) beside
files. This module is what extraction knows of such URLs before a backend
opens them: whether an input is a URL (:func:`is_slide_url`), the stable
default name of its slide (:func:`url_slide_name`: the series UID), and the
check that it carries no credentials (:func:`check_slide_url`): a slide's
URL is recorded in its state file, ``summary.json`` and the report, so user
names, passwords and tokens belong in the ``TILESTREAM_DICOMWEB_*``
environment variables, never in the URL.

Examples
--------
>>> url = "dicomweb+http://pacs.example/dicom-web/studies/1.2.3/series/1.2.3.4"
>>> is_slide_url(url), is_slide_url("/data/slide.svs"), is_slide_url("C:\\\\slides\\\\a.svs")
(True, False, False)
>>> url_slide_name(url)
'1.2.3.4'
>>> redact_url("dicomweb+https://ann:secret@pacs.example/dicom-web")
'dicomweb+https://***@pacs.example/dicom-web'
"""

from __future__ import annotations

import os
import re
import urllib.parse

from tilestream.errors import ConfigError

__all__ = [
    "DICOMWEB_SCHEMES",
    "check_slide_url",
    "is_dicomweb_url",
    "is_slide_url",
    "redact_url",
    "url_slide_name",
]

#: The URL schemes of DICOMweb series (the ``dicomweb`` slide backend's).
DICOMWEB_SCHEMES = ("dicomweb+http", "dicomweb+https")

# A scheme of two or more characters, then "://": never a drive letter ("C:\").
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_slide_url(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is a URL (``scheme://...``), not a path; only ``str`` can be one.

    A :class:`pathlib.Path` is never a URL: it would have folded ``//`` already.
    """
    return isinstance(value, str) and _URL.match(value) is not None


def is_dicomweb_url(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is a ``dicomweb+http(s)://`` URL."""
    return is_slide_url(value) and str(value).split("://", 1)[0].lower() in DICOMWEB_SCHEMES


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***`` (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + host))


def url_slide_name(url: str) -> str:
    """The default name of a URL's slide: the series UID of a DICOMweb series URL.

    A series UID is unique and does not change, so outputs keep their names
    whatever server or port serves the series. Other URLs: their last path
    segment without its extension.

    >>> url_slide_name("dicomweb+http://h/dicom-web/studies/1.2/series/1.2.3/")
    '1.2.3'
    >>> url_slide_name("https://h/slides/case-7.svs")
    'case-7'
    """
    series = _series_uid(url)
    if series is not None:
        return series
    segments = _segments(url)
    last = segments[-1] if segments else ""
    if is_dicomweb_url(url):
        return last
    stem, dot, _ = last.rpartition(".")
    return stem if dot and stem else last


def _segments(url: str) -> list[str]:
    return [urllib.parse.unquote(s) for s in urllib.parse.urlsplit(url).path.split("/") if s]


def _series_uid(url: str) -> str | None:
    """The segment after ``series/`` in ``url``'s path, or ``None``."""
    segments = _segments(url)
    for i, segment in enumerate(segments[:-1]):
        if segment == "series":
            return segments[i + 1]
    return None


def check_slide_url(url: str, where: str) -> None:
    """Refuse a slide URL that carries credentials (``user:password@``) or is not a series.

    ``where`` says where the URL came from (``"slides.csv: line 3"``). The
    message shows the URL with its credentials redacted.

    >>> check_slide_url("dicomweb+http://ann:pw@h/dicom-web/studies/1/series/2", "line 2")
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: line 2: the slide URL dicomweb+http://***@h/dicom-web/studies/1/series/2 \
holds credentials; give them in the TILESTREAM_DICOMWEB_* environment variables, never in the URL \
(it is recorded in the run's files)
    """
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError(
            f"{where}: the slide URL {redact_url(url)} holds credentials; give them in the "
            "TILESTREAM_DICOMWEB_* environment variables, never in the URL "
            "(it is recorded in the run's files)"
        )
    if is_dicomweb_url(url) and _series_uid(url) is None:
        raise ConfigError(
            f"{where}: the DICOMweb URL {url} names no series; a slide is one series: "
            ".../studies/<StudyInstanceUID>/series/<SeriesInstanceUID> "
            "(tilestream dicomweb list shows them)"
        )
