"""Temporary files of atomic writes: their names tell exactly which final file they belong to."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tilestream._util.atomic import atomic_path, is_temp_file, remove_temp_files, temp_target

# Glob and regex metacharacters, dots and dashes: names that are prefixes of each
# other and names that are globs matching each other.
NAMES = st.text(alphabet="ab1.*?[]!-_ ", min_size=1, max_size=12).filter(
    lambda s: s not in {".", ".."}
)


@contextlib.contextmanager
def _interrupted_writes(folder: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """Start a real atomic write of each name and leave it in progress."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(atomic_path(folder / n)) for n in names}
        stack.pop_all()  # never commit them


@settings(max_examples=150, deadline=None)
@given(names=st.lists(NAMES, min_size=1, max_size=6, unique=True), data=st.data())
def test_remove_temp_files_matches_exactly_one_name(names: list[str], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(names))
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for n in names:
            (folder / n).write_bytes(b"final")
        with _interrupted_writes(folder, names) as temps:
            for n, tmp in temps.items():
                assert tmp.exists() and is_temp_file(tmp) and temp_target(tmp) == n
            assert remove_temp_files(folder, target) == 1
            for n, tmp in temps.items():
                assert tmp.exists() == (n != target), (n, target)
                assert (folder / n).read_bytes() == b"final"


def test_prefix_and_glob_names_keep_each_others_temp_files(tmp_path: Path) -> None:
    """The cases of the report: ``p1`` vs ``p1.slideA``, ``a*`` vs ``a[1]``."""
    names = ["p1.tfrecords", "p1.slideA.tfrecords", "a*.json", "a[1].json"]
    with _interrupted_writes(tmp_path, names) as temps:
        remove_temp_files(tmp_path, "p1.tfrecords")
        remove_temp_files(tmp_path, "a*.json")
        assert not temps["p1.tfrecords"].exists() and not temps["a*.json"].exists()
        assert temps["p1.slideA.tfrecords"].exists() and temps["a[1].json"].exists()
        assert remove_temp_files(tmp_path, "a[1].json") == 1  # a glob name's own leftovers go
        assert not temps["a[1].json"].exists()


def test_leftovers_of_earlier_versions_are_recognised(tmp_path: Path) -> None:
    """``tempfile.mkstemp`` tokens (8 of [a-z0-9_]) from earlier versions are cleaned too."""
    old = tmp_path / ".s1.tfrecords.k2_x9abc.tmp"
    other = tmp_path / ".s1.tfrecords.x.k2_x9abc.tmp"
    old.write_bytes(b"")
    other.write_bytes(b"")
    assert remove_temp_files(tmp_path, {"s1.tfrecords"}) == 1
    assert not old.exists() and other.exists()


def test_predicate_and_missing_folder(tmp_path: Path) -> None:
    with _interrupted_writes(tmp_path, ["x_1_2.jpg", "y_1_2.jpg"]) as temps:
        assert remove_temp_files(tmp_path, lambda n: n.startswith("x_")) == 1
        assert temps["y_1_2.jpg"].exists()
    assert remove_temp_files(tmp_path / "absent", "a") == 0


def test_temp_file_permissions_follow_umask(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    os.umask(mask)
    with atomic_path(tmp_path / "f") as tmp:
        mode = os.stat(tmp).st_mode & 0o777
    assert mode == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
