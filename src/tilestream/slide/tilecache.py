"""The decoded-tile cache of a slide: the project's :class:`~tilestream._util.lru.LRU` in bytes.

A :class:`TileCache` holds decoded stored tiles (RGB arrays, made read-only
when cached) under a byte budget. A budget that may grow (``grow_limit``) is
raised by :meth:`TileCache.reserve` to what a region read needs, so a
row-major pass over a slide decodes every stored tile once.

Examples
--------
>>> import numpy as np
>>> cache = TileCache(max_bytes=500)
>>> cache.put(("a",), np.zeros((10, 10, 3), np.uint8))
True
>>> cache.put(("b",), np.zeros((10, 10, 3), np.uint8))  # 600 bytes > 500: "a" evicted
True
>>> cache.get(("a",)) is None, cache.get(("b",)) is not None, cache.nbytes
(True, True, 300)
>>> cache.reserve(10_000), cache.max_bytes  # no grow_limit: the budget is fixed
(None, 500)
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from numpy.typing import NDArray

from tilestream._util.lru import LRU

__all__ = ["DEFAULT_CACHE_BYTES", "MAX_AUTO_CACHE_BYTES", "TileCache"]

#: Initial budget of a slide's decoded-tile cache (bytes) when ``cache_bytes`` is not given.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
#: Ceiling to which that budget may grow so a grid-order pass decodes each tile once.
MAX_AUTO_CACHE_BYTES = 256 * 1024 * 1024


def _nbytes(tile: NDArray[np.uint8]) -> int:
    return int(tile.nbytes)


class TileCache(LRU[Hashable, NDArray[np.uint8]]):
    """A thread-safe LRU cache of decoded tiles, bounded in bytes.

    ``get`` (counting ``hits`` / ``misses``), ``peek`` (counting nothing),
    ``nbytes``, ``len()`` and ``clear`` are the :class:`~tilestream._util.lru.LRU`'s.

    Parameters
    ----------
    max_bytes
        Budget; the least recently used tiles are dropped beyond it. 0 disables
        caching (every read decodes).
    grow_limit
        When given, :meth:`reserve` may raise the budget up to this many bytes.
    """

    max_bytes: int

    def __init__(self, max_bytes: int, *, grow_limit: int | None = None) -> None:
        super().__init__(max_bytes=max(0, int(max_bytes)), sizeof=_nbytes)
        self.grow_limit = grow_limit

    def put(self, key: Hashable, tile: NDArray[np.uint8]) -> bool:
        """Cache ``tile`` (read-only from now on), evicting older tiles past the budget.

        Returns ``False`` (and leaves the tile writable) when it alone is over the budget.
        """
        if tile.nbytes > self.max_bytes:
            return False
        tile.flags.writeable = False
        return super().put(key, tile)

    def reserve(self, nbytes: int) -> None:
        """Grow the budget to ``nbytes`` (at most ``grow_limit``) if growing is allowed."""
        if self.grow_limit is not None and nbytes > self.max_bytes:
            self.resize(max_bytes=min(int(nbytes), self.grow_limit))
