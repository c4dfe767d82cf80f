"""A real Orthanc DICOM server on loopback, for tests and benchmarks of DICOMweb reading.

:class:`OrthancServer` writes an Orthanc configuration (loopback HTTP on a
free port, no DICOM network listener, storage in a given folder, the DICOMweb
plugin enabled, optional HTTP basic-auth users), starts Debian's ``Orthanc``
binary, waits until its REST API answers and stops it (terminate, then kill)
when done. :meth:`OrthancServer.upload` stores DICOM files through the REST
API; :func:`dicomize` converts a slide to DICOM files with Orthanc's
``OrthancWSIDicomizer``, so the same files can be read locally and through
the server. The dicomizer's default output is read neither by wsidicom nor by
OpenSlide; :func:`dicomize_readable` applies the recipe that is
(:func:`dicomizer_options`: ImageType, one instance per level, the pixel
spacing, OpenSlide for what it cannot copy), explained in ``docs/dicomweb.md``.

Nothing here needs the network beyond ``127.0.0.1``.

Examples
--------
>>> from pathlib import Path
>>> import tempfile
>>> if orthanc_binary() is not None:  # doctest: +SKIP
...     with tempfile.TemporaryDirectory() as tmp, OrthancServer(Path(tmp)) as server:
...         print(server.dicomweb_url.startswith("http://127.0.0.1:"))
True
"""

from __future__ import annotations

import base64
import ctypes.util
import json
import logging
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tifffile

from tilestream.slide import open_slide
from tilestream.testing._process import ServerProcess
from tilestream.testing._process import free_port as _free_port

__all__ = [
    "COPIED_IMAGE_TYPE",
    "PLUGIN_DIRS",
    "REENCODED_IMAGE_TYPE",
    "OrthancError",
    "OrthancServer",
    "SeriesRef",
    "copies_tiles",
    "dicomize",
    "dicomize_readable",
    "dicomizer_binary",
    "dicomizer_options",
    "free_port",
    "openslide_library",
    "orthanc_binary",
    "plugin_path",
]

#: Where Debian (and most Linux packages) install Orthanc's plugins.
PLUGIN_DIRS = (
    Path("/usr/share/orthanc/plugins"),
    Path("/usr/lib/orthanc/plugins"),
    Path("/usr/local/share/orthanc/plugins"),
)
logger = logging.getLogger(__name__)

_PLUGIN_FILES = {"dicomweb": "libOrthancDicomWeb.so", "wsi": "libOrthancWSI.so"}


class OrthancError(RuntimeError):
    """Orthanc could not be started, did not answer, or refused a request."""


@dataclass(frozen=True)
class SeriesRef:
    """A series stored in Orthanc: its UIDs, and the DICOM files it was made from."""

    study_uid: str
    series_uid: str
    files: tuple[Path, ...] = ()

    def url(self, dicomweb_url: str) -> str:
        """The series' ``dicomweb+http(s)://...`` slide URL under a DICOMweb root."""
        return (
            f"dicomweb+{dicomweb_url.rstrip('/')}/studies/{self.study_uid}/series/{self.series_uid}"
        )


def orthanc_binary() -> str | None:
    """The ``Orthanc`` executable, or ``None`` where it is not installed."""
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None
    )


def dicomizer_binary() -> str | None:
    """The ``OrthancWSIDicomizer`` executable (Debian ``orthanc-wsi``), or ``None``."""
    return shutil.which("OrthancWSIDicomizer")


def plugin_path(name: str) -> Path | None:
    """The shared library of an Orthanc plugin (``"dicomweb"`` or ``"wsi"``), or ``None``."""
    filename = _PLUGIN_FILES[name]
    for folder in PLUGIN_DIRS:
        if (folder / filename).is_file():
            return folder / filename
    return None


def free_port(*, avoid: Iterable[int] = ()) -> int:
    """A TCP port free on ``127.0.0.1`` right now (and not in ``avoid``)."""
    return _free_port(avoid=avoid, error=OrthancError)


