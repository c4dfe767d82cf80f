"""The TFRecord utilities read TFRecords in S3 (objects and prefixes) as they read local files.

``merge``, ``split``, ``shuffle``, ``join``, ``transform`` and ``to-images``
take ``s3://`` inputs, in the library and the CLI, and write the same local
outputs, byte for byte, as from the local copies (outputs to S3:
``test_remote_outputs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tilestream.cli import main
from tilestream.dataset.io import (
    join_tfrecord,
    merge_tfrecords,
    shuffle_tfrecord,
    split_tfrecord,
    tfrecord_files,
    tfrecord_to_images,
    transform_tfrecord,
)
from tilestream.errors import StorageNotFoundError
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer, real_dir: Path) -> str:
    """The real per-slide TFRecords under ``s3://<bucket>/run/``."""
    name = seaweed.make_bucket("rutils")
    store = store_for(f"s3://{name}", seaweed.storage_options)[0]
    for f in sorted(real_dir.glob("*.tfrecords")):
        store.write_atomic(f"run/{f.name}", f.read_bytes())
    return name


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes; an index by its offsets and locations (it also records an mtime)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.name.endswith(".index.npz"):
            with np.load(p) as index:
                out[rel] = index["arr_0"].tobytes() + index["locations"].tobytes()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_merge_split_transform_and_images_from_s3_equal_local(
    bucket: str, seaweed: SeaweedServer, real_dir: Path, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    local = sorted(real_dir.glob("*.tfrecords"))
    urls = tfrecord_files(f"s3://{bucket}/run/", storage_options=opts)
    assert urls == [f"s3://{bucket}/run/{f.name}" for f in local]

    n = merge_tfrecords(f"s3://{bucket}/run/", tmp_path / "remote.tfrecords", storage_options=opts)
    assert n == merge_tfrecords(local, tmp_path / "local.tfrecords") > 0
    merged = (tmp_path / "local.tfrecords").read_bytes()
    assert (tmp_path / "remote.tfrecords").read_bytes() == merged

    store = store_for(f"s3://{bucket}", opts)[0]
    store.write_atomic("merged.tfrecords", merged)
    counts = split_tfrecord(
        f"s3://{bucket}/merged.tfrecords", tmp_path / "split-r", storage_options=opts
    )
    assert counts == split_tfrecord(tmp_path / "local.tfrecords", tmp_path / "split-l")
    assert _tree(tmp_path / "split-r") == _tree(tmp_path / "split-l")

    transform_tfrecord(
        urls[0], tmp_path / "t-r.tfrecords", "renamed", resize=32, storage_options=opts
    )
    transform_tfrecord(local[0], tmp_path / "t-l.tfrecords", "renamed", resize=32)
    assert (tmp_path / "t-r.tfrecords").read_bytes() == (tmp_path / "t-l.tfrecords").read_bytes()

    assert tfrecord_to_images(urls[0], tmp_path / "img-r", storage_options=opts) > 0
    tfrecord_to_images(local[0], tmp_path / "img-l")
    assert _tree(tmp_path / "img-r") == _tree(tmp_path / "img-l")


def test_shuffle_and_join_from_s3_equal_local(
    bucket: str, seaweed: SeaweedServer, real_dir: Path, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    local = sorted(real_dir.glob("*.tfrecords"))
    url = f"s3://{bucket}/run/{local[2].name}"
    assert shuffle_tfrecord(url, output=tmp_path / "s-r.tfrecords", seed=9, storage_options=opts)
    shuffle_tfrecord(local[2], output=tmp_path / "s-l.tfrecords", seed=9)
    assert (tmp_path / "s-r.tfrecords").read_bytes() == (tmp_path / "s-l.tfrecords").read_bytes()
    urls = [f"s3://{bucket}/run/{f.name}" for f in local[:2]]  # a list of objects
    n = join_tfrecord(urls, tmp_path / "j-r.tfrecords", "both", seed=1, storage_options=opts)
    assert n == join_tfrecord(local[:2], tmp_path / "j-l.tfrecords", "both", seed=1) > 0
    assert (tmp_path / "j-r.tfrecords").read_bytes() == (tmp_path / "j-l.tfrecords").read_bytes()


def test_cli_merge_and_to_images_from_s3(
    bucket: str,
    seaweed: SeaweedServer,
    real_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    endpoint = ["--storage-option", f"endpoint_url={seaweed.endpoint_url}"]
    out = tmp_path / "m.tfrecords"
    assert main(["tfrecord", "merge", f"s3://{bucket}/run/", "-o", os.fspath(out), *endpoint]) == 0
    assert merge_tfrecords(sorted(real_dir.glob("*.tfrecords")), tmp_path / "l.tfrecords") > 0
    assert out.read_bytes() == (tmp_path / "l.tfrecords").read_bytes()
    first = sorted(real_dir.glob("*.tfrecords"))[0].name
    dest = tmp_path / "imgs"
    args = ["tfrecord", "to-images", f"s3://{bucket}/run/{first}", "-o", os.fspath(dest)]
    assert main([*args, *endpoint]) == 0
    assert any(dest.rglob("*.jpg"))
    assert seaweed.secret_key not in capsys.readouterr().out


def test_a_missing_object_names_its_url(
    bucket: str, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    with pytest.raises(StorageNotFoundError, match=f"s3://{bucket}/run/nope.tfrecords"):
        split_tfrecord(
            f"s3://{bucket}/run/nope.tfrecords", tmp_path, storage_options=seaweed.storage_options
        )
    assert not any(tmp_path.iterdir())
