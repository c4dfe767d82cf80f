"""One way to find TFRecords (:mod:`tilestream.runfolder`), with each caller's semantics.

A loader, ``merge``/``to-images`` and :func:`merge_tfrecords` given a folder
read its top-level ``*.tfrecords``; ``manifest`` and ``index`` search it
recursively and take every TFRecord suffix. Hidden entries and temporary files
of an interrupted write are never taken. A loader given a folder's prefix in SeaweedFS
(``storage``: ``s3``) takes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _remote import Remote, storage_kinds
from tilestream.tfrecord import TFRecordWriter, iter_records, serialized_record


def _write(path: Path, slide: str, n: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path, index=False) as w:
        for i in range(n):
            w.write(serialized_record(slide, b"\xff\xd8img", i, 0))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Top level ``a.tfrecords``, ``b.tfrecords``; besides, files no folder reader takes."""
    root = tmp_path / "run"
    _write(root / "b.tfrecords", "b")
    _write(root / "a.tfrecords", "a")
    _write(root / "c.tfrecord", "c")  # another suffix: recursive discovery only
    _write(root / "sub" / "d.tfrecords", "d")  # a sub-folder: recursive discovery only
    _write(root / ".hidden" / "e.tfrecords", "e")  # a hidden folder: never
    _write(root / ".f.tfrecords", "f")  # a hidden file: never
    _write(root / ".g.tfrecords.0123456789ab.tmp", "g")  # an interrupted write: never
    return root


def test_manifest_names_are_the_runfolder_ones() -> None:
    from tilestream import runfolder
    from tilestream.dataset import manifest

    assert manifest.find_tfrecords is runfolder.find_tfrecords
    assert manifest.TFRECORD_SUFFIXES is runfolder.TFRECORD_SUFFIXES
    assert "find_tfrecords" in manifest.__all__
    assert "TFRECORD_SUFFIXES" in manifest.__all__


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)  # a listing
def test_a_loader_given_a_folder_reads_its_top_level_tfrecords(
    folder: Path, storage: Remote
) -> None:
    from tilestream.loaders.tiles import plan_tiles

    plan = plan_tiles(storage.put_tree(folder), **storage.kw)  # remote: the folder's prefix
    assert [Path(p).name for p in plan.paths] == ["a.tfrecords", "b.tfrecords"]
    assert plan.slides == ["a", "b"]


def test_a_loader_given_a_list_reads_the_paths_as_given(folder: Path) -> None:
    from tilestream.loaders.tiles import plan_tiles

    given = [os.path.join(str(folder), ".", "b.tfrecords"), str(folder / "c.tfrecord")]
    assert plan_tiles(given).paths == given  # not normalised, not filtered by suffix


def test_manifest_searches_recursively_with_every_suffix(folder: Path) -> None:
    from tilestream.dataset import scan_manifest

    scan = scan_manifest(folder)
    assert sorted(scan.entries) == ["a.tfrecords", "b.tfrecords", "c.tfrecord", "sub/d.tfrecords"]


def test_merge_of_a_folder_takes_its_top_level_tfrecords(folder: Path, tmp_path: Path) -> None:
    from tilestream.dataset import merge_tfrecords

    out = tmp_path / "merged.tfrecords"
    from tilestream.tfrecord import parse_example

    assert merge_tfrecords(folder, out) == 4
    assert sorted({parse_example(r)["slide"] for r in iter_records(out)}) == [b"a", b"b"]


def test_cli_merge_and_to_images_of_a_folder_take_its_top_level(
    folder: Path, tmp_path: Path
) -> None:
    from tilestream.cli import main
    from tilestream.tfrecord import parse_example

    merged = tmp_path / "m.tfrecords"
    assert main(["tfrecord", "merge", str(folder), "-o", str(merged)]) == 0
    assert sorted({parse_example(r)["slide"] for r in iter_records(merged)}) == [b"a", b"b"]
    images = tmp_path / "images"
    assert main(["tfrecord", "to-images", str(folder), "-o", str(images)]) == 0
    assert sorted(p.name for p in images.iterdir()) == ["a", "b"]


def test_cli_index_searches_folders_recursively_skipping_hidden_ones(folder: Path) -> None:
    from tilestream.cli import main

    assert main(["index", str(folder)]) == 0
    indexed = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.index.npz"))
    # Before discovery was shared, the index command also searched hidden folders.
    assert indexed == ["a.index.npz", "b.index.npz", "c.index.npz", "sub/d.index.npz"]


def test_dataset_reads_the_run_folder_of_its_tile_size(tmp_path: Path) -> None:
    from tilestream.dataset import Dataset
    from tilestream.runfolder import run_folder_name

    _write(tmp_path / run_folder_name(256, 128) / "s1.tfrecords", "s1", 3)
    _write(tmp_path / run_folder_name(512, 128) / "s1.tfrecords", "s1", 5)
    ds = Dataset(tfrecords=tmp_path, tile_px=256, tile_um=128)
    assert ds.num_tiles == 3
    assert Path(ds.tfrecords()[0]).parent.name == "256px_128um"
