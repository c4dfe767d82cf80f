"""Helpers of the DICOMweb slide tests: a multi-level DICOM series made from a real slide, a counting proxy.

:func:`dicomize_pyramid` converts ``CMU-1-Small-Region.svs`` with Orthanc's
``OrthancWSIDicomizer`` (3 levels, 240 px JPEG frames) and makes the files
readable by OpenSlide and wsidicom: the dicomizer writes no ``ImageType`` and
marks each level a one-part concatenation, so ``ImageType`` is set, the
concatenation attributes dropped and ``DimensionOrganizationType`` set to
``TILED_FULL`` (per-frame positions dropped) or ``TILED_SPARSE`` (kept).

:class:`CountingProxy` forwards HTTP ``GET`` requests to a server and records
each request's path, so tests can count WADO-RS frame requests.
"""

from __future__ import annotations

import http.client
import http.server
import importlib
import threading
import urllib.parse
from pathlib import Path
from types import ModuleType

from conftest import missing
from tilestream.testing.orthanc import dicomize

__all__ = ["CMU_MPP", "CountingProxy", "dicomize_pyramid", "require_module", "require_wsidicom"]

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
