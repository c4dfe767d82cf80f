"""Fuzz and stress tests of the compiled core's ``Scanner`` against the Python reader.

* In every mode (threaded or not, CRC checks on or off, payloads, C-decoded
  tiles or the parse callback), over the same random, mutated and truncated
  buffers: the same records, and a stop exactly at the record where the
  Python reader raises or truncates;
* records larger than the verifier's 4 MiB window, abandoning a scanner,
  resuming with ``start``/``records``, use from two threads, a buffer changed
  under the scanner, and the public readers with and without the compiled core.

A hang fails the test (work runs in a watchdog thread); code that could crash
the interpreter runs in a subprocess.
"""

from __future__ import annotations

import gc
import io
import mmap
import os
import random
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _native_support import (  # tests/_native_support.py
    _INT64,
    _KEYS,
    _VALUES,
    FUZZ,
    M64,
    WATCHDOG,
    WINDOW,
    _bounded,
    _framed,
    _header,
    _mutate,
    _native,
    _parse_example_or_error,
    _run_python,
    _same,
    _wire_example,
)
from tilestream.errors import CorruptRecordError
from tilestream.tfrecord import (
    Feature,
    encode_example,
    iter_examples,
    iter_records,
    serialized_record,
)
from tilestream.tfrecord import reader as reader_module
from tilestream.tfrecord.framing import frame

# --------------------------------------------------------------------------- Scanner vs Python


class PyOutcome(NamedTuple):
    records: list[bytes]
    offsets: list[int]  # where each record starts
    stop: int  # offset where the reader stopped (the end, a bad record, a truncation)
    problem: bool  # stopped at a record it could not read


def _python_read(buf: bytes, verify: bool) -> PyOutcome:
    it = iter_records(io.BytesIO(buf), verify=verify, allow_truncated=True)
    records: list[bytes] = []
    try:
        for r in it:
            records.append(r)
    except CorruptRecordError as exc:
        error: CorruptRecordError | None = exc
    else:
        error = None
    if error is not None:
        assert error.record == len(records)
        stop, problem = error.offset, True
    else:
        if it.truncated_at is not None:
            stop, problem = it.truncated_at, True
        else:
            stop, problem = len(buf), False
    offsets = []
    pos = 0
    for r in records:
        offsets.append(pos)
        pos += 16 + len(r)
    assert stop is not None
    return PyOutcome(records, offsets, stop, problem)


MODES = [
    (threaded, verify, parse)
    for threaded in (True, False)
    for verify in (True, False)
    for parse in ("bytes", "tiles", "callback")
]


def _scan(
    buf: Any,
    *,
    threaded: bool,
    verify: bool,
    parse: str,
    start: int = 0,
    records: int = 0,
    limit: int | None = None,
) -> tuple[list[Any], int, int, bool]:
    def callback(a: int, b: int, rec: int, off: int) -> tuple[Any, ...]:
        return ("cb", a, b, rec, off)

    kw: dict[str, Any] = {}
    if parse != "bytes":
        kw = {"parse": callback, "tiles": parse == "tiles"}
    scan = _native.Scanner(
        buf, start=start, records=records, verify=verify, threaded=threaded, **kw
    )
    try:
        items = []
        for item in scan:
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
        return items, scan.pos, scan.records, scan.problem
    finally:
        scan.close()


def _check_scan(
    buf: bytes,
    expected: PyOutcome,
    got: tuple[list[Any], int, int, bool],
    mode: tuple[bool, bool, str],
    base: int = 0,
    shift: int = 0,
) -> None:
    items, pos, nrec, problem = got
    parse = mode[2]
    where = f"mode (threaded, verify, parse)={mode}, buffer={buf[:200]!r}... ({len(buf)} bytes)"
    assert len(items) == len(expected.records), f"{len(items)} != {len(expected.records)}; {where}"
    for i, (item, payload, off) in enumerate(
        zip(items, expected.records, expected.offsets, strict=True)
    ):
        off += shift
        if parse == "bytes":
            assert type(item) is bytes and item == payload, f"record {i}; {where}"
        elif isinstance(item, tuple):
            assert item == ("cb", off + 12, off + 12 + len(payload), base + i, off), where
            assert buf[item[1] : item[2]] == payload
        else:
            assert parse == "tiles" and payload, f"record {i} decoded in C in mode {where}"
            expected_dict = _parse_example_or_error(payload)
            assert _same(item, expected_dict), f"record {i}: {item!r} != {expected_dict!r}; {where}"
    assert (pos, nrec, problem) == (
        expected.stop + shift,
        base + len(expected.records),
        expected.problem,
    ), f"Scanner stopped at (pos, records, problem)={(pos, nrec, problem)}; {where}"


