"""Runs that must not interfere with each other, lose work, or write where they must not."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilestream._util.atomic import atomic_path
from tilestream._util.names import name_problem, outside
from tilestream.errors import ConfigError, ExtractionError
from tilestream.extract import ExtractConfig, extract_slides, extract_tiles
from tilestream.extract.engine import SlideTask, _remove_stale_temp_files, extract_slide_task
from tilestream.extract.run import run_slide_task
from tilestream.extract.sources import check_slide_name
from tilestream.runfolder import slide_outputs
from tilestream.testing.synthetic import make_synthetic_slide


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


# --- item 14: slide names are file names, never paths ------------------------------------


def _csv(tmp_path: Path, slide: Path, names: list[str]) -> Path:
    listing = tmp_path / "lists" / "slides.csv"
    listing.parent.mkdir(exist_ok=True)
    with open(listing, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["slide", "name"])
        writer.writerows([str(slide), n] for n in names)
    return listing


def _files_outside(root: Path, tmp_path: Path) -> list[Path]:
    return [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and root not in p.parents and p.parent.name != "lists"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "../../escape",
        "{tmp}/where/x",
        "..\\..\\escape",
        "a..b",
        ".hidden",
        "x\x00y",
        "x\ny",
        "e\u202ex",
    ],
)
def test_csv_names_that_are_paths_are_refused(cmu_slide: Path, tmp_path: Path, name: str) -> None:
    name = name.replace("{tmp}", str(tmp_path))
    listing = _csv(tmp_path, cmu_slide, ["fine", name])
    out = tmp_path / "deep" / "out"
    with pytest.raises(ConfigError) as info:
        extract_slides([listing], out, tile_px=64, tile_um=256, workers=1)
    message = str(info.value)
    assert str(listing) in message and "line 3" in message and repr(name) in message
    assert _files_outside(out, tmp_path) == []


def test_absolute_name_writes_nothing_there(cmu_slide: Path, tmp_path: Path) -> None:
    """The report's case: an absolute name wrote .tfrecords/.json/.jpg/.csv files there."""
    target = tmp_path / "elsewhere" / "x"
    target.parent.mkdir()
    with pytest.raises(ConfigError, match="path separator"):
        extract_slides(
            [_csv(tmp_path, cmu_slide, [str(target)])], tmp_path / "out", tile_px=64, tile_um=256
        )
    with pytest.raises(ConfigError, match="path separator"):
        extract_tiles(cmu_slide, tmp_path / "out", tile_px=64, tile_um=256, name=str(target))
    with pytest.raises(ConfigError, match="path separator"):
        extract_slides(
            [SlideTask(str(cmu_slide), "../x")], tmp_path / "out", tile_px=64, tile_um=256
        )
    assert list(target.parent.iterdir()) == []


def test_names_differing_only_by_case_are_refused(cmu_slide: Path, tmp_path: Path) -> None:
    listing = _csv(tmp_path, cmu_slide, ["Slide-1", "other", "slide-1"])
    with pytest.raises(ConfigError) as info:
        extract_slides([listing], tmp_path / "out", tile_px=64, tile_um=256)
    message = str(info.value)
    assert "'Slide-1'" in message and "'slide-1'" in message and "case" in message
    assert f"{listing}: line 2" in message and f"{listing}: line 4" in message


def test_engine_refuses_a_task_made_by_hand(cmu_slide: Path, tmp_path: Path) -> None:
    """Tasks built without discover_slides (by hand, on a cluster) are checked by the engine too."""
    run = tmp_path / "out" / "run"
    config = ExtractConfig(tile_px=64, tile_um=256)
    for name in ("../../escape", str(tmp_path / "abs" / "x"), "ok\x01"):
        with pytest.raises(ExtractionError, match="refusing to write"):
            extract_slide_task(SlideTask(str(cmu_slide), name), run, config)
        result = run_slide_task(SlideTask(str(cmu_slide), name), str(run), config)
        assert result.status == "failed"
    (tmp_path / "outside").mkdir()
    run.mkdir(parents=True, exist_ok=True)
    (run / "state").symlink_to(tmp_path / "outside")  # a folder of the run that leads elsewhere
    with pytest.raises(ExtractionError, match="outside the run folder"):
        extract_slide_task(SlideTask(str(cmu_slide), "fine"), run, config)
    assert _files_outside(tmp_path / "out", tmp_path) == []


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=0, max_size=40))
def test_accepted_names_stay_inside_the_run_folder(name: str) -> None:
    run = Path("/data/out/128px_128um")
    if name_problem(name) is None:
        for to_images in (False, True):
            paths = slide_outputs(run, name, to_images=to_images).values()
            assert outside(run, paths) is None
            assert all(p.parent in (run, run / "state", run / "previews") for p in paths)
    else:
        with pytest.raises(ConfigError, match="slide name"):
            check_slide_name(name, "here")


@pytest.mark.parametrize("mpp", ["-1", "0", "nan", "inf"])
def test_csv_mpp_must_be_positive(cmu_slide: Path, tmp_path: Path, mpp: str) -> None:
    """A bad value in a slide list is the list's error, not a failing slide (nor a bug)."""
    listing = tmp_path / "slides.csv"
    listing.write_text(f"slide,mpp\n{cmu_slide},{mpp}\n")
    with pytest.raises(ConfigError, match=f"{listing}: line 2: mpp must be a positive number"):
        extract_slides([listing], tmp_path / "out", tile_px=64, tile_um=256)


@pytest.mark.slow
def test_slides_whose_names_prefix_each_other_extract_in_parallel(tmp_path: Path) -> None:
    """Item 10 end to end: slide ``p1`` starts while ``p1.slideA`` writes; nothing is lost.

    Two workers: one extracts the large ``p1.slideA`` while the other does
    small slides, so that ``p1`` starts (and cleans its own leftovers) while
    ``p1.slideA``'s files are in progress (it failed 2 of 2 times before).
    """
    big, small = tmp_path / "big.svs", tmp_path / "small.svs"
    make_synthetic_slide(big, width=4000, height=4000, seed=1)
    make_synthetic_slide(small, width=1024, height=1024, seed=2)
    tasks = [SlideTask(str(big), "p1.slideA")]
    tasks += [SlideTask(str(small), n) for n in ("s0", "s1", "s2", "p1")]
    run = extract_slides(
        tasks, tmp_path / "out", tile_px=64, tile_um=32, stride_div=4, workers=2, threads=1
    )
    assert [r.error for r in run.failed] == [] and run.done == 5
    assert not list((tmp_path / "out").rglob("*.tmp"))