class OrthancServer(ServerProcess):
    """An Orthanc process serving REST and DICOMweb on a free loopback port.

    Parameters
    ----------
    workdir
        A folder for the configuration, the database, the stored files and
        the server's log (``orthanc.log``).
    users
        HTTP basic-auth users (name -> password); none: no authentication.
    plugins
        Plugins to load, by name (``"dicomweb"``, ``"wsi"``).
    start_timeout
        Seconds to wait for the REST API to answer.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        plugins: Sequence[str] = ("dicomweb",),
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self.users = dict(users or {})
        self.plugins = tuple(plugins)
        self.port = 0

    process_name = server_name = "Orthanc"
    log_name = "orthanc.log"
    error = OrthancError

    # -- addresses ----------------------------------------------------------------
    @property
    def url(self) -> str:
        """The REST API's root, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root, ``http://127.0.0.1:PORT/dicom-web``."""
        return f"{self.url}/dicom-web"

    # -- lifetime -----------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        plugins = []
        for name in self.plugins:
            path = plugin_path(name)
            if path is None:
                raise OrthancError(f"the Orthanc plugin {name!r} is not installed")
            plugins.append(str(path))
        storage = self.workdir / "storage"
        return {
            "Name": "tilestream-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpThreadsCount": 16,
            "MaximumStorageCacheSize": 256,
            "StableAge": 1,
            "HttpTimeout": 60,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def start(self) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until it answers."""
        binary = orthanc_binary()
        if binary is None:
            raise OrthancError("Orthanc is not installed (Debian: apt-get install orthanc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2))
        self._launch([binary, "--logdir=" + str(self.workdir), str(config)])
        self._wait_ready()
        return self

    def _ready(self) -> bool:
        try:
            self.get("/system")
        except (OSError, OrthancError):
            return False
        return True

    # -- REST -----------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self.users:
            name, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{name}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        if body is not None:
            request.add_header("Content-Type", "application/dicom")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise OrthancError(f"Orthanc answered {exc.code} to {method} {path}") from None

    def get(self, path: str) -> Any:
        """``GET`` a REST path (``/system``, ``/series``...), decoded from JSON."""
        return json.loads(self._request("GET", path))

    def upload(self, paths: Iterable[Path]) -> list[SeriesRef]:
        """Store DICOM files (or every file under folders) and return their series.

        Files that are not DICOM (``DICOMDIR`` aside, Orthanc refuses them) are skipped.
        """
        files = sorted(_dicom_files(paths))
        series: dict[str, list[Path]] = {}
        for path in files:
            try:
                answer = json.loads(self._request("POST", "/instances", path.read_bytes()))
            except OrthancError:
                continue
            series.setdefault(answer["ParentSeries"], []).append(path)
        return [self._series_ref(sid, found) for sid, found in series.items()]

    def _series_ref(self, orthanc_id: str, files: Sequence[Path]) -> SeriesRef:
        info = self.get(f"/series/{orthanc_id}")
        study = self.get(f"/studies/{info['ParentStudy']}")
        return SeriesRef(
            study_uid=str(study["MainDicomTags"]["StudyInstanceUID"]),
            series_uid=str(info["MainDicomTags"]["SeriesInstanceUID"]),
            files=tuple(files),
        )


def _dicom_files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file() and _is_dicom(p))
        elif _is_dicom(path):
            yield path


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


#: ImageType of the levels the dicomizer copies from JPEG tiles and of those it re-encodes.
#: wsidicom and OpenSlide only read instances whose third value names the flavour (VOLUME);
#: ``OrthancWSIDicomizer`` writes no ImageType at all unless a ``--dataset`` gives one.
COPIED_IMAGE_TYPE = "ORIGINAL\\PRIMARY\\VOLUME\\NONE"
REENCODED_IMAGE_TYPE = "DERIVED\\PRIMARY\\VOLUME\\NONE"
_TIFF_JPEG = 7


def openslide_library() -> str | None:
    """The OpenSlide shared library for the dicomizer's ``--openslide``, or ``None``.

    The one ``openslide-bin`` ships (the one tilestream reads with) first, else
    the system's (a name the dynamic loader resolves).
    """
    try:
        import openslide_bin
    except ImportError:
        pass
    else:
        folder = Path(openslide_bin.__file__).parent
        found = sorted(
            p for p in folder.iterdir() if p.name.startswith(("libopenslide", "openslide"))
        )
        if found:
            return str(found[0])
    return ctypes.util.find_library("openslide")


def copies_tiles(slide: Path) -> bool:
    """Whether the dicomizer can copy ``slide``'s tiles without decoding them.

    It can for a tiled TIFF (SVS, generic pyramidal TIFF) whose levels hold
    JPEG tiles; anything else (JPEG 2000 SVS, other vendors) it reads through
    OpenSlide and re-encodes.
    """
    try:
        with tifffile.TiffFile(slide) as tif:
            page = tif.pages.first
            return bool(page.is_tiled) and int(page.compression) == _TIFF_JPEG
    except (tifffile.TiffFileError, OSError, ValueError):
        return False


def dicomizer_options(
    slide: Path,
    *,
    mpp: float | tuple[float, float] | None = None,
    tile_size: int = 256,
    jpeg_quality: int = 90,
) -> tuple[list[str], dict[str, str]]:
    """The dicomizer options and ``--dataset`` JSON that give wsidicom- and OpenSlide-readable files.

    - ``ImageType`` set (:data:`COPIED_IMAGE_TYPE` or :data:`REENCODED_IMAGE_TYPE`):
      without it wsidicom finds no level ("No level instances found") and
      OpenSlide cannot tell the flavour;
    - ``--max-size=0``: one instance per level, no concatenation (OpenSlide
      refuses a concatenation of one instance);
    - ``--imaged-width/--imaged-height`` from the microns per pixel (the slide's
      own, or ``mpp`` where it states none), so that the pixel spacing is right
      (the default is a 15 x 15 mm specimen, whatever the pixel count). The
      dicomizer's "width" runs along the image's rows (its ImageOrientationSlide
      is ``0,-1,0,-1,0,0``): it is the height in pixels times the y spacing;
    - a slide whose tiles cannot be copied is read through OpenSlide
      (``--openslide``) and re-encoded as JPEG in ``tile_size`` tiles.
    """
    with open_slide(slide) as source:
        width, height = source.dimensions
        found = source.mpp
    spacing = _spacing(mpp) if mpp is not None else found
    if spacing is None:
        raise OrthancError(f"{slide} states no microns per pixel: give mpp= to dicomize it")
    mpp_x, mpp_y = spacing
    options = [
        "--max-size=0",
        f"--imaged-width={height * mpp_y / 1000:.9f}",
        f"--imaged-height={width * mpp_x / 1000:.9f}",
    ]
    library = openslide_library()
    if library is not None:
        options.append(f"--openslide={library}")
    if copies_tiles(slide):
        return options, {"ImageType": COPIED_IMAGE_TYPE}
    if library is None:
        raise OrthancError(f"{slide}: its tiles cannot be copied and no OpenSlide library is found")
    options += [
        "--compression=jpeg",
        f"--jpeg-quality={jpeg_quality}",
        f"--tile-width={tile_size}",
        f"--tile-height={tile_size}",
    ]
    return options, {"ImageType": REENCODED_IMAGE_TYPE}


def _spacing(mpp: float | tuple[float, float]) -> tuple[float, float]:
    return (float(mpp), float(mpp)) if isinstance(mpp, (int, float)) else (mpp[0], mpp[1])


def dicomize(
    slide: Path, folder: Path, *, options: Sequence[str] = (), timeout: float = 900.0
) -> list[Path]:
    """Convert a slide to DICOM files in ``folder`` with ``OrthancWSIDicomizer``, as it comes.

    ``options`` are the dicomizer's command-line options (``--compression=jpeg``,
    ``--tile-width=256``...). With none, the files are the dicomizer's default
    output, which wsidicom and OpenSlide do not read (no ImageType, a
    concatenation per level, a 15 mm specimen's pixel spacing): use
    :func:`dicomize_readable` for files they read. Returns the files written.
    """
    binary = dicomizer_binary()
    if binary is None:
        raise OrthancError(
            "OrthancWSIDicomizer is not installed (Debian: apt-get install orthanc-wsi)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    command = [binary, f"--folder={folder}", *options, str(slide)]
    result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    log = result.stderr.decode(errors="replace").strip().splitlines()
    if result.returncode != 0:
        raise OrthancError(f"OrthancWSIDicomizer failed on {slide}: {' / '.join(log[-3:])}")
    logger.debug("OrthancWSIDicomizer on %s: %s", slide, log[-1] if log else "")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def dicomize_readable(
    slide: Path,
    folder: Path,
    *,
    mpp: float | tuple[float, float] | None = None,
    tile_size: int = 256,
    jpeg_quality: int = 90,
    options: Sequence[str] = (),
    timeout: float = 900.0,
) -> list[Path]:
    """Convert a slide to DICOM files that wsidicom (files, DICOMweb) and OpenSlide read.

    :func:`dicomize` with the recipe of :func:`dicomizer_options` (see there
    for why each part is needed). JPEG tiles of a tiled TIFF are copied (the
    pixels stay the source's); other slides are decoded through OpenSlide and
    re-encoded (``tile_size``, ``jpeg_quality``). ``mpp`` overrides (or
    supplies) the microns per pixel; ``options`` are further dicomizer options,
    not repeating the recipe's. Returns the files written, one per pyramid level.

    Raises
    ------
    OrthancError
        The dicomizer is missing or failed, or the slide states no microns per
        pixel and none is given (the message names the slide).
    """
    recipe, dataset = dicomizer_options(
        slide, mpp=mpp, tile_size=tile_size, jpeg_quality=jpeg_quality
    )
    with tempfile.TemporaryDirectory() as tmp:
        dataset_file = Path(tmp) / "dataset.json"
        dataset_file.write_text(json.dumps(dataset))
        return dicomize(
            slide,
            folder,
            options=[f"--dataset={dataset_file}", *recipe, *options],
            timeout=timeout,
        )
