"""Extraction outputs written to a real S3 server (SeaweedFS): same bytes as a local run, resume, faults."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tilestream.errors import ExtractionError
from tilestream.extract import RunProgress, extract_slides
from tilestream.extract.publish import RemoteRun
from tilestream.runfolder import CONFIG_FILE, MANIFEST_FILE, SUMMARY_FILE, slide_output_names
from tilestream.storage import RetryPolicy, Store, store_for
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.testing.synthetic import make_synthetic_slide

OPTS = {"tile_px": 128, "tile_um": 256}
LABEL = "128px_256um"
BUCKET = "rextract"  # the module's bucket (tests/conftest.py: bucket, store)
_n = itertools.count()


@pytest.fixture
def prefix(bucket: str) -> str:
    """A fresh prefix in the bucket per test."""
    return f"s3://{bucket}/t{os.getpid()}-{next(_n)}"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> list[Path]:
    """A real slide (copied, so that a test may change it) and one made of its stored tiles."""
    folder = tmp_path_factory.mktemp("slides")
    real = folder / "CMU-1-Small-Region.svs"
    shutil.copy2(slides_dir / real.name, real)
    made = folder / "generated.svs"
    make_synthetic_slide(made, width=2048, height=2048, tile_size=256, seed=1, source_tiles=real)
    return [real, made]


@pytest.fixture(scope="module")
def local_run(slides: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run = extract_slides(slides, out, workers=1, **OPTS)
    assert run.done == 2
    return out / LABEL


def key_of(url: str, rel: str) -> str:
    return f"{url.split('/', 3)[3]}/{LABEL}/{rel}"


def assert_same_as_local(store: Store, url: str, local: Path, names: list[str]) -> None:
    """TFRecords and coordinates byte for byte; the index arrays (the npz holds zip metadata)."""
    for name in names:
        rel = slide_output_names(name)
        for kind in ("tfrecord", "coords", "rejected", "outlines", "preview"):
            assert store.read(key_of(url, rel[kind])) == (local / rel[kind]).read_bytes(), kind
        remote = np.load(__import__("io").BytesIO(store.read(key_of(url, rel["index"]))))
        here = np.load(local / rel["index"])
        for arr in ("arr_0", "locations"):
            assert np.array_equal(remote[arr], here[arr])


def names_of(slides: list[Path]) -> list[str]:
    return [p.stem for p in slides]


def all_objects(store: Store, url: str) -> dict[str, bytes]:
    root = url.split("/", 3)[3]
    return {k: store.read(k) for k in store.list(root)}


def test_outputs_equal_a_local_run(
    slides: list[Path],
    local_run: Path,
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    scratch = tmp_path / "scratch"
    run = extract_slides(
        slides, prefix, workers=1, storage_options=seaweed.storage_options,
        scratch=scratch, **OPTS,
    )  # fmt: skip
    assert run.done == 2 and not run.failed
    assert run.url == f"{prefix}/{LABEL}"
    assert_same_as_local(store, prefix, local_run, names_of(slides))
    objects = all_objects(store, prefix)
    state = json.loads(objects[key_of(prefix, "state/CMU-1-Small-Region.json")])
    assert state["status"] == "done"
    assert set(state["outputs"]) == {"tfrecord", "index", "coords"}
    assert all(meta["etag"] for meta in state["outputs"].values())
    manifest = json.loads(objects[key_of(prefix, MANIFEST_FILE)])
    assert manifest == json.loads((local_run / MANIFEST_FILE).read_text())
    config = json.loads(objects[key_of(prefix, CONFIG_FILE)])
    assert config["hash"] == run.config.hash()
    summary = json.loads(objects[key_of(prefix, SUMMARY_FILE)])
    assert summary["slides"] == 2 and summary["done"] == 2 and summary["failed"] == 0
    # the scratch folders are gone; nothing of the run is left locally
    assert list(scratch.iterdir()) == []
    # no credential in any object written, nor in the log
    for key, data in objects.items():
        assert seaweed.secret_key.encode() not in data, key
        assert seaweed.access_key.encode() not in data, key
    assert seaweed.secret_key not in caplog.text
    # a rerun skips both slides
    again = extract_slides(
        slides, prefix, workers=1, storage_options=seaweed.storage_options, **OPTS
    )
    assert again.skipped == 2 and again.done == 0


def test_remote_run_repr_has_no_secret(seaweed: SeaweedServer) -> None:
    target = RemoteRun("s3://b/p", seaweed.storage_options)
    assert seaweed.secret_key not in repr(target)


def test_resume_redoes_changed_outputs_and_sources(
    slides: list[Path],
    local_run: Path,
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    tmp_path: Path,
) -> None:
    opts = seaweed.storage_options
    extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    cmu, demo = names_of(slides)
    # an output object replaced (same size, other bytes: the ETag tells), another removed
    coords_key = key_of(prefix, slide_output_names(cmu)["coords"])
    data = bytearray(store.read(coords_key))
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    store.write_atomic(coords_key, bytes(data))
    run = extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    assert {r.slide: r.status for r in run.results} == {cmu: "done", demo: "skipped"}
    store.delete(key_of(prefix, slide_output_names(demo)["tfrecord"]))
    run = extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    assert {r.slide: r.status for r in run.results} == {cmu: "skipped", demo: "done"}
    # the source slide changed (its modification time): redone
    st = slides[1].stat()
    os.utime(slides[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    run = extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    assert {r.slide: r.status for r in run.results} == {cmu: "skipped", demo: "done"}
    assert_same_as_local(store, prefix, local_run, names_of(slides))


def test_transient_faults_give_identical_outputs(
    slides: list[Path],
    local_run: Path,
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
) -> None:
    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    proxy.reset_next(2)
    proxy.fail_next(2, status=503)
    run = extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    assert run.done == 2 and not run.failed
    assert_same_as_local(store, prefix, local_run, names_of(slides))


def test_permanent_fault_is_a_slide_failure_and_the_batch_goes_on(
    slides: list[Path],
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    cmu, demo = names_of(slides)
    armed: list[bool] = []

    def break_store_once(p: RunProgress) -> None:
        # while the first slide is extracted (no store traffic), arm failures for every
        # attempt of its first upload (the "running" state): each gets a 500
        if p.slide == cmu and p.result is None and not armed:
            armed.append(True)
            proxy.fail_next(RetryPolicy().attempts, status=500)

    run = extract_slides(
        slides, prefix, workers=1, storage_options=opts, progress=break_store_once, **OPTS
    )
    status = {r.slide: r.status for r in run.results}
    assert status == {cmu: "failed", demo: "done"}
    (failed,) = run.failed
    assert f"{prefix}/{LABEL}/state/{cmu}.json" in (failed.error or "")
    assert seaweed.secret_key not in (failed.error or "") + caplog.text
    state = json.loads(store.read(key_of(prefix, f"state/{cmu}.json")))
    assert state["status"] == "failed" and state["error"] == failed.error
    for kind in ("tfrecord", "index", "coords"):  # nothing of the failed slide is published
        assert not store.exists(key_of(prefix, slide_output_names(cmu)[kind]))
    manifest = json.loads(store.read(key_of(prefix, MANIFEST_FILE)))
    assert list(manifest) == [f"{demo}.tfrecords"]


_KILLED_RUN = """
import sys
from tilestream.errors import ExtractionError
from tilestream.extract import RunProgress, extract_slides
extract_slides(sys.argv[2:], sys.argv[1], workers=1, tile_px=128, tile_um=256,
               storage_options={opts!r})
