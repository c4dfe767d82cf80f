"""An index passed to ``TFRecord(path, index=...)`` is checked like the automatic one.

Missing rows, duplicated rows, an empty index, merged records, or a 1-D
array: :class:`~tilestream.errors.InvalidTFRecordIndex` naming both the index
and the TFRecord, never 29, 37 or 0 records of 34. A correct index (its own,
a copy's, plain text, an array, for a compressed file) is used as given. Each test runs
once per ``storage`` kind: the TFRecord on local disk, or its copy in SeaweedFS read over
S3 or HTTP (the explicit index stays a local file or array).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _remote import Remote
from tilestream.errors import InvalidTFRecordIndex
from tilestream.tfrecord import (
    TFRecord,
    TFRecordIndex,
    TFRecordWriter,
    create_index,
    save_index,
    serialized_record,
)

N = 34


def _make(path: Path, compression: str | None = None) -> Path:
    with TFRecordWriter(path, compression=compression, index=False) as w:
        for i in range(N):
            w.write(serialized_record("s", bytes([i]) * (50 + 7 * i), i * 256, 0))
    return path


def _bad_tables(good: np.ndarray) -> dict[str, np.ndarray]:
    merged = np.concatenate([[[0, int(good[0, 1] + good[1, 1])]], good[2:]])
    return {
        "missing": good[:29],
        "missing-middle": np.delete(good, [3, 4, 5, 6, 7], axis=0),
        "duplicated": np.concatenate([good, good[:3]]),
        "duplicated-middle": np.insert(good, 5, good[4:7], axis=0),
        "empty": np.zeros((0, 2), np.int64),
        "merged": merged,
    }


@pytest.fixture(params=[None, "gzip"])
def tfrecord(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return _make(tmp_path / f"a.tfrecords{'.gz' if request.param else ''}", request.param)


@pytest.mark.parametrize("fmt", ["npz", "text", "array"])
@pytest.mark.parametrize(
    "bad", ["missing", "missing-middle", "duplicated", "duplicated-middle", "empty", "merged"]
)
def test_a_wrong_explicit_index_is_refused(
    storage: Remote,
    tfrecord: Path,
    tmp_path: Path,
    fmt: str,
    bad: str,
) -> None:
    good = create_index(tfrecord, write=False).array
    table = _bad_tables(good)[bad]
    if fmt == "array":
        index: Path | np.ndarray = table
    else:
        index = save_index(
            TFRecordIndex(table), tmp_path / f"x.index{'.npz' if fmt == 'npz' else ''}"
        )
    with pytest.raises(InvalidTFRecordIndex) as info:
        len(TFRecord(storage.name(tfrecord), index=index, **storage.kw))
    msg = str(info.value)
    assert storage.name(tfrecord) in msg
    assert (str(index) if fmt != "array" else "index array") in msg


def test_a_right_explicit_index_is_used(storage: Remote, tfrecord: Path, tmp_path: Path) -> None:
    good = create_index(tfrecord, write=False)
    copy = tmp_path / "copy" / tfrecord.name
    copy.parent.mkdir()
    shutil.copy(tfrecord, copy)  # a new mtime: a recorded stat must not matter here
    npz = save_index(good, tmp_path / "own.index.npz", tfrecord=tfrecord)
    text = save_index(good, tmp_path / "own.index")
    for target in (tfrecord, copy):
        for index in (npz, text, good.array):
            with TFRecord(storage.name(target), index=index, **storage.kw) as tfr:
                assert len(tfr) == N and tfr[-1]["loc_x"] == (N - 1) * 256


def test_a_one_dimensional_array_is_refused(storage: Remote, tfrecord: Path) -> None:
    offsets = create_index(tfrecord, write=False).offsets
    with pytest.raises(InvalidTFRecordIndex, match=r"not \(n, 2\)"):
        len(TFRecord(storage.name(tfrecord), index=offsets, **storage.kw))


def test_an_implausible_explicit_index_is_refused_unread(storage: Remote, tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    big = save_index(TFRecordIndex(np.zeros((10_000, 2), np.int64)), tmp_path / "big.index.npz")
    with pytest.raises(InvalidTFRecordIndex, match="larger than"):
        len(TFRecord(storage.name(path), index=big, **storage.kw))


@pytest.mark.parametrize("damage", ["cut", "locations"])
def test_an_unreadable_explicit_index_names_both_files(
    storage: Remote, tfrecord: Path, tmp_path: Path, damage: str
) -> None:
    """An explicit index that cannot even be read is refused naming the TFRecord too."""
    good = create_index(tfrecord, write=False).array
    index = tmp_path / "x.index.npz"
    if damage == "cut":
        save_index(TFRecordIndex(good), index)
        index.write_bytes(index.read_bytes()[:-40])
    else:  # fewer rows than locations
        np.savez(index, arr_0=good[:-3], locations=np.zeros((len(good), 2), np.int64))
    with pytest.raises(InvalidTFRecordIndex) as info:
        len(TFRecord(storage.name(tfrecord), index=index, **storage.kw))
    msg = str(info.value)
    assert storage.name(tfrecord) in msg and str(index) in msg, msg
