"""The readers with the compiled core (``tilestream.tfrecord._native``) against the Python loops.

The compiled scanner must be invisible except for speed: the same records,
the same counters, the same errors, on the real files of the shared test
data; its verifier thread must end with the iteration (closed, abandoned or
garbage-collected) and must not hang a forked child.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import platform
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import tilestream.tfrecord.reader as reader
from _native_support import _same  # tests/_native_support.py
from conftest import IN_CI, missing  # tests/conftest.py: skip here, fail under CI=true
from tilestream.errors import TileStreamError
from tilestream.tfrecord import TFRecordWriter, iter_examples, iter_records, serialized_record
from tilestream.tfrecord.framing import frame


@pytest.fixture(scope="module")
def native() -> ModuleType:
    if reader._native is None:
        missing("the compiled core tilestream.tfrecord._native is not built (no C compiler?)")
    return reader._native


def _tasks() -> int:
    """Threads of this process (native ones included)."""
    return len(os.listdir("/proc/self/task"))


def _tiles(path: Path, n: int = 300, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    records = [
        serialized_record(f"slide-{i % 3}", rng.bytes(int(rng.integers(0, 40_000))), i, -i)
        for i in range(n)
    ]
    with TFRecordWriter(path) as w:
        for rec in records:
            w.write(rec)
    return records


def _python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_native", None)


def _outcome(make: Callable[[], Iterator[Any]]) -> tuple[list[Any], str | None]:
    """Everything an iteration yields, and the error that ended it (type and message)."""
    out: list[Any] = []
    try:
        for item in make():
            out.append(item)
    except TileStreamError as exc:
        return out, f"{type(exc).__name__}: {exc}"
    return out, None


def test_built_with_hardware_crc_where_the_cpu_has_it(native: ModuleType) -> None:
    if platform.machine() in ("x86_64", "AMD64"):
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        assert bool(native.HARDWARE_CRC) == (" sse4_2" in flags)
    assert bool(native.THREADS) is (os.name != "nt")


def test_path_reads_go_through_a_threaded_scanner(native: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.tfrecords"
    records = _tiles(path)
    it = iter_records(path)
    assert next(it) == records[0]
    assert it._scan is not None and it._scan.threaded is bool(native.HARDWARE_CRC)
    assert [next(it) for _ in range(9)] == records[1:10]
    assert list(it) == records[10:]
    assert it._scan is None  # closed and released at the end


def test_counters_after_every_record_match_the_python_loop(
    native: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.tfrecords"
    _tiles(path, 50)

    def counters() -> list[tuple[int, int]]:
        it = iter_records(path)
        return [(it.records, it.offset) for _ in it]

    compiled = counters()
    _python(monkeypatch)
    python = counters()
    assert compiled == python
    assert compiled[-1] == (50, path.stat().st_size)


def _real_files(root: Path) -> list[Path]:
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".md"]
    assert len(files) >= 10, f"expected the shared TFRecords under {root}"
    return files


@pytest.mark.testdata
def test_real_files_read_the_same_with_and_without_the_compiled_core(
    native: ModuleType, tfrecords_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file of the shared data (TensorFlow's, tfx's, corrupted ones): same records, same errors."""
    readers: dict[str, Callable[[Path], Iterator[Any]]] = {
        "raw": lambda p: iter_records(p),
        "raw-unverified": lambda p: iter_records(p, verify=False),
        "raw-truncated-ok": lambda p: iter_records(p, allow_truncated=True),
        "examples": lambda p: iter_examples(p),
        "examples-unsqueezed": lambda p: iter_examples(p, squeeze=False),
    }
    files = _real_files(tfrecords_dir)
    results = {}
    for name, read in readers.items():
        for path in files:
            results[name, path] = _outcome(lambda: read(path))  # noqa: B023
    _python(monkeypatch)
    compared = 0
    for (name, path), (items, error) in results.items():
        py_items, py_error = _outcome(lambda: readers[name](path))  # noqa: B023
        assert error == py_error, (name, path.name)
        assert _same(items, py_items), (name, path.name)
        compared += len(items)
    assert compared > 1000


