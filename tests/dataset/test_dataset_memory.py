"""The TFRecord utilities stream: peak memory stays far below the file size."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from tilestream.dataset import join_tfrecord, merge_tfrecords, shuffle_tfrecord, split_tfrecord
from tilestream.tfrecord import TFRecordWriter, get_tfrecord_length, serialized_record

RECORD = 256 * 1024
N = 160  # 40 MiB per file


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("big")
    for name in ("s1", "s2"):
        with TFRecordWriter(d / f"{name}.tfrecords") as w:
            for i in range(N):
                payload = b"\xff\xd8\xff" + os.urandom(RECORD - 3)
                w.write(serialized_record(name, payload, i, 0), location=(i, 0))
    return d


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_peak_memory_is_bounded(big: Path, tmp_path: Path) -> None:
    files = [big / "s1.tfrecords", big / "s2.tfrecords"]
    size = sum(f.stat().st_size for f in files)
    limit = 16 * 1024 * 1024  # a few records and buffers, not the files
    assert size > 4 * limit
    merged = tmp_path / "m.tfrecords"
    assert _peak(lambda: merge_tfrecords(files, merged)) < limit
    assert _peak(lambda: shuffle_tfrecord(merged, seed=0)) < limit
    assert _peak(lambda: split_tfrecord(merged, tmp_path / "split")) < limit
    assert (
        _peak(lambda: join_tfrecord(tmp_path / "split", tmp_path / "j.tfrecords", seed=0)) < limit
    )
    assert get_tfrecord_length(tmp_path / "j.tfrecords") == 2 * N
