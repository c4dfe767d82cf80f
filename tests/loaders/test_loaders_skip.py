"""``on_error="skip"`` skips bad files and records, records them, and reports them.

Real TFRecords of real JPEG tiles, damaged on disk the ways files are damaged:
one flipped byte in the middle (bit rot), a flipped byte in the first record,
a file cut short (an interrupted copy). The skip count is read in the main
process after real DataLoader workers (fork and spawn) did the skipping. Each test
runs once per ``storage`` kind (``local``; ``s3`` and ``http`` read the same damaged files
from SeaweedFS).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilestream.errors import CorruptRecordError, EmptyTFRecordsError

pytestmark = pytest.mark.torch

SPEC = [("good", 4), ("mid", 5), ("first", 4), ("cut", 6)]


def _flip(path: str, record: int, into: int = 40) -> None:
    """Flip one payload byte of ``record``, keeping the mtime (the index stays valid)."""
    from tilestream.tfrecord import load_index

    offset = int(load_index(path).offsets[record])
    stat = os.stat(path)
    data = bytearray(Path(path).read_bytes())
    data[offset + 12 + into] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def damaged(storage, write_tfrecords) -> dict[str, str]:
    """The damaged files, placed in ``storage`` (after the damage)."""
    paths = dict(zip([s for s, _ in SPEC], write_tfrecords(SPEC), strict=True))
    _flip(paths["mid"], 2)
    _flip(paths["first"], 0)
    cut = Path(paths["cut"])
    cut.write_bytes(cut.read_bytes()[:-100])  # ends inside its last record
    return {name: storage.name(path) for name, path in paths.items()}


def _expected() -> list[tuple[str, int]]:
    keep = {"good": range(4), "mid": (0, 1, 3, 4), "first": (1, 2, 3)}
    return sorted((s, j) for s, js in keep.items() for j in js)


def _ids(loader) -> list[tuple[str, int]]:
    out = []
    for batch in loader:
        out += list(zip(batch["slide"], batch["loc_x"].tolist(), strict=True))
    return sorted(out)


def test_raise_names_the_bad_file_at_construction(storage, torch, damaged):
    from tilestream.torch import TileDataset

    with pytest.raises(CorruptRecordError) as info:
        TileDataset(list(damaged.values()), **storage.kw)
    assert info.value.path in (damaged["first"], damaged["cut"])


def test_skip_constructs_records_the_bad_file_and_counts_in_the_main_process(
    storage, torch, damaged, caplog
):
    from tilestream.torch import TileDataset

    with caplog.at_level(logging.WARNING):
        ds = TileDataset(
            list(damaged.values()), as_dict=True, on_error="skip", seed=1, **storage.kw
        )
    assert list(ds.skipped_files) == [damaged["cut"]]
    assert "ends" in ds.skipped_files[damaged["cut"]] or "trunc" in ds.skipped_files[damaged["cut"]]
    assert damaged["cut"] in caplog.text
    assert ds.tfrecords == [damaged["good"], damaged["mid"], damaged["first"]]
    assert ds.skipped == 0
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    assert _ids(loader) == _expected()
    assert ds.skipped == 2  # record 2 of "mid", record 0 of "first", skipped in workers
    ds.set_epoch(1)
    assert _ids(loader) == _expected()
    assert ds.skipped == 4  # a running total over epochs
    assert _ids(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)) == _expected()
    assert ds.skipped == 6


def test_skip_count_reaches_the_main_process_from_spawned_workers(storage, torch, damaged):
    from tilestream.torch import TileDataset

    ds = TileDataset(
        list(damaged.values()), as_dict=True, on_error="skip", batch_size=2, **storage.kw
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    assert _ids(loader) == _expected()
    assert ds.skipped == 2


def test_a_file_with_no_readable_record_is_skipped(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    good, bad = write_tfrecords([("good", 2), ("bad", 2)])
    _flip(bad, 0)
    _flip(bad, 1)
    good, bad = storage.put([good, bad])
    ds = TileDataset([good, bad], as_dict=True, on_error="skip", **storage.kw)
    assert list(ds.skipped_files) == [bad]
    assert "no readable record" in ds.skipped_files[bad]
    assert sorted((e["slide"], e["loc_x"]) for e in ds) == [("good", 0), ("good", 1)]


def test_skip_with_every_file_bad_is_a_clear_error(storage, torch, write_tfrecords):
    from tilestream.torch import TileDataset

    (cut,) = write_tfrecords([("cut", 3)])
    Path(cut).write_bytes(Path(cut).read_bytes()[:-7])
    cut = storage.name(cut)
    with pytest.raises(EmptyTFRecordsError, match="no TFRecord left") as info:
        TileDataset([cut], on_error="skip", **storage.kw)
    assert cut in str(info.value)


_FILES = st.lists(
    st.tuples(
        st.integers(1, 6),  # records
        st.sets(st.integers(0, 5), max_size=6),  # records with a flipped payload byte
        st.booleans(),  # cut short inside the last record
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    # ``storage`` only names where files go: nothing of one example stays for the next.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=_FILES)
def test_skip_reads_exactly_the_intact_records_and_counts_the_rest(
    storage, torch, real_tiles, files
):
    import tempfile

    from tilestream.tfrecord import TFRecordWriter, serialized_record
    from tilestream.torch import TileDataset

    with tempfile.TemporaryDirectory() as tmp:
        paths, want, want_skipped, want_files = [], set(), 0, set()
        for f, (n, bad, cut) in enumerate(files):
            path = os.path.join(tmp, f"s{f}.tfrecords")
            with TFRecordWriter(path) as w:
                for j in range(n):
                    w.write(serialized_record(f"s{f}", real_tiles[j], j, 0), location=(j, 0))
            bad = {j for j in bad if j < n}
            for j in bad:
                _flip(path, j)
            if cut:
                Path(path).write_bytes(Path(path).read_bytes()[:-5])
            path = storage.name(path)
            paths.append(path)
            intact = [j for j in range(n) if j not in bad and not (cut and j == n - 1)]
            if cut or not intact:
                want_files.add(path)  # a file cut short, or with no readable record
            else:
                want |= {(f"s{f}", j) for j in intact}
                want_skipped += len(bad)
        if not want:
            with pytest.raises(EmptyTFRecordsError, match="no TFRecord left"):
                TileDataset(paths, on_error="skip", **storage.kw)
            return
        ds = TileDataset(paths, as_dict=True, on_error="skip", seed=0, **storage.kw)
        got = [(e["slide"], e["loc_x"]) for e in ds]
        assert sorted(got) == sorted(want)
        assert set(ds.skipped_files) == want_files
        assert ds.skipped == want_skipped


def test_an_index_that_does_not_fit_its_file_is_skipped_or_raised(storage, torch, write_tfrecords):
    import numpy as np

    from tilestream.errors import InvalidTFRecordIndex
    from tilestream.torch import TileDataset

    good, other = storage.put(write_tfrecords([("good", 2), ("other", 3)]))
    wrong = np.array([0, 50, 10**9])  # points past the end of the file
    with pytest.raises(InvalidTFRecordIndex, match="past the end"):
        TileDataset([good, other], indices=[None, wrong], **storage.kw)
    ds = TileDataset(
        [good, other], indices=[None, wrong], as_dict=True, on_error="skip", **storage.kw
    )
    assert list(ds.skipped_files) == [other] and "past the end" in ds.skipped_files[other]
    assert sorted(e["loc_x"] for e in ds) == [0, 1]
