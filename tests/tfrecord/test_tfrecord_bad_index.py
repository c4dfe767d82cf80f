"""Damaged, implausible and explicit-but-wrong index files.

A cut ``.index.npz``, a crafted one whose ``.npy`` header declares a huge
array, a deflate bomb, a bad ``.npy`` or text index: each is stale, so it is
rebuilt with a warning naming it (or used in memory where the folder is
read-only), quickly and without allocating what it declares. The CLI
commands that read indexes (``inspect``, ``manifest``) go on past it. An
index passed explicitly is checked like the one found beside the file. The tests that
read through a damaged index run once per ``storage`` kind (``local``; ``s3`` and ``http``
read the TFRecord and its damaged index from SeaweedFS; an object's index is rebuilt into
the local cache, not written back); the index-file internals are local.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from _readonly import run_read_only
from _remote import Remote
from tilestream.cli import cli
from tilestream.errors import InvalidTFRecordIndex, TileStreamError
from tilestream.tfrecord import (
    TFRecord,
    TFRecordWriter,
    create_index,
    get_locations_from_tfrecord,
    get_tfrecord_length,
    index_path_for,
    load_index,
    read_index_file,
    serialized_record,
    tfrecord_has_locations,
)

N = 34


def _make(path: Path, n: int = N) -> Path:
    with TFRecordWriter(path) as w:
        for i in range(n):
            w.write(
                serialized_record("s", bytes([i]) * (60 + i), i * 256, 0), location=(i * 256, 0)
            )
    return path


def _npy_header(shape: tuple[int, ...], dtype: str = "<i8") -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape`` (no data follows)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text += " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _huge_npz(path: Path, rows: int = 2**28) -> None:
    """A 4 MB npz whose ``arr_0`` header declares ``(rows, 2)`` int64 (4 GiB)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("arr_0.npy", _npy_header((rows, 2)) + bytes(4 << 20))


