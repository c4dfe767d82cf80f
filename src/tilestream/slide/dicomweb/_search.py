"""QIDO-RS search for whole-slide series on a DICOMweb server: :func:`list_series`."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tilestream.errors import RemoteSlideError, SlideAccessDeniedError, SlideNotFoundError
from tilestream.slide.dicomweb._client import DicomWebOptions, DicomWebSession
from tilestream.slide.dicomweb._metadata import first_value, pixel_spacing_mpp
from tilestream.slide.dicomweb._url import DicomWebAuth, DicomWebURL

__all__ = ["SeriesInfo", "list_series"]

_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_ASSOCIATED = {"LABEL": "label", "OVERVIEW": "macro", "THUMBNAIL": "thumbnail"}


@dataclass(frozen=True)
class SeriesInfo:
    """A whole-slide series found on a DICOMweb server.

    Attributes
    ----------
    study_uid, series_uid
        The series' UIDs.
    url
        Its slide URL for :func:`~tilestream.slide.open_slide` (no credentials, no query).
    description
        ``SeriesDescription`` (``""`` when none).
    dimensions
        Level-0 ``(width, height)``; ``None`` when the series has no VOLUME image.
    levels
        ``(width, height)`` of every pyramid level, largest first.
    mpp
        Microns per pixel ``(x, y)`` at level 0 from the pixel spacing, ``None`` when absent.
    associated
        Names of the associated images (``label``, ``macro``, ``thumbnail``).
    instances
        Number of whole-slide instances in the series.
    """

    study_uid: str
    series_uid: str
    url: str
    description: str
    dimensions: tuple[int, int] | None
    levels: tuple[tuple[int, int], ...]
    mpp: tuple[float, float] | None
    associated: tuple[str, ...]
    instances: int

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (tuples as lists).

        Examples
        --------
        >>> info = SeriesInfo("1", "2", "dicomweb+https://h/dw/studies/1/series/2", "", (4, 3),
        ...                   ((4, 3),), (0.5, 0.5), (), 1)
        >>> info.as_dict()["dimensions"]
        [4, 3]
        """
        return json.loads(json.dumps(dataclasses.asdict(self)))


def list_series(
    server_url: str,
    *,
    study: str | None = None,
    auth: DicomWebAuth | None = None,
    options: DicomWebOptions | None = None,
) -> list[SeriesInfo]:
    """The whole-slide (modality ``SM``) series on a DICOMweb server, or in one study.

    One QIDO-RS query for the series, then one WADO-RS metadata request per series.

    Parameters
    ----------
    server_url
        The DICOMweb root, ``https://host/dicom-web`` (``dicomweb+`` prefix
        optional; a ``/studies/<uid>`` suffix selects that study).
    study
        Only this study (overrides one named in the URL).
    auth
        Credentials (``None``: ``options.auth``, else the environment, else the URL's userinfo).
    options
        Timeouts and retries (:class:`DicomWebOptions`).

    Returns
    -------
    list of SeriesInfo
        Sorted by study UID, then series UID.

    Raises
    ------
    SlideAccessDeniedError
        The server refused the credentials (401/403).
    RemoteSlideError
        The server failed, cannot be reached, or does not speak DICOMweb.
    SlideNotFoundError
        No such study (HTTP 404).
    """
    prefixed = server_url if server_url.startswith("dicomweb+") else "dicomweb+" + server_url
    root = DicomWebURL.parse(prefixed, require_series=False)
    opts = options or DicomWebOptions()
    if auth is not None:
        opts = dataclasses.replace(opts, auth=auth)
    session = DicomWebSession(root, opts)
    try:
        found = _search(session, study or root.study_uid)
        keys = [
            (str(first_value(item, "0020000D") or study or root.study_uid or ""), item)
            for item in found
        ]
        keys = [(st, item) for st, item in keys if st and first_value(item, "0020000E")]

        def describe(key: tuple[str, Mapping[str, Any]]) -> SeriesInfo | None:
            study_uid, item = key
            series_uid = str(first_value(item, "0020000E"))
            meta = session.get_json(
                f"/studies/{study_uid}/series/{series_uid}/metadata",
                what=f"the metadata of series {series_uid}",
            )
            return _series_info(root.series(study_uid, series_uid), item, meta)

        with ThreadPoolExecutor(opts.concurrency) as pool:
            out = [info for info in pool.map(describe, keys) if info is not None]
    finally:
        session.close()
    return sorted(out, key=lambda s: (s.study_uid, s.series_uid))


