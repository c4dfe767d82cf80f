"""Extraction on a real Dask LocalCluster with no shared output folder: outputs through S3 (SeaweedFS)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from _outputs import assert_same_outputs
from tilestream.distributed import dask_executor
from tilestream.extract import extract_slides
from tilestream.extract.publish import SCRATCH_ENV
from tilestream.storage import Store, store_for
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.testing.synthetic import make_synthetic_slide

OPTS = {"tile_px": 64, "tile_um": 64, "stride_div": 2}
LABEL = "64px_64um"


@pytest.fixture(autouse=True)
def _needs_dask(dask_distributed: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask is needed; the workers choose their own scratch folders."""
    monkeypatch.delenv(SCRATCH_ENV, raising=False)


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> list[Path]:
    """A real slide and two made of its stored tiles."""
    folder = tmp_path_factory.mktemp("generated")
    real = slides_dir / "CMU-1-Small-Region.svs"
    made = [real]
    for seed in range(2):
        path = folder / f"generated-{seed}.svs"
        make_synthetic_slide(path, width=2048, height=2048, tile_size=256, seed=seed,
                             source_tiles=real)  # fmt: skip
        made.append(path)
    return made


def listing(folder: Path, slides: list[str]) -> Path:
    """A CSV of five slides: the real one and copies of the generated ones, named."""
    rows = [f"{slides[0]},cmu"] + [f"{slides[1 + i % 2]},s{i}" for i in range(4)]
    csv = folder / "slides.csv"
    csv.write_text("slide,name\n" + "\n".join(rows) + "\n")
    return csv


def without_source(folder: Path) -> None:
    """Drop what names where a slide was read from (a path or a URL) from the state files."""
    for path in (folder / "state").glob("*.json"):
        state = json.loads(path.read_text())
        state.pop("path", None)
        state.pop("source", None)
        path.write_text(json.dumps(state))


def download_run(store: Store, run: str, dest: Path) -> Path:
    """The run folder's objects as files (leases left out; the ETags a state records dropped)."""
    for key in store.list(run):
        rel = key[len(run) + 1 :]
        if rel.startswith(".lease/"):
            continue
        data = store.read(key)
        if rel.startswith("state/") and rel.endswith(".json"):
            state = json.loads(data)
            for meta in (state.get("outputs") or {}).values():
                meta.pop("etag", None)
            data = json.dumps(state).encode()
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return dest


def test_cluster_without_shared_folder_with_a_worker_killed(
    slide_files: list[Path], tmp_path: Path, seaweed: SeaweedServer
) -> None:
    """Slides in and outputs out through S3; the workers share no folder with each other or us."""
    (tmp_path / "lists").mkdir()
    local_list = listing(tmp_path / "lists", [str(p) for p in slide_files])
    reference = extract_slides([local_list], tmp_path / "ref", workers=1, **OPTS)
    assert reference.done == 5
    bucket = seaweed.make_bucket("rextract-dask")
    prefix = f"s3://{bucket}/run-{os.getpid()}"
    opts = seaweed.storage_options
    store, _ = store_for(f"s3://{bucket}", opts)
    urls = []
    for path in slide_files:
        store.write_atomic(f"slides-{os.getpid()}/{path.name}", path.read_bytes())
        urls.append(f"s3://{bucket}/slides-{os.getpid()}/{path.name}")
    (tmp_path / "remote-list").mkdir()
    remote_list = listing(tmp_path / "remote-list", urls)
    result: dict[str, object] = {}
    with dask_executor(cluster="local:2", dashboard=False, retries=2) as dask:
        pids = dask.client.run(os.getpid)
        scratch = dask.client.run(lambda: os.environ[SCRATCH_ENV])
        assert len(set(scratch.values())) == 2  # each worker its own folder
        assert os.getpid() not in pids.values()

        def drive() -> None:
            result["run"] = extract_slides(
                [remote_list], prefix, executor=dask.executor, storage_options=opts, **OPTS
            )

        thread = threading.Thread(target=drive)
        thread.start()
        deadline = time.monotonic() + 180
        killed = None
        while time.monotonic() < deadline and killed is None and thread.is_alive():
            for addr, folder in scratch.items():
                if any(Path(folder).glob("tilestream-slide-*")):  # a slide in progress there
                    killed = pids[addr]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.01)
        thread.join(timeout=900)
        assert killed is not None, "no slide was in progress to interrupt"
        assert not thread.is_alive()
    run = result["run"]
    assert run.done == 5 and not run.failed  # type: ignore[attr-defined]
    _, key = store_for(prefix, opts)
    got = download_run(store, f"{key}/{LABEL}", tmp_path / "got" / LABEL)
    ref = tmp_path / "ref" / LABEL
    for lock in ref.glob(".lock*"):  # the local run's folder locks (a store run has a lease)
        lock.unlink()
    for folder in (ref, got):
        without_source(folder)
    assert_same_outputs(ref, got)
    states = [json.loads(store.read(k)) for k in store.list(f"{key}/{LABEL}/state")
              if k.endswith(".json")]  # fmt: skip
    assert {s["source"]["kind"] for s in states} == {"object"}
    assert all(s["path"].startswith(f"s3://{bucket}/") for s in states)
    assert seaweed.secret_key not in "".join(
        p.read_text(errors="replace") for p in got.rglob("*") if p.is_file()
    )