"""


def test_run_killed_mid_upload_leaves_nothing_partial(
    slides: list[Path],
    local_run: Path,
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
) -> None:
    import signal
    import subprocess
    import sys
    import time

    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    cmu = slides[0].stem
    state_key = key_of(prefix, f"state/{cmu}.json")
    proxy.latency = 0.3  # slow uploads: the kill lands while the slide is published
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN.format(opts=opts), prefix, str(slides[0])], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not store.exists(state_key):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    proxy.clear()
    state = json.loads(store.read(state_key))
    assert state["status"] == "running"  # killed between the first and the last commit step
    rel = slide_output_names(cmu)
    for kind in ("tfrecord", "coords", "rejected", "outlines", "preview"):
        key = key_of(prefix, rel[kind])
        if store.exists(key):  # what is there is whole
            assert store.read(key) == (local_run / rel[kind]).read_bytes()
    # the killed run's lease is still held: a rerun is refused until it expires
    with pytest.raises(ExtractionError, match="another run holds"):
        extract_slides([slides[0]], prefix, workers=1, storage_options=seaweed.storage_options,
                       **OPTS)  # fmt: skip
    lease_keys = list(store.list(key_of(prefix, ".lease")))
    assert len(lease_keys) == 1
    record = json.loads(store.read(lease_keys[0]))
    record["expires"] = 0.0  # as if its ttl had passed
    store.write_atomic(lease_keys[0], json.dumps(record).encode())
    run = extract_slides(
        [slides[0]], prefix, workers=1, storage_options=seaweed.storage_options, **OPTS
    )
    assert run.done == 1
    assert_same_as_local(store, prefix, local_run, [cmu])


def test_cli_out_s3(
    slides: list[Path], local_run: Path, prefix: str, store: Store, seaweed: SeaweedServer
) -> None:
    from click.testing import CliRunner

    from tilestream.cli import cli

    options = seaweed.storage_options
    args = ["extract", str(slides[1]), "--out", prefix, "--tile-px", "128", "--tile-um", "256"]
    for k in ("key", "secret", "endpoint_url"):
        args += ["--storage-option", f"{k}={options[k]}"]
    args += ["--storage-option", "client_kwargs.region_name=us-east-1", "--workers", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seaweed.secret_key not in result.output
    assert f"report: {prefix}/{LABEL}/report.html" in result.output.replace("\n", "")
    assert_same_as_local(store, prefix, local_run, [slides[1].stem])
    # the slide from the bucket too, read by range (never staged), into another prefix
    slide_key = f"{prefix.split('/', 3)[3]}-slides/{slides[1].name}"
    store.write_atomic(slide_key, slides[1].read_bytes())
    other = f"{prefix}-from-s3"
    args[1:4] = [f"s3://{prefix.split('/')[2]}/{slide_key}", "--out", other]
    result = CliRunner().invoke(cli, [*args, "--stage", "never"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_same_as_local(store, other, local_run, [slides[1].stem])


def test_large_output_upload_is_multipart_and_never_partial(
    prefix: str, store: Store, seaweed: SeaweedServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A 20 MiB output (a multipart upload): a reset mid-upload runs it again; a dead store
    leaves nothing under the key."""
    from tilestream.errors import StorageUnavailableError
    from tilestream.extract.publish import upload_file

    big = tmp_path / "big.tfrecords"
    big.write_bytes(np.random.default_rng(0).bytes(20 << 20))
    flaky, _ = store_for(prefix, {**seaweed.storage_options, "endpoint_url": proxy.url})
    key = key_of(prefix, "big.tfrecords")
    proxy.reset_next(1)
    stored = upload_file(flaky, key, big)
    assert proxy.counters.resets == 1
    assert stored["size"] == 20 << 20 and stored["etag"] == store.stat(key).etag
    assert store.read(key) == big.read_bytes()
    other = key_of(prefix, "never.tfrecords")
    proxy.fail_next(10_000, status=500)
    with pytest.raises(StorageUnavailableError) as info:
        upload_file(flaky, other, big)
    proxy.clear()
    assert not store.exists(other)
    assert seaweed.secret_key not in str(info.value)


