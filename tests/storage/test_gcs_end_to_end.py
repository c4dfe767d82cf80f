"""``gs://`` end to end on a real GCS JSON-API server (fake-gcs-server): slides, TFRecords, extraction.

Real slides and TFRecords from the shared test data are uploaded to the
emulator through :func:`~tilestream.storage.store_for`; read by ``gs://`` URL
through gcsfs they give what the local files give (metadata, pixels, records),
and an extraction from ``gs://`` or into ``gs://`` writes what a local run
writes, byte for byte. A run into ``gs://`` claims its run folder with a lease
created by GCS's conditional write (``ifGenerationMatch=0``): of racing runs
exactly one wins, and a second run meets a clear error naming the holder.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tilestream.cli import cli
from tilestream.errors import ExtractionError
from tilestream.extract import extract_slides
from tilestream.extract.lease import Lease, lease_generations
from tilestream.runfolder import MANIFEST_FILE, slide_output_names
from tilestream.slide import open_slide
from tilestream.storage import Store, store_for
from tilestream.testing.fakegcs import FakeGcsServer
from tilestream.tfrecord import TFRecord, iter_records

pytestmark = [
    pytest.mark.testdata,
    # gcsfs hands aiohttp each upload as bytes; aiohttp warns about bodies over 1 MiB.
    pytest.mark.filterwarnings(
        "ignore:Sending a large body directly with raw bytes:ResourceWarning"
    ),
]

BUCKET = "gcs-e2e"
SLIDES = ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"]
RECORDS = "raccoon_test.record"
OPTS = {"tile_px": 128, "tile_um": 256}
LABEL = "128px_256um"
_n = itertools.count()


@pytest.fixture(scope="module")
def store(fake_gcs: FakeGcsServer) -> Store:
    fake_gcs.make_bucket(BUCKET)
    return store_for(f"gs://{BUCKET}", fake_gcs.storage_options)[0]


@pytest.fixture(scope="module")
def slide_urls(store: Store, slides_dir: Path) -> dict[str, str]:
    """The test slides under ``slides/`` in the bucket, by name."""
    for name in SLIDES:
        store.write_atomic(f"slides/{name}", (slides_dir / name).read_bytes())
    return {name: f"gs://{BUCKET}/slides/{name}" for name in SLIDES}


@pytest.fixture(scope="module")
def local_run(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local run of the small real slide: the reference of every extraction here."""
    out = tmp_path_factory.mktemp("local")
    run = extract_slides([slides_dir / SLIDES[0]], out, workers=1, **OPTS)
    assert run.done == 1
    return out / LABEL


def _same_outputs(local: Path, read: dict[str, bytes], name: str) -> None:
    """TFRecord, coordinates and rejected tiles byte for byte; the index's arrays."""
    rel = slide_output_names(name)
    for kind in ("tfrecord", "coords", "rejected"):
        assert read[rel[kind]] == (local / rel[kind]).read_bytes(), kind
    theirs, ours = np.load(io.BytesIO(read[rel["index"]])), np.load(local / rel["index"])
    for arr in ("arr_0", "locations"):
        assert np.array_equal(theirs[arr], ours[arr]), arr


def _folder(path: Path, name: str) -> dict[str, bytes]:
    return {rel: (path / rel).read_bytes() for rel in slide_output_names(name).values()
            if (path / rel).exists()}  # fmt: skip


def _objects(store: Store, prefix: str, name: str) -> dict[str, bytes]:
    rels = slide_output_names(name).values()
    return {rel: store.read(f"{prefix}/{rel}") for rel in rels if store.exists(f"{prefix}/{rel}")}


