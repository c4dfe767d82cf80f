"""The extraction suites over remote slides: the outputs of a remote run equal the local run's.

A test that takes the ``storage`` fixture (``tests/conftest.py``) runs once per kind
(``local``, then ``s3`` and ``http``), reading its slides from the copies in SeaweedFS
and writing its outputs to its local ``tmp_path`` as always. After a passing run this
module's autouse fixture reads the outputs the run left under ``tmp_path`` (TFRecords,
the index arrays, coordinates, rejections, manifests, outlines, tile images and
previews); after a remote run they must equal, byte for byte, what the same test
left in its local run (with the same other parameters) in this session.

Files that record where or when (``config.json``, ``summary.json``, state files, the
report) are left out: they name the slide's URL and carry timings.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: The outputs compared, by the ends of their names.
_COMPARED = (
    ".tfrecords",
    ".coords.csv",
    ".rejected.csv",
    "manifest.json",
    ".geojson",
    ".jpg",
    ".png",
)
#: What each local run left, by test (its name and parameters other than ``storage``).
_LOCAL: dict[str, dict[str, str]] = {}
#: Whether a test's call passed (set by the hook below, read by the fixture).
_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """Note whether the test itself passed (only then are its outputs compared)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_PASSED] = report.passed


def _digest(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".index.npz"):  # the arrays, not the mtime a writer records
        with np.load(io.BytesIO(data)) as z:
            data = b"".join(
                k.encode() + z[k].tobytes() for k in sorted(z.files) if k != "tfrecord_mtime_ns"
            )
    return hashlib.sha256(data).hexdigest()


def output_digests(root: Path) -> dict[str, str]:
    """The compared outputs under ``root``: relative path -> digest of the bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] == "tilestream-cache":
            continue
        if path.name.endswith(_COMPARED) or path.name.endswith(".index.npz"):
            found[rel.as_posix()] = _digest(path)
    return found


def _test_key(item: pytest.Item) -> str:
    params = getattr(getattr(item, "callspec", None), "params", {})
    others = sorted((k, repr(v)) for k, v in params.items() if k != "storage")
    return f"{item.nodeid.split('[', 1)[0]}{others}"


@pytest.fixture(autouse=True)
def _remote_outputs_equal_local(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a passing ``storage`` test: a remote run's outputs equal the local run's."""
    if "storage" not in request.fixturenames:
        yield
        return
    storage = request.getfixturevalue("storage")
    tmp_path: Path = request.getfixturevalue("tmp_path")
    yield
    if not request.node.stash.get(_PASSED, False):
        return
    key = _test_key(request.node)
    found = output_digests(tmp_path)
    if storage.local:
        _LOCAL[key] = found
        return
    local = _LOCAL.get(key)
    if local is None:  # the local run was not selected, or did not pass
        return
    assert found.keys() == local.keys(), (
        f"{storage.kind}: outputs differ from the local run's: "
        f"only remote {sorted(found.keys() - local.keys())}, "
        f"only local {sorted(local.keys() - found.keys())}"
    )
    differ = sorted(k for k in found if found[k] != local[k])
    assert not differ, f"{storage.kind}: bytes differ from the local run's in {differ}"
