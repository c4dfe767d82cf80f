"""Batched frame fetching: many frames per WADO-RS request, bounded concurrency, a frame cache.

:class:`FrameFetcher` gets the frames a read needs with multi-frame WADO-RS
requests (``.../instances/<uid>/frames/1,2,3``, at most
:attr:`~DicomWebOptions.frames_per_request` frames each, at most
:attr:`~DicomWebOptions.concurrency` requests in flight) asking for the frames
*as stored* (``transfer-syntax=*``), and keeps them, encoded, in an
:class:`~tilestream._util.lru.LRU` bounded in bytes. Each frame comes back with
its transfer syntax, read from its part's ``Content-Type``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from tilestream._util.lru import LRU
from tilestream.errors import RemoteSlideError
from tilestream.slide.dicomweb._client import DicomWebSession

__all__ = ["ACCEPT_AS_STORED", "Frame", "FrameFetcher", "parse_multipart"]

logger = logging.getLogger(__name__)

#: Ask for frames in the transfer syntax they are stored in (no transcoding on the server).
ACCEPT_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_SYNTAX = re.compile(r"transfer-syntax=([0-9.]+)", re.IGNORECASE)


class Frame(NamedTuple):
    """One encoded frame and its transfer syntax UID (``None`` when the server did not say)."""

    data: bytes
    transfer_syntax: str | None


def parse_multipart(body: bytes, content_type: str) -> list[Frame]:
    """The parts of a ``multipart/related`` answer, in order, with their transfer syntaxes.

    Examples
    --------
    >>> body = b'--b\\r\\nContent-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50\\r\\n\\r\\nAB\\r\\n--b--'
    >>> parse_multipart(body, 'multipart/related; type="image/jpeg"; boundary=b')
    [Frame(data=b'AB', transfer_syntax='1.2.840.10008.1.2.4.50')]
    """
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/") or match is None:
        raise ValueError(f"not a multipart answer (Content-Type {content_type!r})")
    default = _SYNTAX.search(content_type)
    delimiter = b"--" + match.group(1).encode("latin-1")
    frames: list[Frame] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header end")
        data = data.removesuffix(b"\r\n")
        syntax = _SYNTAX.search(head.decode("latin-1"))
        found = syntax or default
        frames.append(Frame(data, found.group(1) if found else None))
    return frames


class FrameFetcher:
    """Encoded frames of one series' instances, fetched in batches and cached.

    Parameters
    ----------
    session
        The server's session (its options give the batch size, concurrency and cache budget).
    study_uid
        The study; frames are asked for by instance path,
        ``<series uid>/instances/<instance uid>`` (see :meth:`get`).

    Attributes
    ----------
    requests
        Frame requests sent so far (for tests and diagnostics).
    """

    def __init__(self, session: DicomWebSession, study_uid: str) -> None:
        self._session = session
        self._prefix = f"/studies/{study_uid}/series/"
        opts = session.options
        self._batch = opts.frames_per_request
        self._cache: LRU[tuple[str, int], Frame] = LRU(
            max_bytes=opts.frame_cache_bytes, sizeof=lambda f: len(f.data)
        )
        self._pool = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="tilestream-dicomweb")
        self._lock = threading.Lock()
        self._fetching = threading.Lock()
        self.requests = 0

    def get(self, instance_uid: str, numbers: Iterable[int]) -> dict[int, Frame]:
        """Frames ``numbers`` (1-based) of an instance: cached ones, the others fetched in batches.

        ``instance_uid`` is the instance's path in the study, ``<series uid>/instances/<uid>``.
        """
        wanted = sorted(set(numbers))
        found: dict[int, Frame] = {}
        missing: list[int] = []
        for number in wanted:
            frame = self._cache.get((instance_uid, number))
            if frame is None:
                missing.append(number)
            else:
                found[number] = frame
        if missing:
            # One fetch at a time per slide: threads reading neighbouring tiles wait for
            # the row another thread is fetching instead of fetching it again.
            with self._fetching:
                still = []
                for number in missing:
                    frame = self._cache.peek((instance_uid, number))
                    if frame is None:
                        still.append(number)
                    else:
                        found[number] = frame
                found.update(self._fetch_batches(instance_uid, still))
        return found

    def _fetch_batches(self, instance_uid: str, numbers: list[int]) -> dict[int, Frame]:
        if not numbers:
            return {}
        batches = [numbers[i : i + self._batch] for i in range(0, len(numbers), self._batch)]
        if len(batches) == 1:
            results = [self._fetch(instance_uid, batches[0])]
        else:
            results = list(self._pool.map(lambda b: self._fetch(instance_uid, b), batches))
        found: dict[int, Frame] = {}
        for batch, frames in zip(batches, results, strict=True):
            for number, frame in zip(batch, frames, strict=True):
                found[number] = frame
        return found

    def cached(self, instance_uid: str, number: int) -> bool:
        """Whether a frame is in the cache."""
        return (instance_uid, number) in self._cache

    def _fetch(self, instance_uid: str, numbers: Sequence[int]) -> list[Frame]:
        what = f"frames {numbers[0]}..{numbers[-1]} of instance {instance_uid.rpartition('/')[2]}"
        path = self._prefix + instance_uid + "/frames/" + ",".join(map(str, numbers))
        with self._lock:
            self.requests += 1
        response = self._session.get(path, accept=ACCEPT_AS_STORED, what=what)
        try:
            frames = parse_multipart(response.content, response.headers.get("Content-Type", ""))
        except ValueError as exc:
            raise RemoteSlideError(
                f"the server does not speak DICOMweb: {what}: {exc}", path=self._session.url.url
            ) from None
        if len(frames) != len(numbers):
            raise RemoteSlideError(
                f"asked for {len(numbers)} {what}, the server sent {len(frames)}",
                path=self._session.url.url,
            )
        for number, frame in zip(numbers, frames, strict=True):
            self._cache.put((instance_uid, number), frame)
        logger.debug("fetched %d frames of %s", len(numbers), instance_uid)
        return frames

    def drop(self, instance_uid: str, number: int) -> None:
        """Forget a cached frame (one that failed to decode is fetched again next time)."""
        self._cache.pop((instance_uid, number))

    def cache_info(self) -> dict[str, int]:
        """Cache statistics and the number of frame requests sent."""
        return {
            "frames": len(self._cache),
            "bytes": self._cache.nbytes,
            "hits": self._cache.hits,
            "misses": self._cache.misses,
            "requests": self.requests,
        }

    def close(self) -> None:
        """Stop the worker threads and drop the cache."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()
