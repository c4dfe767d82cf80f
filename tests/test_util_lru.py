"""The one LRU every cache is built on: bounds, order, eviction callbacks, threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tilestream._util.lru import LRU

ops = st.lists(
    st.tuples(st.sampled_from(["get", "put", "pop"]), st.integers(0, 6), st.binary(max_size=7)),
    max_size=60,
)


@given(ops, st.integers(0, 4), st.integers(0, 12))
def test_matches_a_reference_model(
    seq: list[tuple[str, int, bytes]], items: int, nbytes: int
) -> None:
    evicted: list[int] = []
    lru = LRU[int, bytes](
        max_items=items, max_bytes=nbytes, sizeof=len, on_evict=lambda k, v: evicted.append(k)
    )
    model: list[tuple[int, bytes]] = []  # least recently used first
    expected_evicted: list[int] = []
    for op, key, value in seq:
        found = [i for i, (k, _) in enumerate(model) if k == key]
        if op == "get":
            got = lru.get(key)
            if found:
                entry = model.pop(found[0])
                model.append(entry)
                assert got == entry[1]
            else:
                assert got is None
        elif op == "pop":
            got = lru.pop(key)
            assert got == (model.pop(found[0])[1] if found else None)
        else:
            stored = lru.put(key, value)
            assert stored == (len(value) <= nbytes)
            if not stored:
                continue
            if found:
                old = model.pop(found[0])
                if old[1] is not value:
                    expected_evicted.append(key)
            model.append((key, value))
            while len(model) > items or sum(len(v) for _, v in model) > nbytes:
                expected_evicted.append(model.pop(0)[0])
        assert lru.keys() == [k for k, _ in model]
        assert lru.nbytes == sum(len(v) for _, v in model)
    assert evicted == expected_evicted


def test_clear_and_resize_release_entries() -> None:
    released: list[str] = []
    lru = LRU[str, int](max_items=3, on_evict=lambda k, v: released.append(k))
    for k in "abc":
        lru.put(k, 0)
    lru.resize(max_items=1)
    assert released == ["a", "b"] and lru.keys() == ["c"]
    lru.clear()
    assert released == ["a", "b", "c"] and len(lru) == 0


def test_hits_misses_and_peek_leave_order() -> None:
    lru = LRU[str, int](max_items=2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.peek("a") == 1 and lru.keys() == ["a", "b"]
    assert lru.get("a") == 1 and lru.get("z") is None
    assert (lru.hits, lru.misses) == (1, 1) and lru.keys() == ["b", "a"]


def test_byte_budget_needs_a_size() -> None:
    with pytest.raises(ValueError, match="sizeof"):
        LRU[str, bytes](max_bytes=10)


def test_threads_keep_the_budget() -> None:
    lru = LRU[int, bytes](max_bytes=1000, sizeof=len)

    def work(seed: int) -> None:
        for i in range(3000):
            key = (seed * 7919 + i * 31) % 97
            if lru.get(key) is None:
                lru.put(key, b"x" * (key % 50 + 1))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lru.nbytes == sum(k % 50 + 1 for k in lru) <= 1000