def _check_all_modes(buf: bytes) -> None:
    expected = {verify: _python_read(buf, verify) for verify in (True, False)}

    def work() -> list[tuple[tuple[bool, bool, str], Any]]:
        return [
            (mode, _scan(buf, threaded=mode[0], verify=mode[1], parse=mode[2])) for mode in MODES
        ]

    for mode, got in _bounded(work):
        _check_scan(buf, expected[mode[1]], got, mode)


_PAYLOADS = st.one_of(
    st.binary(max_size=48),
    st.just(b""),
    st.builds(serialized_record, st.text(max_size=6), st.binary(max_size=40), _INT64, _INT64),
    st.dictionaries(_KEYS, _VALUES, max_size=3).map(encode_example),
    _wire_example(),
)
_FRAME_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set", "truncate", "header", "append"]),
        st.integers(0, 100_000),
        st.binary(min_size=1, max_size=3),
        st.sampled_from([0, 1, 7, 15, 16, 17, 100, 2**31, 2**62, 2**63, M64, M64 - 15]),
    ),
    max_size=3,
)


def _mutate_frames(buf: bytes, edits: list[tuple[str, int, bytes, int]]) -> bytes:
    b = bytearray(buf)
    for op, where, blob, length in edits:
        pos = where % (len(b) + 1)
        if op == "truncate":
            del b[pos:]
        elif op == "header":  # a header with a valid CRC and a chosen (often absurd) length
            b[pos:pos] = _header(length)
        elif op == "append":
            b += _header(length) + blob
        else:
            b[:] = _mutate(bytes(b), [(op, pos, blob)])
    return bytes(b)


@settings(FUZZ, max_examples=250)
@given(payloads=st.lists(_PAYLOADS, max_size=6), edits=_FRAME_EDITS)
def test_scanner_matches_python_reader_on_mutated_buffers(
    payloads: list[bytes], edits: list[tuple[str, int, bytes, int]]
) -> None:
    _check_all_modes(_mutate_frames(_framed(payloads), edits))


@settings(FUZZ, max_examples=100)
@given(
    buf=st.one_of(
        st.binary(max_size=80),
        st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=40)).map(
            lambda t: _header(t[0]) + t[1]
        ),
        st.tuples(st.integers(0, 40), st.binary(max_size=60)).map(lambda t: _header(t[0]) + t[1]),
    )
)
def test_scanner_matches_python_reader_on_random_bytes(buf: bytes) -> None:
    _check_all_modes(buf)


def test_scanner_every_truncation_and_byte_flip() -> None:
    buf = _framed([b"", serialized_record("s", b"img", 3, -4), b"xyz", encode_example({"f": 0.5})])
    for cut in range(len(buf) + 1):
        _check_all_modes(buf[:cut])
    for pos in range(len(buf)):
        for mask in (0x01, 0x80):
            flipped = bytearray(buf)
            flipped[pos] ^= mask
            _check_all_modes(bytes(flipped))


def test_scanner_stops_at_the_first_bad_crc_with_exact_position() -> None:
    good = [b"a" * 10, b"", b"b" * 3000]
    buf = bytearray(_framed([*good, b"c" * 20, b"d"]))
    bad_at = sum(16 + len(p) for p in good)
    buf[bad_at + 12 + 5] ^= 0x40  # data CRC of record 3
    for threaded in (True, False):
        items, pos, nrec, problem = _bounded(
            lambda t=threaded: _scan(bytes(buf), threaded=t, verify=True, parse="bytes")
        )
        assert (items, pos, nrec, problem) == (good, bad_at, 3, True)
        items, pos, nrec, problem = _scan(
            bytes(buf), threaded=threaded, verify=False, parse="bytes"
        )
        assert len(items) == 5 and (pos, nrec, problem) == (len(buf), 5, False)
    assert _native.Scanner(b"").problem is False


def test_scanner_arguments() -> None:
    buf = frame(b"x")
    with pytest.raises(ValueError):
        _native.Scanner(buf, start=-1)
    with pytest.raises(ValueError):
        _native.Scanner(buf, start=len(buf) + 1)
    with pytest.raises(ValueError):
        _native.Scanner(buf, records=-1)
    with pytest.raises(TypeError):
        _native.Scanner(buf, parse=42)
    with pytest.raises(TypeError):
        _native.Scanner("not a buffer")
    with pytest.raises((BufferError, ValueError, TypeError)):
        _native.Scanner(memoryview(buf * 2)[::2])
    scan = _native.Scanner(buf, threaded=True)
    with pytest.raises(RuntimeError):
        scan.__init__(buf)  # type: ignore[misc]
    assert scan.threaded is bool(_native.THREADS)
    assert list(scan) == [b"x"] and (scan.pos, scan.records, scan.problem) == (len(buf), 1, False)
    assert _native.Scanner(buf, verify=False, threaded=True).threaded is False
    assert list(_native.Scanner(buf, start=len(buf), records=7)) == []


def test_scanner_parse_callback_error_leaves_position_at_that_record() -> None:
    payloads = [b"", b"raw", b"", b"more"]
    buf = _framed(payloads)

    def parse(a: int, b: int, rec: int, off: int) -> Any:
        if rec == 2:
            raise ZeroDivisionError("from the callback")
        return rec

    for threaded in (True, False):
        scan = _native.Scanner(buf, parse=parse, tiles=True, threaded=threaded)
        assert [next(scan), next(scan)] == [0, 1]
        with pytest.raises(ZeroDivisionError):
            next(scan)
        assert (scan.pos, scan.records) == (16 + 16 + 3, 2)
        scan.close()


@settings(FUZZ, max_examples=60)
@given(
    payloads=st.lists(_PAYLOADS, min_size=1, max_size=8),
    data=st.data(),
    base=st.sampled_from([0, 1, 1000, 2**40]),
)
def test_scanner_resumes_with_start_and_records(
    payloads: list[bytes], data: st.DataObject, base: int
) -> None:
    buf = _framed(payloads)
    k = data.draw(st.integers(0, len(payloads)))
    start = sum(16 + len(p) for p in payloads[:k])
    tail = buf[start:]
    if data.draw(st.booleans()) and tail:  # and a bad record somewhere after the start
        tail = _mutate(tail, [("flip", data.draw(st.integers(0, len(tail) - 1)), b"\x10")])
    buf = buf[:start] + tail
    expected = {verify: _python_read(tail, verify) for verify in (True, False)}

    def work() -> list[tuple[tuple[bool, bool, str], Any]]:
        return [
            (m, _scan(buf, threaded=m[0], verify=m[1], parse=m[2], start=start, records=base))
            for m in MODES
        ]

    for mode, got in _bounded(work):
        _check_scan(buf, expected[mode[1]], got, mode, base=base, shift=start)


# --------------------------------------------------------------------------- large records


