"""The one bounded least-recently-used cache every tilestream cache is built on.

Decoded stored tiles, rendered viewer tiles and open file descriptors are all
kept in an :class:`LRU`, bounded by a number of entries, a number of bytes, or
both. It is thread-safe; ``on_evict`` lets an owner release what an entry holds
(a file descriptor is closed when it leaves the cache).

Examples
--------
>>> lru = LRU[str, bytes](max_bytes=5, sizeof=len)
>>> lru.put("a", b"abc"), lru.put("b", b"de"), lru.put("c", b"f")
(True, True, True)
>>> lru.get("a"), lru.get("c"), lru.nbytes
(None, b'f', 3)
>>> closed = []
>>> fds = LRU[str, int](max_items=2, on_evict=lambda key, fd: closed.append(key))
>>> for name in ("x", "y", "z"):
...     _ = fds.put(name, 1)
>>> closed, sorted(fds.keys())
(['x'], ['y', 'z'])
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A thread-safe least-recently-used map bounded in entries and/or bytes.

    Parameters
    ----------
    max_items
        At most this many entries (``None``: no bound on the count).
    max_bytes
        At most this many bytes, as measured by ``sizeof`` (``None``: no bound).
        A value larger than the whole budget is not stored.
    sizeof
        The size of a value in bytes; required with ``max_bytes``.
    on_evict
        Called with ``(key, value)`` for every entry that leaves the cache
        without being returned to the caller: evicted, replaced or cleared.
    """

    def __init__(
        self,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        sizeof: Callable[[V], int] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_bytes is not None and sizeof is None:
            raise ValueError("an LRU bounded in bytes needs sizeof")
        self.max_items = None if max_items is None else max(0, int(max_items))
        self.max_bytes = None if max_bytes is None else max(0, int(max_bytes))
        self._sizeof = sizeof
        self._on_evict = on_evict
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        #: Bytes held (0 when not bounded in bytes).
        self.nbytes = 0
        #: Lookups by :meth:`get` that found / did not find their key.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def keys(self) -> list[K]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def peek(self, key: K) -> V | None:
        """The value of ``key`` or ``None``, leaving the order and the counts alone."""
        item = self._data.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V) -> bool:
        """Store ``value`` under ``key``, evicting the least recently used beyond the bounds.

        Returns ``False`` (and stores nothing) when the value alone exceeds ``max_bytes``.
        """
        size = self._sizeof(value) if self._sizeof is not None else 0
        if self.max_bytes is not None and size > self.max_bytes:
            return False
        dropped: list[tuple[K, V]] = []
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
                if old[0] is not value:
                    dropped.append((key, old[0]))
            self._data[key] = (value, size)
            self.nbytes += size
            dropped.extend(self._shrink())
        self._evicted(dropped)
        return True

    def pop(self, key: K) -> V | None:
        """Remove ``key`` and return its value (``on_evict`` is not called), or ``None``."""
        with self._lock:
            item = self._data.pop(key, None)
            if item is None:
                return None
            self.nbytes -= item[1]
            return item[0]

    def resize(self, *, max_items: int | None = None, max_bytes: int | None = None) -> None:
        """Change the bounds that are given, evicting what no longer fits."""
        with self._lock:
            if max_items is not None:
                self.max_items = max(0, int(max_items))
            if max_bytes is not None:
                self.max_bytes = max(0, int(max_bytes))
            dropped = self._shrink()
        self._evicted(dropped)

    def clear(self) -> None:
        """Drop every entry (``on_evict`` is called for each)."""
        with self._lock:
            dropped = [(k, v) for k, (v, _) in self._data.items()]
            self._data.clear()
            self.nbytes = 0
        self._evicted(dropped)

    def _shrink(self) -> list[tuple[K, V]]:
        # Called with the lock held.
        dropped: list[tuple[K, V]] = []
        while self._data and (
            (self.max_items is not None and len(self._data) > self.max_items)
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            key, (value, size) = self._data.popitem(last=False)
            self.nbytes -= size
            dropped.append((key, value))
        return dropped

    def _evicted(self, dropped: list[tuple[K, V]]) -> None:
        if self._on_evict is not None:
            for key, value in dropped:
                self._on_evict(key, value)
