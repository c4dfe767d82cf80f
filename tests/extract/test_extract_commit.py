"""A slide's outputs are one unit: no interruption mixes configs, and stale slides are named.

The kill test SIGKILLs a re-extraction under another config right after each
of its commit steps (every ``os.replace`` the run makes), then resumes under
the first config and checks the folder against clean runs of both configs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _outputs import assert_same_outputs
from _remote import Remote, storage_kinds
from tilestream.extract import ExtractConfig, extract_slides
from tilestream.runfolder import slide_staleness, stale_slides
from tilestream.testing.synthetic import make_synthetic_slide
from tilestream.tfrecord import iter_records, load_index

NAME = "CMU-1-Small-Region"
LABEL = "128px_128um"
CONFIG_A: dict[str, Any] = {"tile_px": 128, "tile_um": 128}
#: Same grid and selection, other encoding: only the TFRecord's bytes differ from A's.
CONFIG_B: dict[str, Any] = {**CONFIG_A, "quality": 60}
#: Rejects every tile: the slide fails under it.
CONFIG_FAILS: dict[str, Any] = {**CONFIG_A, "whitespace_fraction": 0.0, "whitespace_threshold": 0}

# Runs extract_slides with os.replace (every commit step) wrapped: each call is
# logged and the process SIGKILLs itself right after the call numbered argv[1].
_BOOTSTRAP = textwrap.dedent(
    """
    import json, os, signal, sys
    kill_after, log = int(sys.argv[1]), sys.argv[2]
    real_replace, calls = os.replace, [0]
    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        calls[0] += 1
        with open(log, "a") as f:
            f.write(os.fspath(dst) + "\\n")
        if calls[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from tilestream.extract import extract_slides
    extract_slides([sys.argv[3]], sys.argv[4], workers=1, threads=1, **json.loads(sys.argv[5]))
    """
)


def _run_killed(kill_after: int, log: Path, slide: Path, out: Path, config: dict[str, Any]) -> int:
    args = [str(kill_after), str(log), str(slide), str(out), json.dumps(config)]
    proc = subprocess.run(
        [sys.executable, "-c", _BOOTSTRAP, *args], capture_output=True, text=True, timeout=120
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr)
    return proc.returncode


def _extract(slide: Path, out: Path, config: dict[str, Any]) -> str:
    run = extract_slides([slide], out, workers=1, threads=1, **config)
    return run.results[0].status


def _coords_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_consistent(run: Path, refs: dict[str, Path]) -> None:
    """Whatever the folder calls current is one config's complete, matching outputs.

    ``refs`` maps a config hash to the run folder of a clean run under it.
    """
    manifest = json.loads((run / "manifest.json").read_text())
    current = slide_staleness(run, NAME) is None
    if f"{NAME}.tfrecords" in manifest:
        assert current, "the manifest lists a slide the run folder calls stale"
    if not current:
        return
    state = json.loads((run / "state" / f"{NAME}.json").read_text())
    ref = refs[state["config_hash"]]
    assert (run / f"{NAME}.tfrecords").read_bytes() == (ref / f"{NAME}.tfrecords").read_bytes()
    assert (run / f"{NAME}.coords.csv").read_bytes() == (ref / f"{NAME}.coords.csv").read_bytes()
    n = sum(1 for _ in iter_records(run / f"{NAME}.tfrecords"))
    assert n == state["tiles"] == len(_coords_rows(run / f"{NAME}.coords.csv"))
    assert len(load_index(run / f"{NAME}.tfrecords")) == n
    if f"{NAME}.tfrecords" in manifest:
        assert manifest[f"{NAME}.tfrecords"]["total"] == n


@pytest.mark.slow
def test_kill_after_every_commit_step_then_resume(cmu_slide: Path, tmp_path: Path) -> None:
    ref_a, ref_b = tmp_path / "ref_a", tmp_path / "ref_b"
    assert _extract(cmu_slide, ref_a, CONFIG_A) == "done"
    assert _extract(cmu_slide, ref_b, CONFIG_B) == "done"
    refs = {
        ExtractConfig(**CONFIG_A).hash(): ref_a / LABEL,
        ExtractConfig(**CONFIG_B).hash(): ref_b / LABEL,
    }
    probe, probe_log = tmp_path / "probe", tmp_path / "probe.log"
    shutil.copytree(ref_a, probe)
    assert _run_killed(0, probe_log, cmu_slide, probe, CONFIG_B) == 0
    steps = probe_log.read_text().splitlines()
    assert any(s.endswith(".tfrecords") for s in steps) and len(steps) >= 6, steps
    for n in range(1, len(steps) + 1):
        out = tmp_path / f"killed_{n}"
        shutil.copytree(ref_a, out)
        code = _run_killed(n, tmp_path / f"killed_{n}.log", cmu_slide, out, CONFIG_B)
        where = f"killed after step {n} ({Path(steps[n - 1]).name})"
        assert code == -signal.SIGKILL, where
        _assert_consistent(out / LABEL, refs)
        status = _extract(cmu_slide, out, CONFIG_A)
        assert_same_outputs(ref_a, out)
        # "already complete" exactly when the killed run had not begun replacing the slide
        began = any(Path(s).name == f"{NAME}.json" for s in steps[:n])
        assert (status == "skipped") == (not began), where


def test_failed_rerun_under_new_config_is_stale_and_kept(
    cmu_slide: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _extract(cmu_slide, tmp_path, CONFIG_A) == "done"
    run = tmp_path / LABEL
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert json.loads((run / "manifest.json").read_text())[f"{NAME}.tfrecords"]["total"] > 0
    with caplog.at_level(logging.WARNING, logger="tilestream.extract"):
        rerun = extract_slides([cmu_slide], tmp_path, workers=1, threads=1, **CONFIG_FAILS)
    assert rerun.results[0].status == "failed" and list(rerun.stale) == [NAME]
    assert any(NAME in r.getMessage() and "manifest" in r.getMessage() for r in caplog.records)
    for name in (f"{NAME}.tfrecords", f"{NAME}.index.npz", f"{NAME}.coords.csv"):
        assert (run / name).read_bytes() == before[name], f"{name} changed"  # nothing deleted
    assert json.loads((run / "manifest.json").read_text()) == {}
    stale = stale_slides(run)
    assert set(stale) == {NAME} and "no tile passed the filters" in stale[NAME]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stale"] == stale
    assert summary["done"] == 0 and summary["tiles"] == 0 and summary["failed"] == 1
    report = (run / "report.html").read_text()
    assert "stale" in report.lower() and "no tile passed the filters" in report


def test_slides_done_under_an_older_config_are_stale(cmu_slide: Path, tmp_path: Path) -> None:
    """A slide not in the rerun's inputs keeps its outputs but leaves the manifest."""
    other = tmp_path / "other.svs"
    shutil.copyfile(cmu_slide, other)
    extract_slides([cmu_slide, other], tmp_path, workers=1, threads=1, **CONFIG_A)
    run = tmp_path / LABEL
    assert len(json.loads((run / "manifest.json").read_text())) == 2
    assert _extract(cmu_slide, tmp_path, CONFIG_B) == "done"
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest) == [f"{NAME}.tfrecords"]
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["stale"]) == ["other"] and "config" in summary["stale"]["other"]
    assert summary["done"] == 1 and summary["tiles"] == manifest[f"{NAME}.tfrecords"]["total"]
    assert (run / "other.tfrecords").is_file()


