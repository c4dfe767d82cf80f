"""Helpers of the DICOMweb slide tests: a multi-level DICOM series made from a real slide, a counting proxy.

:func:`dicomize_pyramid` converts ``CMU-1-Small-Region.svs`` with Orthanc's
``OrthancWSIDicomizer`` (3 levels, 240 px JPEG frames) and makes the files
readable by OpenSlide and wsidicom: the dicomizer writes no ``ImageType`` and
marks each level a one-part concatenation, so ``ImageType`` is set, the
concatenation attributes dropped and ``DimensionOrganizationType`` set to
``TILED_FULL`` (per-frame positions dropped) or ``TILED_SPARSE`` (kept).

:class:`CountingProxy` forwards HTTP ``GET`` requests to a server and records
each request's path, so tests can count WADO-RS frame requests.

The ``server`` and ``series`` fixtures (module scope: each test module that
imports them gets its own Orthanc) hold the shared DICOM series and the CMU
pyramid, TILED_FULL and TILED_SPARSE.
"""

from __future__ import annotations

import http.client
import http.server
import importlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from conftest import missing
from tilestream.testing.orthanc import (
    OrthancServer,
    dicomize,
    dicomizer_binary,
    orthanc_binary,
    plugin_path,
)

__all__ = [
    "CMU_MPP",
    "CountingProxy",
    "Stored",
    "dicomize_pyramid",
    "frame_numbers",
    "new_series",
    "require_module",
    "require_wsidicom",
    "series_fixture",
    "server_fixture",
    "upload",
    "whole_level",
]

CMU_MPP = 0.499
_CONCATENATION = (
    "ConcatenationUID",
    "ConcatenationFrameOffsetNumber",
    "InConcatenationNumber",
    "InConcatenationTotalNumber",
    "SOPInstanceUIDOfConcatenationSource",
)


def require_module(name: str) -> ModuleType:
    """A module of the ``dicomweb`` extra, or skip (fail under ``CI=true``) where it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the dicomweb extra ({name}) is not installed")
        raise


def require_wsidicom() -> ModuleType:
    """wsidicom, or skip (fail under ``CI=true``) where the ``dicomweb`` extra is missing."""
    return require_module("wsidicom")


def dicomize_pyramid(
    slide: Path, folder: Path, *, sparse: bool = False, concatenated: bool = False
) -> list[Path]:
    """A 3-level DICOM pyramid of ``slide`` in ``folder`` (TILED_FULL, or TILED_SPARSE).

    The dicomizer's own files go to a sibling folder (``<folder>-raw``);
    ``concatenated`` keeps their concatenation attributes.
    """
    pydicom = require_module("pydicom")
    encaps = require_module("pydicom.encaps")
    raw = folder.parent / f"{folder.name}-raw"
    width, height = 2220, 2967  # CMU-1-Small-Region at 0.499 um/px
    dicomize(
        slide,
        raw,
        options=[
            "--pyramid=1",
            "--levels=3",
            # the dicomizer takes the imaged width for the rows and the height for the columns
            f"--imaged-width={height * CMU_MPP / 1000}",
            f"--imaged-height={width * CMU_MPP / 1000}",
        ],
    )
    out = []
    for i, path in enumerate(sorted(raw.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL" if i == 0 else "DERIVED", "PRIMARY", "VOLUME", "NONE"]
        for keyword in () if concatenated else _CONCATENATION:
            if keyword in ds:
                delattr(ds, keyword)
        ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
        first = next(encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        if _adobe_rgb(first):
            # level 0's tiles are copied from the SVS: RGB-coded (Aperio; an Adobe marker says
            # so), though the dicomizer says YBR_FULL_422 (OpenSlide believes the attribute)
            ds.PhotometricInterpretation = "RGB"
        if not sparse and "PerFrameFunctionalGroupsSequence" in ds:
            del ds.PerFrameFunctionalGroupsSequence
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        ds.save_as(target)
        out.append(target)
    return out


def _adobe_rgb(data: bytes) -> bool:
    """Whether a JPEG has an Adobe APP14 marker with ``transform=0`` (RGB-coded)."""
    at = data.find(b"\xff\xee\x00\x0eAdobe")
    return at >= 0 and data[at + 15] == 0


class CountingProxy:
    """An HTTP proxy on loopback forwarding ``GET`` to ``upstream`` and recording the paths."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.host, self.port_up = parts.hostname or "127.0.0.1", parts.port or 80
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.failed = 0
        self._fail: list[int] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.paths.append(self.path)
                    proxy.headers.append(dict(self.headers.items()))
                    status = proxy._fail.pop(0) if proxy._fail else None
                    proxy.failed += status is not None
                if status is not None:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.host, proxy.port_up, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("GET", self.path, headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                conn.close()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, upstream_url: str) -> str:
        """``upstream_url`` (same path) through the proxy."""
        parts = urllib.parse.urlsplit(upstream_url)
        return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def frame_requests(self) -> list[str]:
        """The recorded WADO-RS frame requests."""
        with self._lock:
            return [p for p in self.paths if "/frames/" in p]

    def fail_next(self, statuses: list[int]) -> None:
        """Answer the next requests with these HTTP statuses (no body) instead of forwarding."""
        with self._lock:
            self._fail = list(statuses)
            self.failed = 0

    def reset(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.paths.clear()

    def close(self) -> None:
        """Stop the proxy."""
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Stored:
    """A series on our own server, and the local files it was uploaded from."""

    url: str
    folder: Path


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc of the test module's own (series uploaded on purpose do not reach others)."""
    if orthanc_binary() is None or plugin_path("dicomweb") is None or dicomizer_binary() is None:
        missing("Orthanc, its DICOMweb plugin and OrthancWSIDicomizer are needed")
    with OrthancServer(tmp_path_factory.mktemp("orthanc-slide")) as srv:
        yield srv


def upload(server: OrthancServer, folder: Path) -> Stored:
    """Upload a folder holding one series."""
    refs = server.upload([folder])
    assert len(refs) == 1, folder
    return Stored(refs[0].url(server.dicomweb_url), folder)


@pytest.fixture(scope="module", name="series")
def series_fixture(
    server: OrthancServer,
    cmu_slide: Path,
    slides_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Stored]:
    """The shared DICOM series and a 3-level pyramid of CMU-1-Small-Region (full and sparse)."""
    root = tmp_path_factory.mktemp("dicom")
    out = {}
    for name in ("openslide-boxes", "highdicom-jpegls", "pathml-small_dicom"):
        out[name] = upload(server, slides_dir / f"dicom-{name}")
    for name, sparse in (("cmu-full", False), ("cmu-sparse", True)):
        dicomize_pyramid(cmu_slide, root / name, sparse=sparse)
        out[name] = upload(server, root / name)
    return out


def whole_level(slide: Any, level: int) -> np.ndarray:
    """A whole level of a slide as RGB."""
    w, h = slide.level_dimensions[level]
    return slide.read_region((0, 0), level, (w, h), as_array=True)


def frame_numbers(paths: list[str]) -> list[int]:
    """The frame numbers asked for by WADO-RS frame request paths."""
    return [int(n) for p in paths for n in p.rsplit("/frames/", 1)[1].split("?")[0].split(",")]


def new_series(ds: Any) -> None:
    """Give a pydicom dataset new study, series and instance UIDs."""
    generate_uid = require_module("pydicom.uid").generate_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