def test_records_larger_than_the_read_ahead_window(native: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sizes = [10 << 20, 3, 5 << 20, 0, 4 << 20, 9 << 20, 100]
    records = [rng.bytes(n) for n in sizes]
    path = tmp_path / "big.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        for rec in records:
            w.write(rec)
    for _ in range(5):
        assert list(iter_records(path)) == records


def test_the_verifier_thread_ends_with_the_iteration(native: ModuleType, tmp_path: Path) -> None:
    if not native.THREADS or not native.HARDWARE_CRC:
        pytest.skip("the checks run in the calling thread here")
    path = tmp_path / "t.tfrecords"
    _tiles(path)
    before = _tasks()
    # closed
    it = iter_records(path)
    next(it)
    assert _tasks() == before + 1
    it.close()
    assert _tasks() == before
    # abandoned and collected
    gen = iter(iter_examples(path))
    next(gen)
    assert _tasks() == before + 1
    del gen
    gc.collect()
    assert _tasks() == before
    # stopped at a corrupt record: the Python loop raises, the thread is gone
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.tfrecords"
    bad.write_bytes(bytes(data))
    with pytest.raises(TileStreamError, match="CRC mismatch"):
        list(iter_records(bad))
    assert _tasks() == before


def _finish_in_child(it: Iterator[bytes], conn: Any) -> None:
    conn.send([len(r) for r in it])
    conn.close()


@pytest.mark.skipif(os.name == "nt", reason="fork is POSIX")
def test_a_forked_child_finishes_an_iteration_begun_in_the_parent(
    native: ModuleType, tmp_path: Path
) -> None:
    """The child has no verifier thread: it must read on (in Python), not wait for one."""
    path = tmp_path / "t.tfrecords"
    records = _tiles(path, 2000)
    it = iter_records(path)
    head = [next(it) for _ in range(3)]
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_finish_in_child, args=(it, child_end))
    with warnings.catch_warnings():
        # Python >= 3.12 warns on fork() in any process with a second OS thread
        # (here, the verifier): the case this test is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    assert parent_end.poll(120), "the forked child hung"
    assert parent_end.recv() == [len(r) for r in records[3:]]
    child.join(30)
    assert child.exitcode == 0
    assert head + list(it) == records  # the parent's own iteration is untouched


def test_in_ci_the_compiled_core_is_built() -> None:
    """``pip install`` builds it wherever a C compiler exists (CI has one)."""
    if not IN_CI and reader._native is None:
        pytest.skip("the compiled core is not built; the Python reader is used")
    assert reader._native is not None, "CI=true: tilestream.tfrecord._native must be built"


def test_gzip_and_file_objects_still_use_the_python_loops(
    native: ModuleType, tmp_path: Path
) -> None:
    import gzip
    import io

    records = [b"a", b"", b"ccc" * 1000]
    data = b"".join(frame(r) for r in records)
    path = tmp_path / "t.tfrecords.gz"
    path.write_bytes(gzip.compress(data))
    it = iter_records(path)
    assert list(it) == records and it._scan is None
    it = iter_records(io.BytesIO(data))
    assert list(it) == records and it._scan is None


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_missing_and_empty_files_the_same_either_way(
    native: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    if not compiled:
        _python(monkeypatch)
    missing_path = tmp_path / "nope.tfrecords"
    for read in (iter_records, iter_examples):
        with pytest.raises(FileNotFoundError) as info:
            list(read(missing_path))
        assert info.value.filename == str(missing_path)
    empty = tmp_path / "empty.tfrecords"
    empty.write_bytes(b"")
    assert list(iter_records(empty)) == [] and list(iter_examples(empty)) == []
