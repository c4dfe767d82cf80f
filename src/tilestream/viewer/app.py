"""The viewer's state: its catalogue, slide handle pools, renderers and caches.

Only the ``open_slides`` most recently used slides keep open handles, whole
Deep Zoom level images and TFRecord maps; older ones are released (and
reopened when asked for again).

Examples
--------
>>> from tilestream.extract import demo_slide_path
>>> app = ViewerApp(Catalog.from_path(demo_slide_path()))
>>> app.renderer(app.entry("CMU-1-Small-Region")).level_count
13
>>> app.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tilestream._util.lru import LRU
from tilestream.runfolder import slide_outputs
from tilestream.viewer.catalog import Catalog, SlideEntry
from tilestream.viewer.data import SlideData
from tilestream.viewer.httpio import HTTPError
from tilestream.viewer.pool import SlidePool
from tilestream.viewer.render import BytesLRU, TileRenderer

__all__ = ["OPEN_SLIDES", "SMALL_CACHE_BYTES", "TILE_CACHE_BYTES", "ViewerApp"]

#: Slides keeping open handles, level images and TFRecord maps at once.
OPEN_SLIDES = 8

#: Budget of the encoded Deep Zoom tile cache shared by all slides.
TILE_CACHE_BYTES = 128 * 1024 * 1024

#: Budget of the small rendered images (thumbnails, tissue outlines...) of all slides.
SMALL_CACHE_BYTES = 32 * 1024 * 1024


class ViewerApp:
    """The viewer's state: catalogue, slide handle pools, renderers and caches (thread-safe).

    Only the ``open_slides`` most recently used slides keep open handles, whole
    Deep Zoom level images and TFRecord maps; older ones are released (and
    reopened when asked for again), so browsing a folder of thousands of slides
    holds neither thousands of files open nor their memory.
    """

    def __init__(
        self, catalog: Catalog, *, handles_per_slide: int = 4, open_slides: int = OPEN_SLIDES
    ) -> None:
        self.catalog = catalog
        self.handles_per_slide = handles_per_slide
        #: Encoded Deep Zoom tiles of every slide.
        self.tiles = BytesLRU(TILE_CACHE_BYTES)
        #: Small rendered images (thumbnails, associated images, tissue outlines) of every slide.
        self.images = LRU[tuple[str, str], bytes](max_bytes=SMALL_CACHE_BYTES, sizeof=len)
        self._lock = threading.Lock()
        # the slides holding resources; one leaving it releases them (with _lock held)
        self._recent = LRU[str, None](max_items=open_slides, on_evict=self._release)
        self._pools: dict[str, SlidePool] = {}
        self._renderers: dict[str, TileRenderer] = {}
        self._data: dict[str, SlideData] = {}
        # decided once, as the catalogue decides staleness once: no stat per request
        self._previews = frozenset(
            slide_outputs(e.run_dir, e.name)["preview"].resolve()
            for e in catalog.entries
            if e.run_dir is not None and e.stale is None
        )

    @property
    def open_slides(self) -> int:
        """Most slides keeping open handles, level images and TFRecord maps at once."""
        return self._recent.max_items or 0

    @open_slides.setter
    def open_slides(self, value: int) -> None:
        with self._lock:
            self._recent.resize(max_items=value)

    def serves_file(self, path: Path) -> bool:
        """Whether ``/files/`` serves ``path`` (resolved): only current slides' previews."""
        return path in self._previews

    def store_file(self, rel: str) -> bytes:
        """The bytes ``/files/<rel>`` serves from a run folder in a store (404 otherwise).

        As on disk, only the previews of current slides: ``previews/<slide>.jpg``.
        """
        for entry in self.catalog.entries:
            if entry.store is not None and entry.summary()["preview"] == rel:
                body = entry.read_output("preview")
                if body is not None:
                    return body
        raise HTTPError(404, "not a file the viewer serves")

    def entry(self, slide_id: str | None) -> SlideEntry:
        """The catalogue entry ``slide_id`` (404 when unknown)."""
        entry = self.catalog.get(slide_id or "")
        if entry is None:
            raise HTTPError(404, f"no slide {slide_id!r}")
        return entry

    def pool(self, entry: SlideEntry) -> SlidePool:
        """The handle pool of a slide (404 when its file is missing)."""
        if not entry.has_slide:
            raise HTTPError(404, f"slide file of {entry.name!r} not found: {entry.slide_file}")
        assert entry.slide_path is not None
        with self._lock:
            self._touch(entry.id)
            pool = self._pools.get(entry.id)
            if pool is None:
                pool = SlidePool(
                    entry.slide_path,
                    self.handles_per_slide,
                    storage_options=entry.storage_options,
                )
                self._pools[entry.id] = pool
            return pool

    def _touch(self, slide_id: str) -> None:
        # Mark a slide used (with _lock held); the least recently used beyond
        # ``open_slides`` are released by _release.
        self._recent.put(slide_id, None)

    def _release(self, slide_id: str, _: None) -> None:
        self._renderers.pop(slide_id, None)
        pool = self._pools.pop(slide_id, None)
        if pool is not None:
            pool.trim()  # requests still holding it reopen a handle
        data = self._data.get(slide_id)
        if data is not None:
            data.close()

    @property
    def open_slide_ids(self) -> list[str]:
        """Ids of the slides holding resources, least recently used first."""
        return self._recent.keys()

    def renderer(self, entry: SlideEntry) -> TileRenderer:
        """The Deep Zoom renderer of a slide (built once)."""
        with self._lock:
            self._touch(entry.id)
            renderer = self._renderers.get(entry.id)
        if renderer is None:
            renderer = TileRenderer(self.pool(entry), cache=self.tiles)
            with self._lock:
                renderer = self._renderers.setdefault(entry.id, renderer)
        return renderer

    def data(self, entry: SlideEntry) -> SlideData:
        """The extraction data of a slide."""
        with self._lock:
            self._touch(entry.id)
            return self._data.setdefault(entry.id, SlideData(entry))

    def cached(self, entry: SlideEntry, what: str, make: Callable[[], bytes]) -> bytes:
        """A small rendered image (thumbnail, tissue outline...), made once (while cached)."""
        key = (entry.id, what)
        value = self.images.get(key)
        if value is None:
            value = make()
            self.images.put(key, value)
        return value

    def close(self) -> None:
        """Close every slide handle and TFRecord map."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            for data in self._data.values():
                data.close()