def _bomb_npz(path: Path) -> None:
    """A small compressed npz of a real (2**24, 2) zero array (256 MiB when loaded)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, arr_0=np.zeros((2**24, 2), np.int64))
    path.write_bytes(buf.getvalue())


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _measure(fn: Any) -> tuple[Any, float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        try:
            out = fn()
        except TileStreamError as exc:  # returned: the caller checks it
            out = exc
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, took, peak


# --------------------------------------------------------------------------- damaged


@pytest.mark.parametrize("damage", ["cut", "garbage", "empty-zip", "huge", "bomb", "npy-header"])
def test_a_damaged_index_is_rebuilt_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    storage: Remote,
) -> None:
    path = _make(tmp_path / "a.tfrecords")
    idx = index_path_for(path)
    if damage == "cut":
        _cut(idx)
    elif damage == "garbage":
        idx.write_bytes(b"PK\x03\x04" + os.urandom(200))
    elif damage == "empty-zip":
        zipfile.ZipFile(idx, "w").close()
    elif damage == "huge":
        _huge_npz(idx)
    elif damage == "bomb":
        _bomb_npz(idx)
    else:
        with zipfile.ZipFile(idx, "w") as z:
            z.writestr("arr_0.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr'")
    name = storage.name(path)  # the TFRecord and its damaged index beside it
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        (tfr_len, xy), took, peak = _measure(lambda: _open(name, storage))
    assert tfr_len == N and xy == (bytes([5]) * 65)
    assert took < 2.0 and peak < 64 << 20, (took, peak)
    if storage.local:  # an object's index is cached locally, the one beside it left alone
        assert len(read_index_file(idx)) == N  # rewritten, now good
        assert load_index(path).locations is not None
    idx_name = str(idx) if storage.local else name.rsplit(".", 1)[0] + ".index.npz"
    assert any(idx_name in r.getMessage() for r in caplog.records), caplog.text


def _open(path: str, storage: Remote) -> tuple[int, bytes]:
    with TFRecord(path, **storage.kw) as tfr:
        return len(tfr), tfr.get_record_by_xy(5 * 256, 0)[1]  # type: ignore[return-value]


def test_an_implausible_npy_or_text_index_is_rejected_unread(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    npy = tmp_path / "a.index.npy"
    npy.write_bytes(_npy_header((2**28, 2)) + bytes(1 << 20))
    text = tmp_path / "a.index"
    text.write_text("0 16\n" * 10_000)
    for bad in (npy, text):
        err, took, peak = _measure(lambda b=bad: load_index(path, index_path=b, rebuild=False))
        assert isinstance(err, InvalidTFRecordIndex) and "could" in str(err)
        assert took < 2.0 and peak < 64 << 20, (took, peak)
    with pytest.raises(InvalidTFRecordIndex, match="larger than"):
        read_index_file(npy, max_records=100)


def test_the_declared_shape_is_never_allocated(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    _huge_npz(index_path_for(path))
    err, took, peak = _measure(lambda: read_index_file(index_path_for(path)))
    assert isinstance(err, InvalidTFRecordIndex) and str(index_path_for(path)) in str(err)
    assert took < 2.0 and peak < 64 << 20, (took, peak)
    _, took, peak = _measure(lambda: get_tfrecord_length(path))
    assert took < 2.0 and peak < 64 << 20, (took, peak)


def test_read_index_file_alone_bounds_by_the_index_size(tmp_path: Path) -> None:
    p = tmp_path / "x.index.npz"
    _huge_npz(p, rows=2**40)  # more than 4 MB could ever decode to
    with pytest.raises(InvalidTFRecordIndex, match="larger than"):
        read_index_file(p)


def test_an_unwritable_folder_uses_the_rebuilt_index_in_memory(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    idx = index_path_for(path)
    _cut(idx)
    damaged = idx.read_bytes()
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from tilestream.tfrecord import TFRecord\n"
        f"with TFRecord({str(path)!r}) as t: print(len(t), t.get_record_by_xy(256, 0)[1])\n"
    )
    out = run_read_only(tmp_path, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(N)
    assert "using it in memory" in out.stderr and str(idx) in out.stderr
    assert idx.read_bytes() == damaged  # nothing written, nothing deleted


# --------------------------------------------------------------------------- the CLI


def test_inspect_and_manifest_go_on_past_a_cut_index(tmp_path: Path) -> None:
    a = _make(tmp_path / "a.tfrecords")
    _make(tmp_path / "b.tfrecords", 3)
    _cut(index_path_for(a))
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(a)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"records: {N}" in res.output
    _cut(index_path_for(a))
    res = runner.invoke(cli, ["manifest", str(tmp_path), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    manifest = json.loads((tmp_path / "m.json").read_text())
    counts = {Path(k).name: v for k, v in manifest.items()}
    assert counts["a.tfrecords"]["total"] == N and counts["b.tfrecords"]["total"] == 3


def test_errors_are_tilestream_errors(tmp_path: Path) -> None:
    path = _make(tmp_path / "a.tfrecords")
    _cut(index_path_for(path))
    with pytest.raises(InvalidTFRecordIndex) as info:
        load_index(path, rebuild=False)
    assert isinstance(info.value, TileStreamError) and isinstance(info.value, IndexError)
    assert str(info.value).count(str(index_path_for(path))) == 1


def test_the_slideflow_helpers_read_past_a_cut_index(tmp_path: Path, storage: Remote) -> None:
    local = _make(tmp_path / "a.tfrecords")
    _cut(index_path_for(local))
    path = storage.name(local)
    assert tfrecord_has_locations(path, check_y=True, **storage.kw)
    assert get_locations_from_tfrecord(path, **storage.kw)[3] == (3 * 256, 0)
    assert get_tfrecord_length(path, **storage.kw) == N


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_tile_dataset_reads_past_a_cut_index(
    torch: ModuleType, tmp_path: Path, on_error: str, storage: Remote
) -> None:
    from tilestream.loaders.parser import _demo_tfrecord
    from tilestream.torch import TileDataset

    paths = [_demo_tfrecord(str(tmp_path / f"{s}.tfrecords"), n) for s, n in [("a", 3), ("b", 2)]]
    for p in paths:
        create_index(p)
        _cut(index_path_for(p))
    names = storage.put(paths)
    ds = TileDataset(
        names,
        labels={"a": 0, "b": 1},
        seed=0,
        on_error=on_error,
        **storage.kw,  # type: ignore[arg-type]
    )
    assert sorted(int(label) for _, label in ds) == [0, 0, 0, 1, 1]
    if storage.local:  # (an object's index is cached locally instead)
        assert all(len(read_index_file(index_path_for(p))) > 0 for p in paths)  # rebuilt
