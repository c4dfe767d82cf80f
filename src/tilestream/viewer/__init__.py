"""A local web viewer for slides and extracted tiles.

``tilestream view PATH`` (or :class:`ViewerServer`) serves, on loopback by
default (elsewhere only with an access token), a slide, a folder of slides or
an extraction output folder, or by URL a slide object or a run folder in an
object store (``s3://``, ``gs://``, ``https://``, with ``storage_options``):

- a dataset page: slides with thumbnails, tile counts, status and failures;
- a slide page: an OpenSeadragon Deep Zoom viewer (shipped in ``static/``, no
  CDN) with overlays toggled on and off (tissue outline, kept and rejected
  tiles, ROIs), the stored tile, coordinates and filter values of a clicked
  tile (from the TFRecord, by location through its index), and a metadata panel
  (properties, levels, mpp, associated images);
- a mosaic page of tiles sampled from a slide's TFRecord.

Deep Zoom tiles come from :class:`TileRenderer` (OpenSlide's geometry, the
slide layer's fast path, ``simplejpeg``), read through :class:`SlidePool`
(each slide handle used by one thread at a time).

Examples
--------
>>> import urllib.request
>>> from tilestream.extract import demo_slide_path
>>> with ViewerServer(demo_slide_path(), port=0) as server:
...     server.start()
...     with urllib.request.urlopen(server.url + "dz/CMU-1-Small-Region_files/12/0_0.jpeg") as r:
...         r.headers["Content-Type"], r.read(2)
('image/jpeg', b'\\xff\\xd8')
"""

from __future__ import annotations

from tilestream.viewer.access import is_loopback
from tilestream.viewer.catalog import Catalog, SlideEntry
from tilestream.viewer.data import SlideData
from tilestream.viewer.pool import SlidePool
from tilestream.viewer.render import BytesLRU, TileNotFound, TileRenderer
from tilestream.viewer.server import STATIC_DIR, ViewerApp, ViewerServer, safe_join

__all__ = [
    "STATIC_DIR",
    "BytesLRU",
    "Catalog",
    "SlideData",
    "SlideEntry",
    "SlidePool",
    "TileNotFound",
    "TileRenderer",
    "ViewerApp",
    "ViewerServer",
    "is_loopback",
    "safe_join",
]
