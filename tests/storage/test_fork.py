"""A store used before a fork keeps working in the parent and in the forked children.

DataLoader workers are forked on Linux: each must make its own connections, and
the parent's pooled connections must survive the children's exit (their epoll
registrations are shared with the children by the kernel).
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

from tilestream.storage import Store, store_for
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.timeout(120)


def _child_reads(store: Store, key: str, expected: bytes) -> None:
    data = store.read_range(key, 0, len(expected))
    os._exit(0 if data == expected else 3)


def test_parent_and_forked_children_read_through_one_store(seaweed: SeaweedServer) -> None:
    bucket = seaweed.make_bucket("forks")
    store, key = store_for(f"s3://{bucket}/a.bin", seaweed.storage_options)
    payload = os.urandom(1 << 20)
    store.write_atomic(key, payload)
    assert store.read_range(key, 0, 4096) == payload[:4096]  # a pooled connection now
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        children = [ctx.Process(target=_child_reads, args=(store, key, payload)) for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
            assert child.exitcode == 0, (round_, child.exitcode)
        # the parent's next requests, on its pooled connections, still get answers
        assert store.read_range(key, 1000, 10) == payload[1000:1010]
        store.write_atomic(f"after-{round_}.bin", b"x")
        assert store.read(f"after-{round_}.bin") == b"x"
