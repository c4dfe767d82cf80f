"""One run per run folder in an object store: a lease claimed with a conditional write.

A local run folder is held with a file lock (:mod:`tilestream._util.lock`);
an object store has no locks, so a run writing to ``s3://bucket/prefix/<label>/``
claims it with a **lease**: a small JSON object ``<run>/.lease/<generation>``
created with :meth:`Store.put_if_absent <tilestream.storage.Store.put_if_absent>`
(a PUT with ``If-None-Match: *``: of two runs racing for one key exactly one
gets it). The lease names its holder (a random id, host, process id) and an
expiry; a heartbeat thread rewrites it every ``ttl / 4`` seconds with a later
expiry, and the run marks it released when it ends.

A run that finds the newest generation held and not expired stops with an
:class:`~tilestream.errors.ExtractionError` naming the run folder and the
holder. One that finds it released, or expired (its holder was killed, or
lost the network for longer than the ``ttl``), takes the folder over by
creating the **next** generation with ``put_if_absent``: two runs taking over
at once race for the same key, and exactly one wins. The expiry is the
holder's wall-clock time; clocks must agree to well within the ``ttl``
(default 120 s).

A holder whose heartbeat finds a newer generation (it was taken over after
stalling past its expiry) has lost the folder: :meth:`Lease.check` raises,
and the driver calls it before each run-level write (manifest, summary,
config). Slide tasks already running keep writing their own slides' outputs,
each of which is whole (see :mod:`tilestream.extract.publish`).

On a store without conditional writes (S3 and GCS have them; other fsspec
filesystems: ``supports_conditional_write`` is false) no lease can be exclusive: the run
is refused unless ``force=True``, which writes the lease unconditionally and
reads it back, and only detects (not prevents) a second run that starts at
the same moment.

Examples
--------
>>> import tempfile
>>> from tilestream.storage import LocalStore
>>> store = LocalStore(tempfile.mkdtemp())
>>> with Lease.acquire(store, "out/256px_128um", ttl=60) as lease:
...     lease.key
'out/256px_128um/.lease/0'
>>> Lease.acquire(store, "out/256px_128um", ttl=60).key  # released: the next generation
'out/256px_128um/.lease/1'
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from tilestream.errors import ExtractionError, StorageError, StorageNotFoundError
from tilestream.runfolder import LEASE_DIR
from tilestream.storage import Store

__all__ = ["DEFAULT_TTL", "Lease", "lease_generations"]

log = logging.getLogger(__name__)

#: Seconds a lease lasts without a heartbeat.
DEFAULT_TTL = 120.0


def lease_generations(store: Store, run: str) -> list[int]:
    """The generations of the lease objects of run folder ``run``, ascending."""
    folder = f"{run}/{LEASE_DIR}"
    names = (key[len(folder) + 1 :] for key in store.list(folder))
    return sorted(int(n) for n in names if n.isdigit())


def _key(run: str, generation: int) -> str:
    return f"{run}/{LEASE_DIR}/{generation}"


def _read(store: Store, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(store.read(key))
    except StorageNotFoundError:
        return None
    except ValueError:  # unreadable: treat as a holder that never renewed (expired)
        return {"expires": 0.0}
    return data if isinstance(data, dict) else {"expires": 0.0}


class Lease:
    """A held lease on a run folder in a store (see the module doc).

    Use :meth:`acquire`; the lease is released by :meth:`release` or by leaving
    its ``with`` block.
    """

    def __init__(self, store: Store, run: str, generation: int, *, ttl: float) -> None:
        self.store = store
        self.run = run
        self.generation = generation
        self.ttl = ttl
        self.holder = {
            "id": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
        }
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        """The key of the lease object this run holds."""
        return _key(self.run, self.generation)

    def _body(self, *, released: bool = False) -> bytes:
        record = {**self.holder, "expires": time.time() + self.ttl, "released": released}
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def acquire(
        cls, store: Store, run: str, *, ttl: float = DEFAULT_TTL, force: bool = False
    ) -> Lease:
        """Claim run folder ``run`` (a key) in ``store``, or raise ``ExtractionError``.

        Raises
        ------
        ExtractionError
            When another run holds the folder (naming it and its holder), when
            two runs raced and the other won, or when the store has no
            conditional writes and ``force`` is false.
        """
        where = store.url_of(run)
        if not store.supports_conditional_write and not force:
            raise ExtractionError(
                "this store has no conditional writes, so two runs writing the same run folder "
                "cannot be kept apart; make sure only one run writes it and pass force_lease=True "
                "(--force-lease)",
                path=where,
            )
        generations = lease_generations(store, run)
        nxt = 0
        if generations:
            newest = generations[-1]
            record = _read(store, _key(run, newest))
            if (
                record is not None
                and not record.get("released")
                and (float(record.get("expires", 0.0)) > time.time())
            ):
                raise ExtractionError(
                    f"another run holds this run folder (holder {record.get('id')} on host "
                    f"{record.get('host')}, pid {record.get('pid')}; its lease expires in "
                    f"{float(record.get('expires', 0.0)) - time.time():.0f} s unless renewed)",
                    path=where,
                )
            if record is not None and not record.get("released"):
                log.warning(
                    "%s: taking over the run folder from %s on %s (its lease expired)",
                    where, record.get("id"), record.get("host"),
                )  # fmt: skip
            nxt = newest + 1
        lease = cls(store, run, nxt, ttl=ttl)
        lease._claim(force=force and not store.supports_conditional_write)
        lease._start_heartbeat()
        lease._remove_old(generations)
        return lease

    def _claim(self, *, force: bool) -> None:
        body = self._body()
        if force:
            log.warning(
                "%s: the store has no conditional writes; the lease is not exclusive",
                self.store.url_of(self.run),
            )
            self.store.write_atomic(self.key, body)
            won = _read(self.store, self.key) == json.loads(body)
        else:
            won = self.store.put_if_absent(self.key, body)
        if not won:
            record = _read(self.store, self.key) or {}
            raise ExtractionError(
                f"another run claimed this run folder at the same moment (holder "
                f"{record.get('id')} on host {record.get('host')}, pid {record.get('pid')})",
                path=self.store.url_of(self.run),
            )

    def _remove_old(self, generations: list[int]) -> None:
        for g in generations:  # the leases this one replaces: tidiness only
            try:
                self.store.delete(_key(self.run, g))
            except StorageError as exc:
                log.info("cannot remove old lease generation %d: %s", g, exc)

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="tilestream-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if self.store.exists(_key(self.run, self.generation + 1)):
                    self.lost = "another run took the run folder over after this lease expired"
                    log.error("%s: %s", self.store.url_of(self.run), self.lost)
                    return
                self.store.write_atomic(self.key, self._body())
            except StorageError as exc:  # retried at the next beat; expiry leaves slack
                log.warning("%s: cannot renew the lease: %s", self.store.url_of(self.run), exc)

    def check(self) -> None:
        """Raise ``ExtractionError`` when this run has lost the folder to another."""
        if self.lost is not None:
            raise ExtractionError(self.lost, path=self.store.url_of(self.run))

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (the next run takes the next generation)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.lost is None:
            try:
                self.store.write_atomic(self.key, self._body(released=True))
            except StorageError as exc:
                log.warning(
                    "%s: cannot release the lease (it expires in %.0f s): %s",
                    self.store.url_of(self.run), self.ttl, exc,
                )  # fmt: skip

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
