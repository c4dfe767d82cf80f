"""The conformance suite every :class:`~tilestream.storage.Store` backend must pass.

Like ``zarr.testing``: a backend's test module subclasses
:class:`StoreConformance` and gives a ``store`` fixture returning a fresh,
empty, writable store; pytest then runs every test below against it::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)

A ``secrets`` fixture (strings that must never appear in a ``repr`` or an
error) may be overridden too; by default it is empty.
"""

from __future__ import annotations

import pickle
import random
import threading
import traceback
from collections.abc import Iterator

import pytest

from tilestream.errors import StorageError, StorageNotFoundError, StorageReadOnlyError
from tilestream.storage import Store

__all__ = ["StoreConformance", "payload"]


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes.

    >>> len(payload(10)), payload(4, 1) == payload(4, 1)
    (10, True)
    """
    return random.Random(seed).randbytes(size)


class _Boom(RuntimeError):
    pass


class StoreConformance:
    """Tests of the :class:`~tilestream.storage.Store` contract (subclass; give ``store``)."""

    #: The size of the streamed write that must take a multipart upload on object stores.
    large_size = 18 * 1024 * 1024

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a conformance test class must define the 'store' fixture")

    @pytest.fixture
    def secrets(self) -> list[str]:
        return []

    # -- reading what was written -----------------------------------------------------
    def test_write_then_read(self, store: Store) -> None:
        data = payload(100_000)
        store.write_atomic("obj/a.bin", data)
        assert store.read("obj/a.bin") == data
        assert store.read_range("obj/a.bin", 1000, 5000) == data[1000:6000]
        stat = store.stat("obj/a.bin")
        assert stat.size == store.size("obj/a.bin") == len(data)
        assert stat.version
        assert store.exists("obj/a.bin")

    def test_write_from_chunks(self, store: Store) -> None:
        chunks = [payload(1000, i) for i in range(7)]
        store.write_atomic("chunks.bin", iter(chunks))
        assert store.read("chunks.bin") == b"".join(chunks)

    def test_empty_object(self, store: Store) -> None:
        store.write_atomic("empty", b"")
        assert store.size("empty") == 0
        assert store.read("empty") == b""

    def test_read_range_at_and_past_the_end(self, store: Store) -> None:
        store.write_atomic("r.bin", b"0123456789")
        assert store.read_range("r.bin", 8, 10) == b"89"
        assert store.read_range("r.bin", 10, 5) == b""
        assert store.read_range("r.bin", 50, 5) == b""
        assert store.read_range("r.bin", 3, 0) == b""
        with pytest.raises(ValueError, match="offset"):
            store.read_range("r.bin", -1, 2)

    def test_read_ranges_returns_each_range_in_order(self, store: Store) -> None:
        data = payload(300_000, 3)
        store.write_atomic("ranges.bin", data)
        rng = random.Random(5)
        ranges = [(rng.randrange(0, len(data)), rng.randrange(0, 4000)) for _ in range(60)]
        ranges += [(10, 100), (10, 100), (50, 10), (0, 0), (len(data) - 5, 100)]
        store.stats.reset()
        got = store.read_ranges("ranges.bin", ranges)
        assert got == [data[o : o + n] for o, n in ranges]
        assert 0 < store.stats.requests < len(ranges)  # coalesced

    def test_read_ranges_far_apart_are_separate_requests(self, store: Store) -> None:
        data = payload(1_000_000, 4)
        store.write_atomic("far.bin", data)
        store.stats.reset()
        ranges = [(0, 10), (500_000, 10), (999_990, 10)]
        assert store.read_ranges("far.bin", ranges, max_gap=1000) == [
            data[o : o + n] for o, n in ranges
        ]
        assert store.stats.requests >= 3
        assert store.stats.bytes_read == 30  # no bytes between the ranges were fetched

    def test_open_read_is_seekable(self, store: Store) -> None:
        data = payload(700_000, 6)
        store.write_atomic("f.bin", data)
        with store.open_read("f.bin") as f:
            assert f.seekable() and f.readable()
            assert f.read(10) == data[:10]
            f.seek(500_000)
            assert f.tell() == 500_000
            assert f.read(1000) == data[500_000:501_000]
            f.seek(-10, 2)
            assert f.read() == data[-10:]
            f.seek(0)
            assert f.read() == data

    # -- missing objects -------------------------------------------------------------
    def test_check_root_passes_on_an_existing_root(self, store: Store) -> None:
        store.write_atomic("root/a.bin", b"x")
        store.check_root()  # the root (folder, bucket) exists: nothing raised

    def test_missing_object_is_a_clear_error(self, store: Store) -> None:
        url = store.url_of("no/such.bin")
        assert not store.exists("no/such.bin")
        for call in (
            lambda: store.stat("no/such.bin"),
            lambda: store.read_range("no/such.bin", 0, 10),
            lambda: store.read("no/such.bin"),
            lambda: store.open_read("no/such.bin"),
        ):
            with pytest.raises(StorageNotFoundError) as info:
                call()
            assert url in str(info.value)
            assert isinstance(info.value, FileNotFoundError)

    def test_delete(self, store: Store) -> None:
        store.write_atomic("d/x", b"x")
        store.delete("d/x")
        assert not store.exists("d/x")
        store.delete("d/x")  # deleting what is not there is no error
        assert list(store.list("d")) == []

    # -- listing ---------------------------------------------------------------------
    def test_list_under_a_prefix(self, store: Store) -> None:
        for key in ("run/a", "run/sub/b", "run2/c", "top"):
            store.write_atomic(key, key.encode())
        assert list(store.list("run")) == ["run/a", "run/sub/b"]
        assert list(store.list("run/")) == ["run/a", "run/sub/b"]
        assert sorted(store.list("run/sub")) == ["run/sub/b"]
        assert sorted(store.list()) == ["run/a", "run/sub/b", "run2/c", "top"]
        assert list(store.list("nothing")) == []

    # -- atomic writes ---------------------------------------------------------------
    def test_overwrite_replaces_the_whole_object(self, store: Store) -> None:
        store.write_atomic("o.bin", payload(5000, 1))
        before = store.stat("o.bin")
        store.write_atomic("o.bin", payload(300, 2))
        assert store.read("o.bin") == payload(300, 2)
        assert store.stat("o.bin").version != before.version  # what resume compares

    def test_readers_never_see_a_partial_object(self, store: Store) -> None:
        versions = [payload(400_000, 21), payload(250_000, 22)]
        store.write_atomic("live.bin", versions[0])
        stop = threading.Event()
        seen: list[bytes] = []

        def writer() -> None:
            for i in range(6):
                chunks = versions[i % 2]
                store.write_atomic(
                    "live.bin", (chunks[j : j + 65536] for j in range(0, len(chunks), 65536))
                )
            stop.set()

        thread = threading.Thread(target=writer)
        thread.start()
        while True:  # at least one read, however fast the writer
            done = stop.is_set()
            seen.append(store.read("live.bin"))
            if done:
                break
        thread.join()
        assert seen and all(data in versions for data in seen)

    def test_failed_stream_leaves_nothing_visible(self, store: Store) -> None:
        def chunks() -> Iterator[bytes]:
            yield payload(100_000, 7)
            raise _Boom("the producer failed")

        with pytest.raises(_Boom):
            store.write_atomic("fail/new.bin", chunks())
        assert not store.exists("fail/new.bin")
        store.write_atomic("fail/old.bin", b"old")
        with pytest.raises(_Boom):
            store.write_atomic("fail/old.bin", chunks())
        assert store.read("fail/old.bin") == b"old"
        assert sorted(store.list("fail")) == ["fail/old.bin"]

    def test_large_streamed_write(self, store: Store) -> None:
        chunk = 1024 * 1024
        data = payload(self.large_size, 8)
        store.write_atomic("big.bin", (data[i : i + chunk] for i in range(0, len(data), chunk)))
        assert store.size("big.bin") == len(data)
        assert store.read_range("big.bin", len(data) - 100, 100) == data[-100:]
        assert store.read("big.bin") == data

    # -- conditional writes ----------------------------------------------------------
    def test_put_if_absent(self, store: Store) -> None:
        if not store.supports_conditional_write:
            with pytest.raises(StorageReadOnlyError):
                store.put_if_absent("lock", b"a")
            return
        assert store.put_if_absent("locks/lock", b"first") is True
        assert store.put_if_absent("locks/lock", b"second") is False
        assert store.read("locks/lock") == b"first"
        assert list(store.list("locks")) == ["locks/lock"]

    def test_put_if_absent_has_one_winner(self, store: Store) -> None:
        if not store.supports_conditional_write:
            pytest.skip("the store has no conditional writes")
        results: dict[int, bool] = {}
        barrier = threading.Barrier(6)

        def race(i: int) -> None:
            barrier.wait()
            results[i] = store.put_if_absent("race/lease", f"writer {i}".encode())

        threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, won in results.items() if won]
        assert len(winners) == 1
        assert store.read("race/lease") == f"writer {winners[0]}".encode()

    # -- keys, pickling, secrets -----------------------------------------------------
    @pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a/..", ""])
    def test_invalid_keys_are_refused(self, store: Store, key: str) -> None:
        with pytest.raises(ValueError, match="invalid storage key"):
            store.read_range(key, 0, 1)
        with pytest.raises(ValueError, match="invalid storage key"):
            store.write_atomic(key, b"x")

    def test_pickled_store_reads_the_same(self, store: Store) -> None:
        store.write_atomic("p.bin", b"pickled")
        clone = pickle.loads(pickle.dumps(store))
        assert clone.read("p.bin") == b"pickled"
        assert clone.url == store.url

    def test_no_secret_in_repr_or_errors(self, store: Store, secrets: list[str]) -> None:
        texts = [repr(store), str(store.url), store.url_of("k")]
        try:
            store.read("no/such/object")
        except StorageError as exc:
            texts.append("".join(traceback.format_exception(exc)))
        for secret in secrets:
            assert all(secret not in text for text in texts)
