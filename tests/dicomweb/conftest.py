"""A real Orthanc server for the DICOMweb tests, started once per session on a free loopback port.

The ``orthanc`` fixture holds the shared DICOM whole-slide series
(``../shared/testdata/slides/dicom-*``) uploaded through Orthanc's REST API,
keyed by the folder's name without ``dicom-``. Where Orthanc or its DICOMweb
plugin is not installed the tests skip; under ``CI=true`` they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import missing
from tilestream.testing.orthanc import OrthancServer, SeriesRef, orthanc_binary, plugin_path


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
def orthanc(orthanc_server: OrthancServer, slides_dir: Path) -> OrthancData:
    """The session's Orthanc holding the shared DICOM whole-slide series."""
    data = OrthancData(orthanc_server)
    for folder in sorted(slides_dir.glob("dicom-*")):
        refs = orthanc_server.upload([folder])
        if refs:
            data.series[folder.name.removeprefix("dicom-")] = refs[0]
    return data
