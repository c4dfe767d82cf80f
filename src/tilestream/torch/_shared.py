"""Shared memory for the PyTorch datasets: batch buffers and the skip counter.

Both are made so that DataLoader workers, forked or spawned, write memory the
main process reads, with no copy and no manager process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilestream._util.optional import require

torch = require("torch", extra="torch", purpose="tilestream.torch datasets")

__all__ = ["SkipCounter", "shared_uint8"]

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14
_madvise: Any = None


def _populate(t: Any) -> None:
    """Fault in a fresh buffer's pages in one system call (much cheaper than page by page)."""
    global _madvise
    if _madvise is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError, TypeError):  # no libc madvise (e.g. Windows)
            _madvise = False
    if _madvise:
        ptr = t.data_ptr()
        start = ptr & ~4095
        if _madvise(start, t.numel() * t.element_size() + (ptr - start), _MADV_POPULATE_WRITE):
            _madvise = False  # not supported here: let pages fault in as written


def shared_uint8(shape: tuple[int, ...]) -> Any:
    """A uint8 tensor allocated directly in shared memory (no copy into it later)."""
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is None:  # pragma: no cover - older or future torch
        return torch.empty(shape, dtype=torch.uint8).share_memory_()
    nbytes = int(np.prod(shape))
    t = torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes)).view(shape)
    _populate(t)
    return t


class SkipCounter:
    """Records skipped by every copy of a dataset: this process and its DataLoader workers.

    One int64 slot per process in a shared-memory tensor made in the parent:
    forked and spawned workers each add to their own slot (no update is lost
    between processes), and the parent sums them. Workers past the 255th share
    slots, where two skips at the same instant may count once.
    """

    SLOTS = 256

    def __init__(self) -> None:
        self.counts = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()

    def __call__(self, error: Exception) -> None:
        info = torch.utils.data.get_worker_info()
        slot = 0 if info is None else 1 + info.id % (self.SLOTS - 1)
        self.counts[slot] += 1

    @property
    def total(self) -> int:
        return int(self.counts.sum().item())
