"""Slides read from a server, not a file: recognising their URLs, naming them, refusing secrets.

A slide list may name DICOMweb series
(``dicomweb+https://host/dicom-web/studies/<Study>/series/<Series>``) and
slide objects in a store (``s3://bucket/dir/a.svs``, ``gs://...``,
``https://host/a.svs``: read by byte ranges or staged, see
:mod:`tilestream.slide.remote`) beside files. This module is what extraction knows of such URLs before a backend
opens them: whether an input is a URL (:func:`is_slide_url`), the stable
default name of its slide (:func:`url_slide_name`: the series UID), and the
check that it carries no secrets (:func:`check_slide_url`): a slide's URL
is recorded in its state file, ``summary.json`` and the report, so user
names, passwords and tokens belong in the ``TILESTREAM_DICOMWEB_*``
environment variables, never in the URL (the ``dicomweb`` backend takes
them from a URL too, for a slide opened by hand; extraction refuses them);
a store's credentials go in ``storage_options`` (``--storage-option``) or
the environment. A DICOMweb series' fingerprint for resumable runs is
:func:`url_fingerprint` (its metadata); an object's is
:func:`tilestream.extract.fingerprint.object_fingerprint` (its version: ETag,
else size and modification time).

Examples
--------
>>> url = "dicomweb+http://pacs.example/dicom-web/studies/1.2.3/series/1.2.3.4"
>>> is_slide_url(url), is_slide_url("/data/slide.svs"), is_slide_url("C:\\\\slides\\\\a.svs")
(True, False, False)
>>> url_slide_name(url), url_slide_name("s3://lab/cohort/case-7.svs")
('1.2.3.4', 'case-7')
>>> redact_url("dicomweb+https://ann:secret@pacs.example/dicom-web")
'dicomweb+https://pacs.example/dicom-web'
>>> check_slide_url(url, "slides.csv: line 2")  # no credentials, a series: accepted
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from tilestream.errors import (
    ConfigError,
    SlideNotFoundError,
    TileStreamError,
    UnsupportedSlideError,
)
from tilestream.storage import redact_url

__all__ = [
    "DICOMWEB_SCHEMES",
    "SERIES_FINGERPRINT_VERSION",
    "check_slide_url",
    "is_dicomweb_url",
    "is_slide_url",
    "redact_url",
    "series_fingerprint",
    "url_fingerprint",
    "url_fingerprint_matches",
    "url_slide_name",
]

log = logging.getLogger(__name__)

#: The URL schemes of DICOMweb series (the ``dicomweb`` slide backend's).
DICOMWEB_SCHEMES = ("dicomweb+http", "dicomweb+https")

#: Bumped when what a series fingerprint holds changes (an older one then never matches).
SERIES_FINGERPRINT_VERSION = 1
_SOP_INSTANCE_UID = "00080018"

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


def url_slide_name(url: str) -> str:
    """The default name of a URL's slide: the series UID of a DICOMweb series URL.

    A series UID is unique and does not change, so outputs keep their names
    whatever server or port serves the series. Other URLs: their last path
    segment without its extension.

    >>> url_slide_name("dicomweb+http://h/dicom-web/studies/1.2/series/1.2.3/")
    '1.2.3'
    >>> url_slide_name("https://h/slides/case-7.svs"), url_slide_name("s3://b/dir/a.svs")
    ('case-7', 'a')
    >>> url_slide_name("gs://b/x/case%201.ome.tiff?generation=3")
    'case 1.ome'
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
    """Refuse a slide URL that may carry secrets, or a DICOMweb URL that names no series.

    A slide's URL is recorded in its state file, ``summary.json`` and the
    report, so it must hold no user name or password (``user:pw@``), no query
    string (where tokens travel) and no fragment. ``where`` says where the URL
    came from (``"slides.csv: line 3"``); the message shows the URL masked.

    >>> check_slide_url("dicomweb+http://ann:pw@h/dicom-web/studies/1/series/2", "line 2")
    Traceback (most recent call last):
    ...
    tilestream.errors.ConfigError: line 2: the slide URL dicomweb+http://h/dicom-web/studies/1/series/2 \
holds credentials or a query string; give credentials in the TILESTREAM_DICOMWEB_* environment \
variables (DICOMweb) or in storage_options / --storage-option or the environment (s3://, gs://, \
https://), never in a slide URL (it is recorded in the run's files)
    """
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc or parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ConfigError(
            f"{where}: the slide URL {redact_url(url)} holds credentials or a query string; "
            "give credentials in the TILESTREAM_DICOMWEB_* environment variables (DICOMweb) or "
            "in storage_options / --storage-option or the environment (s3://, gs://, https://), "
            "never in a slide URL (it is recorded in the run's files)"
        )
    if is_dicomweb_url(url) and _series_uid(url) is None:
        raise ConfigError(
            f"{where}: the DICOMweb URL {url} names no series; a slide is one series: "
            ".../studies/<StudyInstanceUID>/series/<SeriesInstanceUID> "
            "(tilestream dicomweb list shows them)"
        )