def _big_payload(n: int, tag: int) -> bytes:
    return (struct.pack("<II", tag, n) * (n // 8 + 1))[:n]


def test_records_larger_than_the_window(tmp_path: Path) -> None:
    sizes = [5 << 20, 0, 3, 9 << 20, 1, 12 << 20, 0]
    sizes += [100] * 50 + [(4 << 20) - 16, (4 << 20) + 1, 2, WINDOW // 2, 0, 5 << 20]
    payloads = [_big_payload(n, i) for i, n in enumerate(sizes)]
    buf = _framed(payloads)
    path = tmp_path / "big.tfrecords"
    path.write_bytes(buf)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:

        def passes() -> None:
            for i in range(6):
                source: Any = mm if i % 2 else buf
                items, pos, nrec, problem = _scan(source, threaded=True, verify=True, parse="bytes")
                assert len(items) == len(payloads)
                assert all(a == b for a, b in zip(items, payloads, strict=True))
                assert (pos, nrec, problem) == (len(buf), len(payloads), False)
            for parse in ("tiles", "callback"):
                items, pos, nrec, problem = _scan(mm, threaded=True, verify=True, parse=parse)
                assert [it[3] for it in items] == list(range(len(payloads)))
                assert (pos, problem) == (len(buf), False)

        _bounded(passes, timeout=120)
        # a bad CRC right after the big records: found by the verifier, no hang
        bad = bytearray(buf)
        last = len(buf) - 16 - sizes[-1]
        bad[last + 12 + 100] ^= 1
        items, pos, nrec, problem = _bounded(
            lambda: _scan(bytes(bad), threaded=True, verify=True, parse="bytes")
        )
        assert (len(items), pos, nrec, problem) == (len(sizes) - 1, last, len(sizes) - 1, True)


@settings(FUZZ, max_examples=12)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_mixes_of_huge_and_tiny_records_with_slow_consumers(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 5, 300, 70_000, 1 << 20, 5 << 20, 9 << 20]) for _ in range(10)]
    if sum(sizes) > 24 << 20:
        sizes = sizes[:4]
    payloads = [_big_payload(n, i) for i, n in enumerate(sizes)]
    buf = _framed(payloads)
    pauses = {rng.randrange(len(sizes)) for _ in range(3)}

    def run() -> tuple[list[int], int, int, bool]:
        scan = _native.Scanner(buf, threaded=True)
        lengths = []
        for i, item in enumerate(scan):
            lengths.append(len(item))
            assert item[:8] == payloads[i][:8]
            if i in pauses:
                time.sleep(0.01)  # the verifier runs a window ahead and sleeps
        return lengths, scan.pos, scan.records, scan.problem

    lengths, pos, nrec, problem = _bounded(run)
    assert lengths == sizes and (pos, nrec, problem) == (len(buf), len(sizes), False)


def test_many_small_records_beyond_several_windows() -> None:
    payloads = [_big_payload(1000 + i % 7, i) for i in range(12_000)]  # ~12 MiB
    buf = _framed(payloads)

    def run() -> None:
        for parse in ("bytes", "tiles"):
            items, pos, nrec, problem = _scan(buf, threaded=True, verify=True, parse=parse)
            assert len(items) == nrec == len(payloads) and (pos, problem) == (len(buf), False)
        scan = _native.Scanner(buf, threaded=True)
        for i, item in enumerate(scan):
            if i % 3000 == 0:
                time.sleep(0.05)
            assert item == payloads[i]
        assert scan.records == len(payloads)

    _bounded(run, timeout=60)


# --------------------------------------------------------------------------- abandoning a scan


@pytest.fixture
def mapped_file(tmp_path: Path) -> tuple[Path, list[bytes]]:
    payloads = [_big_payload(50_000, i) for i in range(300)]  # ~15 MiB: beyond the window
    path = tmp_path / "abandon.tfrecords"
    path.write_bytes(_framed(payloads))
    return path, payloads


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m)))
def test_close_releases_the_buffer(
    mapped_file: tuple[Path, list[bytes]], mode: tuple[bool, bool, str]
) -> None:
    path, _ = mapped_file
    threaded, verify, parse = mode

    def run() -> None:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            kw: dict[str, Any] = {}
            if parse != "bytes":
                kw = {"parse": lambda *a: a, "tiles": parse == "tiles"}
            scan = _native.Scanner(mm, verify=verify, threaded=threaded, **kw)
            for _ in range(3):
                next(scan)
            with pytest.raises(BufferError):
                mm.close()  # the scanner still holds the buffer
            scan.close()
            mm.close()  # no BufferError: released
            scan.close()  # idempotent
            with pytest.raises(StopIteration):
                next(scan)
            assert (scan.records, scan.pos) == (3, 3 * (16 + 50_000))

    _bounded(run)


