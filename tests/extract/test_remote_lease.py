"""One run per run folder in a real S3 server (SeaweedFS): the lease, its expiry and takeover."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tilestream.errors import ExtractionError
from tilestream.extract import RunProgress, extract_slides
from tilestream.extract.lease import Lease, lease_generations
from tilestream.storage import Store
from tilestream.testing.seaweedfs import SeaweedServer

BUCKET = "rextract-lease"  # the module's bucket (tests/conftest.py: bucket, store)

_n = itertools.count()


@pytest.fixture
def run_key() -> str:
    return f"t{os.getpid()}-{next(_n)}/128px_256um"


def _race(store: Store, run: str, n: int) -> tuple[list[Lease], list[Exception]]:
    """``n`` threads acquire the lease at the same moment."""
    barrier = threading.Barrier(n)
    won: list[Lease] = []
    lost: list[Exception] = []

    def take() -> None:
        barrier.wait()
        try:
            won.append(Lease.acquire(store, run, ttl=30))
        except ExtractionError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


def test_exactly_one_of_racing_runs_gets_the_folder(store: Store, run_key: str) -> None:
    won, lost = _race(store, run_key, 6)
    assert len(won) == 1 and len(lost) == 5
    holder = won[0].holder["id"]
    for exc in lost:
        assert store.url_of(run_key) in str(exc)
        assert "another run" in str(exc)
    # the losers that read the lease name its holder
    assert any(holder in str(exc) for exc in lost)
    won[0].release()
    assert lease_generations(store, run_key) == [0]


def test_expired_lease_is_taken_over_by_exactly_one(store: Store, run_key: str) -> None:
    dead = {"id": "dead", "host": "gone", "pid": 1, "expires": time.time() - 1, "released": False}
    store.write_atomic(f"{run_key}/.lease/0", json.dumps(dead).encode())
    won, lost = _race(store, run_key, 4)
    assert len(won) == 1 and len(lost) == 3
    assert won[0].generation == 1
    won[0].release()
    assert lease_generations(store, run_key) == [1]  # the replaced generation is removed


def test_heartbeat_renews_and_detects_a_takeover(store: Store, run_key: str) -> None:
    lease = Lease.acquire(store, run_key, ttl=0.6)
    try:
        time.sleep(1.5)  # beyond the ttl: renewed by the heartbeat, still held
        with pytest.raises(ExtractionError, match="another run holds"):
            Lease.acquire(store, run_key, ttl=0.6)
        lease.check()
        # a run that took over after an expiry (simulated: the next generation appears)
        store.write_atomic(f"{run_key}/.lease/1", b"{}")
        time.sleep(0.6)
        with pytest.raises(ExtractionError, match="took the run folder over"):
            lease.check()
    finally:
        lease.release()


def test_store_without_conditional_writes_needs_force(store: Store, run_key: str) -> None:
    store.supports_conditional_write = False  # as on an fsspec store without them
    with pytest.raises(ExtractionError, match=r"no conditional writes.*force"):
        Lease.acquire(store, run_key)
    with Lease.acquire(store, run_key, force=True) as lease:
        assert json.loads(store.read(lease.key))["id"] == lease.holder["id"]


def test_second_extraction_on_the_same_prefix_is_refused(
    seaweed: SeaweedServer, bucket: str, slides_dir: Path
) -> None:
    prefix = f"s3://{bucket}/t{os.getpid()}-{next(_n)}"
    slide = slides_dir / "CMU-1-Small-Region.svs"
    opts = seaweed.storage_options
    started, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def hold(p: RunProgress) -> None:
        started.set()
        release.wait(60)

    def first() -> None:
        run = extract_slides([slide], prefix, workers=1, storage_options=opts, progress=hold,
                             tile_px=128, tile_um=256)  # fmt: skip
        outcome.append(run)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(60)
        with pytest.raises(ExtractionError) as info:
            extract_slides([slide], prefix, workers=1, storage_options=opts, tile_px=128,
                           tile_um=256)  # fmt: skip
    finally:
        release.set()
        t.join()
    message = str(info.value)
    assert f"{prefix}/128px_256um" in message and "another run holds" in message
    assert f"pid {os.getpid()}" in message
    assert seaweed.secret_key not in message
    assert len(outcome) == 1
    # released at the end: the next run proceeds (and skips the complete slide)
    again = extract_slides([slide], prefix, workers=1, storage_options=opts, tile_px=128,
                           tile_um=256)  # fmt: skip
    assert again.skipped == 1
