"""A small pool of slide handles: each handle is used by one thread at a time.

A web server answers requests on many threads; OpenSlide handles (and the
decoded-tile caches of tilestream's backends) must not be driven by two threads
at once. :class:`SlidePool` opens up to ``size`` handles of one slide lazily
and lends each to one thread at a time.

Examples
--------
>>> from tilestream.extract import demo_slide_path
>>> pool = SlidePool(demo_slide_path(), size=2)
>>> with pool.handle() as slide:
...     slide.dimensions
(2220, 2967)
>>> pool.opened
1
>>> pool.trim(); pool.opened  # idle handles closed, reopened on demand
0
>>> pool.close()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tilestream.extract.remote import is_slide_url
from tilestream.slide import Slide, open_slide

__all__ = ["SlidePool"]

#: Decoded-tile cache budget of each handle (the ``tifffile`` backend).
HANDLE_CACHE_BYTES = 96 * 1024 * 1024


class SlidePool:
    """Up to ``size`` open handles of one slide, each lent to one thread at a time.

    Parameters
    ----------
    path
        The slide file, or its URL (an object in a store, a DICOMweb series).
    size
        Most handles open at once; a thread asking for one when all are lent waits.
    cache_bytes
        Decoded-tile cache budget of each handle.
    storage_options
        Options of the store of a slide URL (credentials, endpoint); never shown.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int = 4,
        *,
        cache_bytes: int = HANDLE_CACHE_BYTES,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size!r}")
        # a slide URL stays a string (a Path would fold its "//")
        self.path: Path | str = os.fspath(path) if is_slide_url(path) else Path(path)
        self.size = size
        self._cache_bytes = cache_bytes
        self._storage_options = storage_options
        self._free: list[Slide] = []
        self._all: list[Slide] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    @property
    def opened(self) -> int:
        """Number of handles opened so far."""
        with self._cond:
            return len(self._all)

    def _acquire(self) -> Slide:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the slide pool is closed")
                if self._free:
                    return self._free.pop()
                if self._count < self.size:
                    break
                self._cond.wait()
            self._count += 1  # reserve the slot; open outside the lock
        try:
            slide = open_slide(
                self.path, cache_bytes=self._cache_bytes, storage_options=self._storage_options
            )
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.append(slide)
        return slide

    def _release(self, slide: Slide) -> None:
        with self._cond:
            if self._closed:
                slide.close()
                return
            self._free.append(slide)
            self._cond.notify()

    @contextmanager
    def handle(self) -> Iterator[Slide]:
        """Borrow a handle for the duration of a ``with`` block."""
        slide = self._acquire()
        try:
            yield slide
        finally:
            self._release(slide)

    def trim(self) -> None:
        """Close the idle handles; the pool stays usable and reopens handles on demand."""
        with self._cond:
            idle, self._free = self._free, []
            for slide in idle:
                self._all.remove(slide)
            self._count -= len(idle)
            self._cond.notify_all()
        for slide in idle:
            slide.close()

    def close(self) -> None:
        """Close the idle handles now and the lent ones when they come back."""
        with self._cond:
            self._closed = True
            for slide in self._free:
                slide.close()
            self._free.clear()
            self._cond.notify_all()