@pytest.mark.parametrize("threaded", [True, False])
def test_deleting_an_unclosed_scanner_stops_it(
    mapped_file: tuple[Path, list[bytes]], threaded: bool
) -> None:
    path, payloads = mapped_file

    def run() -> None:
        with open(path, "rb") as f:
            for consumed in (0, 1, 5):
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                scan = _native.Scanner(mm, threaded=threaded)
                for j in range(consumed):
                    assert next(scan) == payloads[j]
                del scan
                gc.collect()
                mm.close()  # the verifier thread is gone and the buffer released
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            with _native.Scanner(mm) as scan:
                next(scan)
            mm.close()

    _bounded(run)


def test_a_reference_cycle_through_the_callback_is_collected(
    mapped_file: tuple[Path, list[bytes]],
) -> None:
    """A parse callback that refers back to its scanner (a bound method of an
    object holding it, say) must not keep the scanner, its thread and the
    buffer alive forever."""
    path, _ = mapped_file

    class Owner:
        def parse(self, *args: int) -> Any:
            return args

    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        owner = Owner()
        owner.scan = _native.Scanner(mm, parse=owner.parse, tiles=False)  # type: ignore[attr-defined]
        next(owner.scan)  # type: ignore[attr-defined]
        del owner
        gc.collect()
        try:
            mm.close()
        except BufferError:
            pytest.fail(
                "a Scanner in a reference cycle is never collected: its thread runs on and "
                "the buffer stays exported (the type does not support the cyclic GC)"
            )


def test_a_cycle_through_a_memoryview_buffer_is_not_freed_under_the_verifier() -> None:
    """The collector must not clear the buffer's owner while the scanner reads it
    (a memoryview in a cycle with the scanner used to be freed under the thread)."""
    proc = _run_python(
        """
        import gc
        from tilestream.tfrecord import _native
        from tilestream.tfrecord.framing import frame

        framed = frame(b"\\x01" * (300 << 20)) + frame(b"x")

        class Parse:  # a callable that refers back to the scanner
            def __init__(self, box): self.box = box
            def __call__(self, *a): return a

        for threaded in (True, False):
            mv = memoryview(bytearray(framed))
            box = []
            scan = _native.Scanner(mv, parse=Parse(box), tiles=False, threaded=threaded)
            box.append(scan)  # scan -> Parse -> box -> scan, and scan -> mv
            del mv, box, scan
            gc.collect(0)
        print("ok")
        """,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    )


