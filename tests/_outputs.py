"""Comparing two extraction output folders (shared by the extraction and cluster tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Files whose content carries timings, compared separately or not at all.
VOLATILE_FILES = ("summary.json", "report.html")


def comparable_state(path: Path) -> dict[str, object]:
    """A slide's state without its timings."""
    state = json.loads(path.read_text())
    for volatile in ("seconds", "timings"):
        state.pop(volatile, None)
    return state


def assert_same_outputs(a: Path, b: Path) -> None:
    """The two folders hold the same files with the same content (timings aside)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        pa, pb = a / rel, b / rel
        if rel.name in VOLATILE_FILES:
            continue
        if rel.parent.name == "state" and rel.suffix == ".json":
            assert comparable_state(pa) == comparable_state(pb), rel
        elif rel.suffix == ".npz":
            za, zb = np.load(pa), np.load(pb)
            assert sorted(za.files) == sorted(zb.files)
            for key in ("arr_0", "locations"):  # the index proper; the rest is file metadata
                assert np.array_equal(za[key], zb[key]), (rel, key)
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel
