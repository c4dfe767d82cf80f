"""A real Orthanc server for the DICOMweb tests, started once per session on a free loopback port.

The ``orthanc`` fixture holds the shared DICOM whole-slide series
(``../shared/testdata/slides/dicom-*``) uploaded through Orthanc's REST API,
keyed by the folder's name without ``dicom-``, and the SVS slides converted
once per session with ``OrthancWSIDicomizer`` (:data:`DICOMIZED`: keys
``cmu-small-region`` and ``tcga-jp2k``). Where Orthanc, its DICOMweb plugin
or the dicomizer is not installed the tests skip; under ``CI=true`` they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import missing
from tilestream.testing.orthanc import (
    OrthancServer,
    SeriesRef,
    dicomize_readable,
    dicomizer_binary,
    orthanc_binary,
    plugin_path,
)

#: The JPEG 2000 TCGA slide states no microns per pixel; it is dicomized with this nominal value.
TCGA_NOMINAL_MPP = 0.5

#: Series made with the dicomizer: key -> (slide file, the mpp to give it or None for its own).
DICOMIZED: dict[str, tuple[str, float | None]] = {
    "cmu-small-region": ("CMU-1-Small-Region.svs", None),
    "tcga-jp2k": ("tcga-cr-7395-01a-01-ts1.svs", TCGA_NOMINAL_MPP),
}


@dataclass
class OrthancData:
    """The running server and the series stored in it (name -> :class:`SeriesRef`)."""

    server: OrthancServer
    series: dict[str, SeriesRef] = field(default_factory=dict)

    def url(self, name: str) -> str:
        """The ``dicomweb+http://`` slide URL of a stored series."""
        return self.series[name].url(self.server.dicomweb_url)


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An empty Orthanc with the DICOMweb plugin, for the whole session."""
    if orthanc_binary() is None or plugin_path("dicomweb") is None:
        missing(
            "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        )
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="session")
def dicomized_folders(
    tmp_path_factory: pytest.TempPathFactory, slides_dir: Path
) -> dict[str, Path]:
    """The :data:`DICOMIZED` slides converted once per session (key -> folder of DICOM files).

    Empty where ``OrthancWSIDicomizer`` is not installed.
    """
    if dicomizer_binary() is None:
        return {}
    root = tmp_path_factory.mktemp("dicomized")
    folders = {}
    for key, (name, mpp) in DICOMIZED.items():
        dicomize_readable(slides_dir / name, root / key, mpp=mpp)
        folders[key] = root / key
    return folders


@pytest.fixture(scope="session")
def dicomized(dicomized_folders: dict[str, Path]) -> dict[str, Path]:
    """The dicomized slides' folders; skips (fails under CI) without the dicomizer."""
    if not dicomized_folders:
        missing("OrthancWSIDicomizer is not installed (apt-get install orthanc-wsi)")
    return dicomized_folders


@pytest.fixture(scope="session")
def orthanc(
    orthanc_server: OrthancServer, slides_dir: Path, dicomized_folders: dict[str, Path]
) -> OrthancData:
    """The session's Orthanc holding the shared DICOM series and the dicomized slides."""
    data = OrthancData(orthanc_server)
    for folder in sorted(slides_dir.glob("dicom-*")):
        refs = orthanc_server.upload([folder])
        if refs:
            data.series[folder.name.removeprefix("dicom-")] = refs[0]
    for key, folder in dicomized_folders.items():
        (data.series[key],) = orthanc_server.upload([folder])
    return data
