"""An object-store prefix given to ``extract`` is searched like a folder, in the library and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tilestream.cli import main
from tilestream.errors import ConfigError
from tilestream.extract import discover_slides, extract_slides
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer

CMU = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer, slides_dir: Path) -> str:
    """A cohort prefix: two slides (one in a sub-folder), a DICOM series of two files, clutter."""
    name = seaweed.make_bucket("rprefix")
    store = store_for(f"s3://{name}", seaweed.storage_options)[0]
    data = (slides_dir / CMU).read_bytes()
    for key in ("cohort/a.svs", "cohort/sub/b.svs", "cohort/.hidden.svs", "other/c.svs"):
        store.write_atomic(key, data)
    for key in ("cohort/series/1.dcm", "cohort/series/2.dcm", "cohort/notes.txt"):
        store.write_atomic(key, b"x")
    return name


def test_a_prefix_lists_its_slides_like_a_folder(bucket: str, seaweed: SeaweedServer) -> None:
    tasks = discover_slides([f"s3://{bucket}/cohort/"], storage_options=seaweed.storage_options)
    assert [(t.name, t.path) for t in tasks] == [
        ("a", f"s3://{bucket}/cohort/a.svs"),
        ("series", f"s3://{bucket}/cohort/series/1.dcm"),
        ("b", f"s3://{bucket}/cohort/sub/b.svs"),
    ]


def test_an_empty_prefix_finds_nothing_and_says_so(
    bucket: str, seaweed: SeaweedServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    assert discover_slides([f"s3://{bucket}/nothing-here/"], storage_options=opts) == []
    assert f"s3://{bucket}/nothing-here/: no slides under this prefix" in caplog.text
    with pytest.raises(ConfigError, match="no slides found"):
        extract_slides([f"s3://{bucket}/nothing-here/"], tmp_path, storage_options=opts,
                       tile_px=128, tile_um=256)  # fmt: skip


def test_extract_and_the_cli_take_a_prefix(
    bucket: str, seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = extract_slides(
        [f"s3://{bucket}/cohort/sub/"], tmp_path / "lib", workers=1,
        storage_options=seaweed.storage_options, tile_px=128, tile_um=256,
    )  # fmt: skip
    assert [r.slide for r in run.results] == ["b"] and run.done == 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    code = main([
        "extract", f"s3://{bucket}/cohort/sub/", "--out", os.fspath(tmp_path / "cli"),
        "--tile-px", "128", "--tile-um", "256", "--workers", "1",
        "--storage-option", f"endpoint_url={seaweed.endpoint_url}",
    ])  # fmt: skip
    assert code == 0
    assert (tmp_path / "cli" / "128px_256um" / "b.tfrecords").stat().st_size > 0