# -- slides -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SLIDES)
def test_a_gs_slide_equals_the_local_file(
    name: str, slide_urls: dict[str, str], slides_dir: Path, fake_gcs: FakeGcsServer
) -> None:
    with (
        open_slide(slide_urls[name], storage_options=fake_gcs.storage_options) as remote,
        open_slide(slides_dir / name) as local,
    ):
        assert remote.backend == local.backend == "tifffile"
        assert remote.level_dimensions == local.level_dimensions
        assert remote.level_downsamples == local.level_downsamples
        assert dict(remote.properties) == dict(local.properties)
        assert remote.mpp == local.mpp
        w, h = local.dimensions
        region = ((w // 3, h // 4), 0, (min(900, w // 2), min(700, h // 2)))
        got = remote.read_region(*region, as_array=True)
        assert np.array_equal(got, local.read_region(*region, as_array=True))
        top = local.level_count - 1
        whole = ((0, 0), top, local.level_dimensions[top])
        assert np.array_equal(
            remote.read_region(*whole, as_array=True), local.read_region(*whole, as_array=True)
        )
        stats = remote.io_stats
        assert stats is not None and 0 < stats.bytes_read < (slides_dir / name).stat().st_size * 2


# -- TFRecords ----------------------------------------------------------------------
def test_a_gs_tfrecord_reads_the_local_records(
    store: Store, tfrecords_dir: Path, fake_gcs: FakeGcsServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("TILESTREAM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / RECORDS  # a copy: TFRecord() saves an index beside a file it indexes
    shutil.copyfile(tfrecords_dir / RECORDS, path)
    store.write_atomic(f"records/{RECORDS}", path.read_bytes())
    url = f"gs://{BUCKET}/records/{RECORDS}"
    opts = fake_gcs.storage_options
    local = list(iter_records(path))
    assert len(local) == 40
    assert list(iter_records(url, storage_options=opts)) == local
    tfr = TFRecord(url, storage_options=opts)
    assert len(tfr) == 40
    here = TFRecord(path)
    assert [tfr[i] for i in (0, 17, 39, -1)] == [here[i] for i in (0, 17, 39, -1)]


# -- extraction from gs:// ------------------------------------------------------------
def test_extract_from_gs_equals_the_local_run(
    slide_urls: dict[str, str], local_run: Path, fake_gcs: FakeGcsServer, tmp_path: Path
) -> None:
    name = Path(SLIDES[0]).stem
    run = extract_slides(
        [slide_urls[SLIDES[0]]], tmp_path / "lib", workers=1,
        storage_options=fake_gcs.storage_options, **OPTS,
    )  # fmt: skip
    assert run.done == 1 and not run.failed
    _same_outputs(local_run, _folder(tmp_path / "lib" / LABEL, name), name)
    # and by the CLI, the options given as --storage-option
    args = ["extract", slide_urls[SLIDES[0]], "--out", str(tmp_path / "cli"), "--workers", "1"]
    args += ["--tile-px", "128", "--tile-um", "256", "--no-progress"]
    for key, value in fake_gcs.storage_options.items():
        args += ["--storage-option", f"{key}={value}"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _same_outputs(local_run, _folder(tmp_path / "cli" / LABEL, name), name)


# -- extraction into gs:// ------------------------------------------------------------
def test_racing_runs_into_gs_one_wins_and_the_other_meets_a_clear_error(
    slides_dir: Path, store: Store, fake_gcs: FakeGcsServer
) -> None:
    prefix = f"runs/held-{os.getpid()}-{next(_n)}"
    run = f"{prefix}/{LABEL}"
    won: list[Lease] = []
    lost: list[ExtractionError] = []
    barrier = threading.Barrier(6)

    def take() -> None:
        barrier.wait()
        try:
            won.append(Lease.acquire(store, run, ttl=60))
        except ExtractionError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(lost) == 5
    try:  # the holder is still running: a run on the same prefix stops, naming it
        args = ["extract", str(slides_dir / SLIDES[0]), "--out", f"gs://{BUCKET}/{prefix}"]
        args += ["--workers", "1", "--tile-px", "128", "--tile-um", "256", "--no-progress"]
        for key, value in fake_gcs.storage_options.items():
            args += ["--storage-option", f"{key}={value}"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.stderr + result.stdout
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and "another run holds this run folder" in errors[0]
        assert not [k for k in store.list(prefix) if not k.startswith(f"{run}/.lease")]
    finally:
        won[0].release()


def test_extract_into_gs_equals_the_local_run(
    slides_dir: Path, local_run: Path, store: Store, fake_gcs: FakeGcsServer, tmp_path: Path
) -> None:
    name = Path(SLIDES[0]).stem
    prefix = f"runs/forced-{os.getpid()}-{next(_n)}"
    out = f"gs://{BUCKET}/{prefix}"
    slide = tmp_path / SLIDES[0]
    shutil.copy2(slides_dir / SLIDES[0], slide)
    args = ["extract", str(slide), "--out", out, "--workers", "1"]
    args += ["--tile-px", "128", "--tile-um", "256", "--no-progress"]
    for key, value in fake_gcs.storage_options.items():
        args += ["--storage-option", f"{key}={value}"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = f"{prefix}/{LABEL}"
    _same_outputs(local_run, _objects(store, run, name), name)
    manifest = json.loads(store.read(f"{run}/{MANIFEST_FILE}"))
    assert manifest == json.loads((local_run / MANIFEST_FILE).read_text())
    assert lease_generations(store, run) == [0]  # taken by a conditional write, then released
    # a second run resumes from the bucket: the slide is complete
    again = extract_slides(
        [slide], out, workers=1, storage_options=fake_gcs.storage_options, **OPTS
    )
    assert again.skipped == 1 and again.done == 0