def _without_bulk_uris(value: Any) -> Any:
    """A DICOM JSON value with every ``BulkDataURI`` (which names the server) blanked."""
    if isinstance(value, Mapping):
        return {k: ("" if k == "BulkDataURI" else _without_bulk_uris(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_bulk_uris(v) for v in value]
    return value


def _sop_uid(instance: Mapping[str, Any]) -> str:
    values = instance.get(_SOP_INSTANCE_UID, {}).get("Value") or [""]
    return str(values[0])


def series_fingerprint(series_uid: str, instances: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The fingerprint of a DICOMweb series from its instances' metadata (DICOM JSON).

    ``{"version", "kind": "dicomweb", "series_uid", "instances", "sop_uids",
    "metadata"}``: the number of instances, the SHA-256 of their sorted SOP
    Instance UIDs and of their whole metadata (in that order, canonical JSON,
    with ``BulkDataURI`` values blanked: they name the server, which may move).
    An instance added, removed or replaced, or any attribute changed, changes
    it; the server's address, port and credentials are not part of it.

    >>> a = {"00080018": {"vr": "UI", "Value": ["1.2.3.1"]}, "00280010": {"vr": "US", "Value": [256]}}
    >>> b = {"00080018": {"vr": "UI", "Value": ["1.2.3.2"]}}
    >>> fp = series_fingerprint("1.2.3", [b, a])
    >>> fp["instances"], fp == series_fingerprint("1.2.3", [a, b])
    (2, True)
    >>> fp == series_fingerprint("1.2.3", [a])
    False
    """
    ordered = sorted(instances, key=_sop_uid)
    uids = "\n".join(_sop_uid(i) for i in ordered)
    canonical = json.dumps(
        [_without_bulk_uris(i) for i in ordered], sort_keys=True, separators=(",", ":")
    )
    return {
        "version": SERIES_FINGERPRINT_VERSION,
        "kind": "dicomweb",
        "series_uid": series_uid,
        "instances": len(ordered),
        "sop_uids": hashlib.sha256(uids.encode()).hexdigest(),
        "metadata": hashlib.sha256(canonical.encode()).hexdigest(),
    }


def url_fingerprint(url: str) -> dict[str, Any]:
    """The fingerprint of the slide at ``url``: a DICOMweb series' :func:`series_fingerprint`.

    One WADO-RS metadata request, with the credentials of the ``dicomweb``
    backend (the environment's).

    Raises
    ------
    SlideError
        The server cannot be reached, refuses the credentials, or has no such
        series (:class:`~tilestream.errors.RemoteSlideError` and its kin); or
        ``url`` is not a DICOMweb URL (:class:`~tilestream.errors.UnsupportedSlideError`).
    """
    if not is_dicomweb_url(url):
        raise UnsupportedSlideError("no backend reads slides from this URL", path=redact_url(url))
    from tilestream.slide.dicomweb import DicomWebSession, DicomWebURL

    parsed = DicomWebURL.parse(url)
    session = DicomWebSession(parsed)
    try:
        metadata = session.get_json(
            f"/studies/{parsed.study_uid}/series/{parsed.series_uid}/metadata",
            what="the series' metadata",
        )
    finally:
        session.close()
    instances = (
        [m for m in metadata if isinstance(m, Mapping)] if isinstance(metadata, list) else []
    )
    return series_fingerprint(str(parsed.series_uid), instances)


def url_fingerprint_matches(recorded: Any, url: str) -> bool:
    """Whether the series at ``url`` still has the fingerprint ``recorded`` (for resume).

    A record of another kind or version, or of another series UID, never
    matches (no request is made). A series the server no longer has
    (:class:`~tilestream.errors.SlideNotFoundError`) does not match. A server
    that cannot be asked now (unreachable, failing, refusing the credentials)
    leaves the record standing, with a warning: the slide could not be
    extracted again either, and an outage must not turn a complete slide into
    a failed one; the next run that reaches the server checks it.
    """
    if (
        not isinstance(recorded, dict)
        or recorded.get("kind") != "dicomweb"
        or recorded.get("version") != SERIES_FINGERPRINT_VERSION
        or recorded.get("series_uid") != _series_uid(url)
    ):
        return False
    try:
        return url_fingerprint(url) == recorded
    except SlideNotFoundError:
        return False
    except (OSError, TileStreamError) as exc:
        log.warning(
            "%s: cannot check the series on its server (%s); its complete outputs stand",
            redact_url(url),
            exc,
        )
        return True