def test_slide_rewritten_with_same_size_and_mtime_is_reextracted(
    cmu_slide: Path, tmp_path: Path
) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copyfile(cmu_slide, slide)
    out = tmp_path / "out"
    assert _extract(slide, out, CONFIG_A) == "done"
    assert _extract(slide, out, CONFIG_A) == "skipped"
    st = slide.stat()
    data = bytearray(slide.read_bytes())
    middle = len(data) // 2  # inside the image data (this small file is all head and tail)
    data[middle : middle + 64] = bytes(64)
    slide.write_bytes(bytes(data))
    os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert slide.stat().st_size == st.st_size and slide.stat().st_mtime_ns == st.st_mtime_ns
    assert _extract(slide, out, CONFIG_A) != "skipped"


@pytest.fixture(scope="module")
def aligned_q70(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """A generated slide of 256 px JPEG tiles at quality 70, 0.5 um/px (tiles copied at 128 um)."""
    path = tmp_path_factory.mktemp("aligned") / "aligned.svs"
    make_synthetic_slide(
        path, width=2048, height=1536, tile_size=256, mpp=0.5, jpeg_quality=70,
        source_tiles=cmu_slide, seed=1,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_passthrough_and_stored_quality_are_recorded(
    aligned_q70: Path, tmp_path: Path, storage: Remote
) -> None:
    """Again with the slide read from SeaweedFS: the same records and outputs."""
    slide, kw = storage.name(aligned_q70), storage.kw
    run = extract_slides(
        [slide], tmp_path / "out", workers=1, threads=1, tile_px=256, tile_um=128, **kw
    )
    result = run.results[0]
    assert result.status == "done" and result.passthrough == result.tiles > 0
    assert result.stored_quality is not None and abs(result.stored_quality - 70) <= 1
    folder = tmp_path / "out" / "256px_128um"
    state = json.loads((folder / "state" / "aligned.json").read_text())
    assert state["passthrough"] == result.tiles and state["stored_quality"] == result.stored_quality
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["passthrough"] == result.tiles
    assert summary["per_slide"][0]["stored_quality"] == result.stored_quality
    report = (folder / "report.html").read_text()
    assert f"quality {result.stored_quality}" in report
    reencoded = extract_slides(
        [slide], tmp_path / "off", workers=1, threads=1, tile_px=256, tile_um=128,
        jpeg_passthrough=False, **kw,
    ).results[0]  # fmt: skip
    assert reencoded.passthrough == 0 and reencoded.stored_quality is None


def test_failed_rerun_after_the_slide_changed_is_stale_and_kept(
    cmu_slide: Path, tmp_path: Path
) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copyfile(cmu_slide, slide)
    out = tmp_path / "out"
    assert _extract(slide, out, CONFIG_A) == "done"
    run = out / LABEL
    tfrecord = (run / "slide.tfrecords").read_bytes()
    slide.write_bytes(slide.read_bytes()[:5000])  # replaced by a broken file
    assert _extract(slide, out, CONFIG_A) == "failed"
    assert (run / "slide.tfrecords").read_bytes() == tfrecord  # kept
    assert json.loads((run / "manifest.json").read_text()) == {}
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["stale"]) == ["slide"] and summary["stale"] == stale_slides(run)
    assert "failed" in summary["stale"]["slide"]


def test_cli_lists_stale_slides(cmu_slide: Path, tmp_path: Path) -> None:
    """The command names the slides whose outputs it left stale, with the reason."""
    from click.testing import CliRunner

    from tilestream.cli import cli

    assert _extract(cmu_slide, tmp_path, CONFIG_A) == "done"
    args = ["extract", str(cmu_slide), "--out", str(tmp_path), "--threads", "1", "--workers", "1"]
    for key, value in CONFIG_FAILS.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # the slide failed
    assert "stale outputs" in result.output
    assert f"stale {NAME}: " in result.output and "no tile passed the filters" in result.output
