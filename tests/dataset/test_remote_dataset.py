"""Datasets, manifests, ``tilestream inspect`` and Slideflow's sf.io functions over S3 and HTTP.

The real per-slide TFRecords extracted from a real slide (the dataset fixtures) are uploaded
to SeaweedFS; every answer must equal the local one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from _remote import Remote, make_remote
from tilestream.cli import cli
from tilestream.dataset import Dataset
from tilestream.storage import store_for
from tilestream.tfrecord import (
    detect_tfrecord_format,
    get_locations_from_tfrecord,
    get_tfrecord_by_index,
    get_tfrecord_by_location,
    get_tfrecord_length,
    tfrecord_has_locations,
)

from .conftest import NAMES, TILE_PX, TILE_UM

RUN = f"{TILE_PX}px_{TILE_UM}um"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILESTREAM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["s3", "http"])
def uploaded(request: pytest.FixtureRequest, real_dir: Path) -> tuple[Remote, list[str]]:
    remote = make_remote(request.param, request, "dataset")
    files = sorted(real_dir.glob("*.tfrecords"))
    return remote, remote.put(files, prefix=f"cohort/{RUN}")


def test_dataset_over_a_prefix_equals_the_local_one(
    uploaded: tuple[Remote, list[str]], real_root: Path
) -> None:
    remote, urls = uploaded
    if remote.kind == "http":
        pytest.skip("a web server cannot list a prefix: give the objects")
    local = Dataset(tfrecords=real_root, tile_px=TILE_PX, tile_um=TILE_UM)
    ds = Dataset(
        tfrecords=f"s3://{remote.bucket}/cohort/",
        tile_px=TILE_PX,
        tile_um=TILE_UM,
        storage_options=remote.options,
    )
    assert ds.slides() == local.slides() == sorted(NAMES)
    assert ds.tfrecords() == sorted(urls)
    counts = {Path(k).name: v for k, v in ds.manifest().items()}
    assert counts == {Path(k).name: v for k, v in local.manifest().items()}
    assert ds.num_tiles == local.num_tiles
    assert remote.seaweed.secret_key not in repr(ds) + str(ds.summary())


def test_dataset_of_objects_loads_the_same_tiles(
    uploaded: tuple[Remote, list[str]], real_dir: Path
) -> None:
    torch = pytest.importorskip("torch")
    remote, urls = uploaded
    local = Dataset(tfrecords=sorted(real_dir.glob("*.tfrecords")))
    ds = Dataset(tfrecords=urls, storage_options=remote.options)
    assert ds.num_tiles == local.num_tiles

    def tiles(dataset: Dataset) -> list[tuple[str, int, int, bytes]]:
        out = []
        # Forked workers (Linux's default): each makes its own connections, and this
        # process's next request must not hang on sockets a child used.
        loader = torch.utils.data.DataLoader(
            dataset.torch(as_dict=True, incl_loc=True, seed=1),
            batch_size=32,
            num_workers=2,
        )
        for b in loader:
            for s, x, y, img in zip(
                b["slide"], b["loc_x"].tolist(), b["loc_y"].tolist(), b["image"], strict=True
            ):
                out.append((s, x, y, img.numpy().tobytes()))
        return sorted(out)

    assert tiles(ds) == tiles(local)


def test_sfio_functions_take_urls(uploaded: tuple[Remote, list[str]], real_dir: Path) -> None:
    remote, urls = uploaded
    opts: dict[str, Any] = {"storage_options": remote.options}
    for url in urls:
        path = real_dir / url.rsplit("/", 1)[-1]
        assert detect_tfrecord_format(url, **opts) == detect_tfrecord_format(path)
        assert get_tfrecord_length(url, **opts) == get_tfrecord_length(path)
        assert get_tfrecord_by_index(url, 3, **opts) == get_tfrecord_by_index(path, 3)
        locs = get_locations_from_tfrecord(url, **opts)
        assert locs == get_locations_from_tfrecord(path)
        assert tfrecord_has_locations(url, **opts) is True
        assert get_tfrecord_by_location(url, locs[2], decode=False, **opts) == (
            get_tfrecord_by_location(path, locs[2], decode=False)
        )


def test_inspect_reads_urls(uploaded: tuple[Remote, list[str]], real_dir: Path) -> None:
    remote, urls = uploaded
    runner = CliRunner()
    got = runner.invoke(cli, ["inspect", urls[0], *remote.cli_args])
    local = runner.invoke(cli, ["inspect", str(real_dir / urls[0].rsplit("/", 1)[-1])])
    assert got.exit_code == 0, got.output
    assert local.exit_code == 0, local.output
    assert got.output.splitlines()[1:] == local.output.splitlines()[1:]
    assert urls[0] in got.output.replace("\n", "")
    assert remote.seaweed.secret_key not in got.output
    missing = runner.invoke(cli, ["inspect", remote.url("cohort/none.tfrecords"), *remote.cli_args])
    assert missing.exit_code != 0


def test_manifest_of_a_prefix_is_written_beside_it(
    request: pytest.FixtureRequest, real_dir: Path
) -> None:
    remote = make_remote("s3", request, "manifest")
    remote.put(sorted(real_dir.glob("*.tfrecords")), prefix="run")
    runner = CliRunner()
    result = runner.invoke(cli, ["manifest", f"s3://{remote.bucket}/run/", *remote.cli_args])
    assert result.exit_code == 0, result.output
    store, _ = store_for(f"s3://{remote.bucket}", remote.options)
    written = json.loads(store.read("run/manifest.json"))
    local = runner.invoke(cli, ["manifest", str(real_dir), "--no-write"])
    assert local.exit_code == 0
    expected = {
        p.name: Dataset(tfrecords=[p]).num_tiles for p in sorted(real_dir.glob("*.tfrecords"))
    }
    assert {k: v["total"] for k, v in written.items()} == expected
    assert all(v["etag"] for v in written.values())
    verified = runner.invoke(
        cli, ["manifest", f"s3://{remote.bucket}/run/", "--verify", *remote.cli_args]
    )
    assert verified.exit_code == 0, verified.output
    assert "verified" in verified.output
    assert remote.seaweed.secret_key not in result.output + verified.output


def test_a_bucket_run_folder_is_read_without_its_stale_slides(
    request: pytest.FixtureRequest, cmu_slide: Path, tmp_path: Path
) -> None:
    import shutil

    from tilestream.extract import extract_slides
    from tilestream.loaders.tiles import plan_tiles

    remote = make_remote("s3", request, "bucketrun")
    a, b = tmp_path / "a.svs", tmp_path / "b.svs"
    shutil.copy2(cmu_slide, a)
    shutil.copy2(cmu_slide, b)
    prefix = f"s3://{remote.bucket}/ext"
    run = extract_slides([a, b], prefix, workers=1, storage_options=remote.options,
                         tile_px=TILE_PX, tile_um=TILE_UM)  # fmt: skip
    assert run is not None
    ds = Dataset(tfrecords=f"{prefix}/", tile_px=TILE_PX, tile_um=TILE_UM,
                 storage_options=remote.options)  # fmt: skip
    assert ds.slides() == ["a", "b"] and not ds.stale_tfrecords()
    store, _ = store_for(prefix, remote.options)
    key = f"ext/{RUN}/b.tfrecords"
    store.write_atomic(key, store.read(key) + b"\0")  # changed after its extraction
    ds = Dataset(tfrecords=f"{prefix}/", tile_px=TILE_PX, tile_um=TILE_UM,
                 storage_options=remote.options)  # fmt: skip
    assert ds.slides() == ["a"]
    assert list(ds.stale_tfrecords()) == [f"{prefix}/{RUN}/b.tfrecords"]
    plan = plan_tiles(f"{prefix}/{RUN}/", storage_options=remote.options)
    assert plan.slides == ["a"] and plan.left_out == [f"{prefix}/{RUN}/b.tfrecords"]
