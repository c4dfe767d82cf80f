"""Staging: a remote slide no backend reads by byte ranges, copied to a local scratch folder.

Formats only OpenSlide reads (MIRAX, Philips, Ventana, DICOM...) need a local
file. :func:`stage_source` streams the object (for MIRAX also its sibling
folder, for a DICOM file the other ``.dcm`` files of its folder) in bounded
ranged reads to a fresh folder under the scratch root
(:func:`scratch_root`: ``scratch=``, else ``TILESTREAM_SCRATCH``, else the
system's temporary folder), after checking the bytes against the staging
limit (:attr:`~tilestream.slide.limits.SlideLimits.stage_bytes`) and the free
space. Each download is checked against the object's size and version: a
truncated or replaced object is an error, never a slide. The folder is
removed on failure and by :meth:`StagedSlide.remove` (the slide's ``close``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tilestream.errors import RemoteSlideError, SlideError, SlideTooLargeError, StorageError
from tilestream.slide.limits import format_bytes
from tilestream.slide.remote import RemoteSource, slide_error
from tilestream.storage import Stat, Store

__all__ = ["CHUNK_BYTES", "SCRATCH_ENV", "StagedSlide", "scratch_root", "stage_source"]

logger = logging.getLogger(__name__)

#: The environment variable naming the scratch root.
SCRATCH_ENV = "TILESTREAM_SCRATCH"
#: Bytes of one ranged read while staging.
CHUNK_BYTES = 8 * 1024 * 1024


def scratch_root(scratch: str | os.PathLike[str] | None = None) -> Path:
    """Where staged slides go: ``scratch``, else ``$TILESTREAM_SCRATCH``, else the temp folder."""
    if scratch is not None:
        return Path(scratch)
    env = os.environ.get(SCRATCH_ENV)
    return Path(env) if env else Path(tempfile.gettempdir())


@dataclass
class StagedSlide:
    """A staged slide: its private scratch folder and the local file to open."""

    folder: Path
    path: Path

    def remove(self) -> None:
        """Delete the scratch folder and everything staged in it."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _objects(source: RemoteSource) -> list[tuple[str, str, Stat]]:
    """``(key, relative local path, stat)`` of every object the slide needs."""
    key = source.key
    parent, _, name = key.rpartition("/")
    out = [(key, name, source.stat)]
    lower = name.lower()
    if lower.endswith(".mrxs"):  # MIRAX: a.mrxs and the folder a/ beside it
        folder = f"{parent}/{name[:-5]}" if parent else name[:-5]
        listed = source.store.list(folder)
        out += [(k, k[len(parent) + 1 :] if parent else k, source.store.stat(k)) for k in listed]
    elif lower.endswith(".dcm"):  # a DICOM series: the other instances of its folder
        listed = source.store.list(parent) if parent else source.store.list()
        for k in listed:
            rel = k[len(parent) + 1 :] if parent else k
            if k != key and "/" not in rel and rel.lower().endswith(".dcm"):
                out.append((k, rel, source.store.stat(k)))
    return out


def _download(store: Store, key: str, stat: Stat, target: Path, url: str) -> None:
    """Stream one object to ``target``; a short or replaced object is :class:`RemoteSlideError`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with open(target, "wb") as f:
        while done < stat.size:
            data = store.read_range(key, done, min(CHUNK_BYTES, stat.size - done))
            if not data:
                break
            f.write(data)
            done += len(data)
    if done != stat.size:
        raise RemoteSlideError(
            f"truncated download while staging {store.url_of(key)}: {done} of the "
            f"{stat.size} bytes the store declared",
            path=url,
        )
    if store.stat(key).version != stat.version:
        raise RemoteSlideError(
            f"{store.url_of(key)} was replaced while it was staged; open the slide again",
            path=url,
        )


def stage_source(
    source: RemoteSource,
    *,
    max_bytes: int,
    scratch: str | os.PathLike[str] | None = None,
) -> StagedSlide:
    """Copy the slide at ``source`` (and its companion files) to a new local scratch folder.

    Raises
    ------
    SlideTooLargeError
        The bytes to stage are over ``max_bytes``.
    SlideError
        The scratch folder lacks the free space.
    RemoteSlideError, SlideNotFoundError, SlideAccessDeniedError
        The store failed, or a download came out shorter than the object.
    """
    try:
        objects = _objects(source)
    except StorageError as exc:
        raise slide_error(exc, source.url) from None
    total = sum(stat.size for _, _, stat in objects)
    if total > max_bytes:
        raise SlideTooLargeError(
            f"staging it needs {format_bytes(total)} of local scratch, over the staging limit "
            f"of {format_bytes(max_bytes)} (open_slide(..., limits=SlideLimits(stage_bytes=...)))",
            path=source.url,
        )
    root = scratch_root(scratch)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if total > free:
        raise SlideError(
            f"staging it needs {format_bytes(total)} but the scratch folder {root} has "
            f"{format_bytes(free)} free (scratch= or ${SCRATCH_ENV} chooses another)",
            path=source.url,
        )
    folder = Path(tempfile.mkdtemp(prefix="tilestream-stage-", dir=root))
    try:
        for key, rel, stat in objects:
            _download(source.store, key, stat, folder / rel, source.url)
    except StorageError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise slide_error(exc, source.url) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("%s: staged %s in %d object(s)", source.url, format_bytes(total), len(objects))
    return StagedSlide(folder, folder / objects[0][1])