def test_stop_iteration_from_the_parse_callback_is_an_error_not_the_end() -> None:
    buf = _framed([b"%d" % i for i in range(5)])

    def parse(start: int, stop: int, record: int, offset: int) -> int:
        if record == 2:
            raise StopIteration  # e.g. next() on an exhausted iterator inside a parser
        return record

    scan = _native.Scanner(buf, parse=parse, tiles=False)
    got = [next(scan), next(scan)]
    with pytest.raises(RuntimeError, match="parse raised StopIteration") as info:
        next(scan)
    assert isinstance(info.value.__cause__, StopIteration)
    assert got == [0, 1] and scan.records == 2 and not scan.problem


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_the_verifier_runs() -> None:
    proc = _run_python(
        """
        import os, time
        from tilestream.tfrecord import _native
        from tilestream.tfrecord.framing import frame
        payloads = [bytes([i % 251]) * 1000 for i in range(20000)]
        buf = b"".join(frame(p) for p in payloads)
        scan = _native.Scanner(buf, threaded=True)
        assert next(scan) == payloads[0]
        time.sleep(0.3)  # the verifier is a window ahead, asleep
        pid = os.fork()
        if pid == 0:
            got = list(scan)
            ok = got == payloads[1 : 1 + len(got)] and scan.records == 1 + len(got)
            ok = ok and (scan.problem or scan.records == len(payloads))
            os._exit(0 if ok else 3)
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            raise SystemExit("the child hangs")
        assert os.waitstatus_to_exitcode(status) == 0, status
        rest = list(scan)
        assert rest == payloads[1:] and not scan.problem
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --------------------------------------------------------------------------- thread safety


def test_close_from_another_thread_during_next_does_not_crash(tmp_path: Path) -> None:
    """close() while another thread waits in next() must not free the buffer under it."""
    path = tmp_path / "big.tfrecords"
    path.write_bytes(frame(bytes(64 << 20)))
    proc = _run_python(
        """
        import mmap, sys, threading, time
        from tilestream.tfrecord import _native
        path = sys.argv[1]
        stop = False
        def spin():  # competes for the GIL, so the closing thread may get it first
            while not stop:
                pass
        threading.Thread(target=spin, daemon=True).start()
        sys.setswitchinterval(0.0005)
        with open(path, "rb") as f:
            for i in range(30):
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                scan = _native.Scanner(mm, threaded=True)
                started = threading.Event()
                def consume():
                    started.set()
                    try:
                        next(scan)
                    except (StopIteration, ValueError, RuntimeError, BufferError):
                        pass
                t = threading.Thread(target=consume)
                t.start()
                started.wait()
                time.sleep(0.002)
                try:
                    scan.close()
                except ValueError:  # close() refuses while next() runs, as generators do
                    pass
                try:
                    mm.close()
                except BufferError:
                    pass
                t.join()
        stop = True
        print("ok")
        """,
        str(path),
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    )


def test_next_from_two_threads_never_yields_a_record_twice() -> None:
    for _ in range(6):
        buf = frame(b"A" * (48 << 20)) + frame(b"B")
        scan = _native.Scanner(buf, threaded=True)
        got: list[Any] = []

        def take(scan: Any = scan, got: list[Any] = got) -> None:
            try:
                item = next(scan, None)
            except (ValueError, RuntimeError) as exc:  # "already executing" is acceptable
                got.append(type(exc))
            else:
                got.append(None if item is None else item[:1])

        workers = [threading.Thread(target=take) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(WATCHDOG)
        records = [g for g in got if isinstance(g, bytes)]
        assert len(records) == len(set(records)), f"a record yielded twice: {got}"
        assert sorted(records) == [b"A", b"B"][: len(records)], got
        sizes = [48 << 20, 1][: len(records)]
        assert (scan.records, scan.pos) == (len(records), sum(16 + n for n in sizes)), (
            got,
            scan.records,
            scan.pos,
        )
        scan.close()


def test_a_buffer_changed_under_the_scanner_does_not_hang() -> None:
    """The verifier checks ahead; if the bytes change afterwards the consumer must not
    wait forever for a record end the verifier never reaches."""
    proc = _run_python(
        """
        import time
        from tilestream.tfrecord import _native
        from tilestream.tfrecord.framing import frame
        buf = bytearray(b"".join(frame(bytes(1000)) for _ in range(10000)))  # ~10 MiB
        scan = _native.Scanner(buf, threaded=True)
        time.sleep(0.3)  # the verifier is a window ahead, asleep
        buf[0:8] = (8 << 20).to_bytes(8, "little")  # record 0 now claims 8 MiB
        next(scan, None)
        print("ok")
        """,
        timeout=10,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_records_counter_does_not_overflow() -> None:
    scan = _native.Scanner(frame(b"x"), records=sys.maxsize, verify=False)
    try:
        next(scan)
    except (OverflowError, ValueError):
        return
    assert scan.records >= 0, f"records wrapped around to {scan.records}"


# --------------------------------------------------------------------------- public readers


def _outcome(make: Callable[[], Iterator[Any]]) -> tuple[list[Any], Any]:
    items: list[Any] = []
    it = make()
    try:
        for item in it:
            items.append(item)
    except CorruptRecordError as exc:
        return items, (type(exc), str(exc), exc.record, exc.offset)
    extra = (
        getattr(it, "truncated_at", None),
        getattr(it, "records", None),
        getattr(it, "offset", None),
    )
    err = getattr(it, "error", None)
    return items, (None, extra, None if err is None else str(err))


def _both(monkeypatch: pytest.MonkeyPatch, make: Callable[[], Iterator[Any]]) -> tuple[Any, Any]:
    assert reader_module._native is _native
    native = _bounded(lambda: _outcome(make))
    with monkeypatch.context() as m:
        m.setattr(reader_module, "_native", None)
        python = _outcome(make)
    return native, python


def _assert_same_outcome(native: Any, python: Any) -> None:
    (n_items, n_end), (p_items, p_end) = native, python
    assert n_end == p_end
    assert len(n_items) == len(p_items)
    for a, b in zip(n_items, p_items, strict=True):
        assert _same(a, b), (a, b)


@pytest.mark.parametrize("damage", ["data", "length", "payload-length", "truncate", "tail"])
def test_public_readers_same_errors_with_and_without_native(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    payloads = [serialized_record("slide", bytes([i]) * (100 + i), i, -i) for i in range(40)]
    payloads[7] = b""
    payloads[9] = encode_example({"multi": [1, 2, 3], "f": Feature.float_list([])})
    payloads[11] = b"\x0a\x05"  # not a valid Example
    buf = bytearray(_framed(payloads))
    at = sum(16 + len(p) for p in payloads[:20])
    if damage == "data":
        buf[at + 12 + 30] ^= 0x04
    elif damage == "length":
        buf[at + 9] ^= 0x01
    elif damage == "payload-length":  # a valid header claiming too much
        buf[at : at + 12] = _header(len(payloads[20]) + 5)
    elif damage == "truncate":
        del buf[at + 40 :]
    else:  # a stray header at the end
        buf += _header(3)
    path = tmp_path / f"{damage}.tfrecords"
    path.write_bytes(bytes(buf))

    first = iter_records(path)
    assert next(first) == payloads[0]
    if _native.HARDWARE_CRC:
        assert first._scan is not None, "the native scanner is not used for a plain file"
    first.close()

    for verify in (True, False):
        for allow in (True, False):
            native, python = _both(
                monkeypatch,
                lambda v=verify, a=allow: iter_records(path, verify=v, allow_truncated=a),
            )
            _assert_same_outcome(native, python)
            if verify and damage in ("data", "length", "payload-length"):
                assert native[1][2:] == (20, at), native[1]
            if damage == "truncate" and allow:
                assert native[1][1][0] == at, native[1]
            # iter_examples stops with CorruptRecordError at payload 11 (not an Example)
            native, python = _both(
                monkeypatch,
                lambda v=verify, a=allow: iter_examples(path, verify=v, allow_truncated=a),
            )
            _assert_same_outcome(native, python)
            assert len(native[0]) == 11 and native[1][0] is CorruptRecordError
    good = bytearray(buf)
    good[: sum(16 + len(p) for p in payloads[:12])] = b""
    path2 = tmp_path / f"{damage}-examples.tfrecords"
    path2.write_bytes(bytes(good))
    for allow in (True, False):
        for squeeze in (True, False):
            native, python = _both(
                monkeypatch,
                lambda a=allow, s=squeeze: iter_examples(path2, allow_truncated=a, squeeze=s),
            )
            _assert_same_outcome(native, python)
            assert len(native[0]) >= 8


def test_public_reader_truncated_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [serialized_record("s", bytes(i * 10), i, i) for i in range(30)]
    buf = _framed(payloads)
    for cut in (len(buf) - 1, len(buf) - 5, len(buf) - 17, 12 * 16 + 3, 13):
        path = tmp_path / f"cut{cut}.tfrecords"
        path.write_bytes(buf[:cut])
        native, python = _both(monkeypatch, lambda p=path: iter_records(p, allow_truncated=True))
        _assert_same_outcome(native, python)
        assert native[1][1][0] is not None  # truncated_at
        native, python = _both(monkeypatch, lambda p=path: iter_examples(p, allow_truncated=True))
        _assert_same_outcome(native, python)