def test_bad_output_locations_give_clear_errors(
    slides: list[Path], bucket: str, seaweed: SeaweedServer
) -> None:
    # (a missing bucket is not among them: SeaweedFS creates a bucket on the first write)
    from tilestream.errors import StorageAccessDeniedError

    cases = [
        (f"s3://{bucket}/ro", seaweed.read_only_options, StorageAccessDeniedError),
        (f"s3://{bucket}/bad", {**seaweed.storage_options, "secret": "wrong-secret-x"},
         StorageAccessDeniedError),
    ]  # fmt: skip
    for url, opts, error in cases:
        with pytest.raises(error) as info:
            extract_slides([slides[0]], url, workers=1, storage_options=opts, **OPTS)
        message = str(info.value)
        assert url.split("/")[2] in message
        for secret in (seaweed.secret_key, seaweed.read_only_secret, "wrong-secret-x"):
            assert secret not in message


def test_store_down_raises_for_executor_retries_only_when_asked(
    slides: list[Path], prefix: str, seaweed: SeaweedServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A store that stays unavailable while a slide is published: raised for Dask's retries
    with ``raise_transient``, a failure record without; the scratch folder is removed."""
    from tilestream.errors import StorageUnavailableError
    from tilestream.extract import ExtractConfig, SlideTask
    from tilestream.extract.publish import run_remote_slide_task

    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    target = RemoteRun(f"{prefix}/{LABEL}", opts, scratch=str(tmp_path / "scratch"))
    task = SlideTask(path=str(slides[0]), name=slides[0].stem)
    config = ExtractConfig(tile_px=128, tile_um=256)
    proxy.fail_next(10_000, status=503)
    with pytest.raises(StorageUnavailableError) as info:
        run_remote_slide_task(task, target, config, raise_transient=True)
    assert seaweed.secret_key not in str(info.value)
    result = run_remote_slide_task(task, target, config, raise_transient=False)
    proxy.clear()
    assert result.status == "failed" and result.error_type == "StorageUnavailableError"
    assert f"{prefix}/{LABEL}/state/{task.name}.json" in (result.error or "")
    assert list((tmp_path / "scratch").iterdir()) == []


def test_loose_images_to_s3_equal_a_local_run(
    slides: list[Path], prefix: str, store: Store, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    local = extract_slides([slides[0]], tmp_path, workers=1, to_images=True, **OPTS)
    remote = extract_slides(
        [slides[0]], prefix, workers=1, to_images=True, storage_options=opts, **OPTS
    )
    assert local.done == remote.done == 1
    name = slides[0].stem
    tiles = sorted((tmp_path / LABEL / name).iterdir())
    assert len(tiles) == local.results[0].tiles > 0
    keys = sorted(store.list(key_of(prefix, name)))
    assert [k.rsplit("/", 1)[-1] for k in keys] == [p.name for p in tiles]
    assert all(store.read(k) == p.read_bytes() for k, p in zip(keys, tiles, strict=True))
    again = extract_slides(
        [slides[0]], prefix, workers=1, to_images=True, storage_options=opts, **OPTS
    )
    assert again.skipped == 1


def test_readers_leave_out_stale_slides_of_a_bucket_run_folder(
    slides: list[Path],
    prefix: str,
    store: Store,
    seaweed: SeaweedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tilestream.runfolder import current_tfrecords, stale_files

    opts = seaweed.storage_options
    extract_slides(slides, prefix, workers=1, storage_options=opts, **OPTS)
    cmu, made = names_of(slides)
    urls = [f"{prefix}/{LABEL}/{n}.tfrecords" for n in (cmu, made)]
    assert stale_files(urls, storage_options=opts) == {}
    key = key_of(prefix, f"{made}.tfrecords")
    store.write_atomic(key, store.read(key) + b"\0")  # changed after extraction
    with caplog.at_level(logging.WARNING):
        kept = current_tfrecords(urls, storage_options=opts)
    assert kept == [Path(urls[0])]
    assert f"leaving out {urls[1]}: its tfrecord object {urls[1]} changed" in caplog.text
    # TFRecords outside a run folder (no config.json) are all current
    loose = key_of(prefix, "loose/x.tfrecords")
    store.write_atomic(loose, b"")
    assert stale_files([f"{prefix}/{LABEL}/loose/x.tfrecords"], storage_options=opts) == {}