_FIELDS = [("Modality", "SM"), ("includefield", "0008103E"), ("includefield", "0020000D")]


def _search(session: DicomWebSession, study: str | None) -> list[Mapping[str, Any]]:
    """QIDO-RS series of modality SM: in a study, else across the server.

    A server that does not search series across studies (``/series``) is asked
    for its studies with an SM series (``ModalitiesInStudy``), then each study's series.
    """
    query = urllib.parse.urlencode(_FIELDS)
    if study:
        found = session.get_json(f"/studies/{study}/series?{query}", what="the list of series")
        return _dicom_json(session, found)
    try:
        found = session.get_json(f"/series?{query}", what="the list of series")
    except (SlideNotFoundError, RemoteSlideError) as exc:
        if isinstance(exc, SlideAccessDeniedError):
            raise
        studies = session.get_json(
            "/studies?" + urllib.parse.urlencode({"ModalitiesInStudy": "SM"}),
            what="the list of studies",
        )
        out: list[Mapping[str, Any]] = []
        for item in studies if isinstance(studies, list) else []:
            uid = first_value(item, "0020000D")
            if uid:
                out.extend(_search(session, str(uid)))
        return out
    return _dicom_json(session, found)


def _dicom_json(session: DicomWebSession, found: Any) -> list[Mapping[str, Any]]:
    """A QIDO-RS answer's datasets; anything but a list of DICOM JSON objects is not DICOMweb.

    (Orthanc's own REST API, for one, answers ``/series`` with a list of its identifiers.)
    """
    if not isinstance(found, list) or not all(
        isinstance(f, Mapping) and all(isinstance(v, Mapping) for v in f.values()) for f in found
    ):
        raise RemoteSlideError(
            "the server does not speak DICOMweb (the QIDO-RS search answered with something "
            "other than a list of DICOM JSON datasets; is the URL the DICOMweb root?)",
            path=session.url.url,
        )
    return list(found)


def _series_info(url: DicomWebURL, item: Mapping[str, Any], meta: Any) -> SeriesInfo | None:
    instances = [
        m
        for m in (meta if isinstance(meta, list) else [])
        if isinstance(m, Mapping) and first_value(m, "00080016") == _WSI_SOP_CLASS
    ]
    if not instances:
        return None
    volumes: list[tuple[int, int, Mapping[str, Any]]] = []
    associated: set[str] = set()
    for inst in instances:
        kinds = inst.get("00080008", {}).get("Value") or []
        kind = str(kinds[2]).upper() if len(kinds) > 2 else "VOLUME"
        if kind in _ASSOCIATED:
            associated.add(_ASSOCIATED[kind])
            continue
        w, h = first_value(inst, "00480006"), first_value(inst, "00480007")
        if isinstance(w, int) and isinstance(h, int):
            volumes.append((w, h, inst))
    volumes.sort(key=lambda v: v[0] * v[1], reverse=True)
    levels = tuple(dict.fromkeys((w, h) for w, h, _ in volumes))
    mpp = pixel_spacing_mpp(volumes[0][2]) if volumes else None
    return SeriesInfo(
        study_uid=str(url.study_uid),
        series_uid=str(url.series_uid),
        url=url.url,
        description=str(first_value(item, "0008103E") or ""),
        dimensions=levels[0] if levels else None,
        levels=levels,
        mpp=(float(mpp[0]), float(mpp[1])) if mpp else None,
        associated=tuple(sorted(associated)),
        instances=len(instances),
    )
