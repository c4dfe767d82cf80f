"""The storage contract on local folders: ``LocalStore``, and ``FsspecStore`` over fsspec's local filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from tilestream.errors import StorageNotFoundError
from tilestream.storage import FsspecStore, LocalStore, Store, store_for
from tilestream.testing.storage import StoreConformance


class TestLocalStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "root")


class TestFsspecLocal(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        root = tmp_path / "root"
        root.mkdir()
        return FsspecStore(fsspec.filesystem("file"), str(root), url=root.as_uri())


def test_local_urls_and_paths_give_the_same_store_key(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.bin"
    for target in (path, str(path), path.as_uri()):
        store, key = store_for(target)
        assert isinstance(store, LocalStore)
        assert store.url_of(key) == os.fspath(path)


def test_local_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_atomic("x/y.bin", b"data")
    assert store.put_if_absent("x/z.bin", b"data")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.bin", "z.bin"]


class TestFsspecMemory(StoreConformance):
    # fsspec's in-memory filesystem: an object store without conditional writes.
    large_size = 3 * 1024 * 1024

    @pytest.fixture
    def store(self, request: pytest.FixtureRequest) -> Store:
        root = f"/conformance/{request.node.name}"
        return FsspecStore(fsspec.filesystem("memory"), root, url=f"memory:/{root}")


def test_check_root_names_a_missing_folder(tmp_path: Path) -> None:
    LocalStore(tmp_path).check_root()
    with pytest.raises(StorageNotFoundError, match="no such folder") as info:
        LocalStore(tmp_path / "gone").check_root()
    assert (tmp_path / "gone").as_uri() in str(info.value)
