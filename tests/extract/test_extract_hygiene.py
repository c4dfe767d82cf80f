"""Runs that must not interfere with each other, lose work, or write where they must not."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tilestream._util.atomic import atomic_path
from tilestream.extract.engine import _remove_stale_temp_files
from tilestream.runfolder import slide_outputs


def test_starting_a_slide_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    """Item 10: slide ``p1`` must not delete ``p1.slideA``'s in-progress files, ``a*`` not ``a[1]``'s."""
    run = tmp_path
    for sub in ("state", "previews", "p1"):
        (run / sub).mkdir()
    names = ["p1", "p1.slideA", "a*", "a[1]"]
    with contextlib.ExitStack() as stack:
        temps = {
            (n, kind): stack.enter_context(atomic_path(path))
            for n in names
            for kind, path in slide_outputs(run, n).items()
        }
        temps["p1", "tile"] = stack.enter_context(atomic_path(run / "p1" / "p1_10_20.jpg"))
        _remove_stale_temp_files(run, "p1")
        _remove_stale_temp_files(run, "a*")
        for (n, kind), tmp in temps.items():
            assert tmp.exists() == (n not in ("p1", "a*")), (n, kind)
        _remove_stale_temp_files(run, "a[1]")
        assert not any(tmp.exists() for (n, _), tmp in temps.items() if n == "a[1]")
        assert all(tmp.exists() for (n, _), tmp in temps.items() if n == "p1.slideA")
        stack.pop_all()
