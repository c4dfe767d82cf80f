"""An output bucket that is missing or refuses the credentials: one clear error, before any work.

SeaweedFS, like some other S3 servers, creates a bucket on its first write, and
AWS would fail only at the first upload, after a slide was extracted. A run
into ``s3://...`` asks first (one request, through a counting proxy here): a
missing bucket is a :class:`~tilestream.errors.StorageNotFoundError` naming the
bucket, refused credentials a :class:`~tilestream.errors.StorageAccessDeniedError`;
nothing is created in the store, no scratch folder is left, and the CLI prints
one line and exits 2. The same on ``gs://`` (fake-gcs-server).
"""

from __future__ import annotations

import itertools
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tilestream.cli import cli
from tilestream.errors import StorageAccessDeniedError, StorageError, StorageNotFoundError
from tilestream.extract import extract_slides
from tilestream.storage import store_for
from tilestream.testing.fakegcs import FakeGcsServer
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer

pytestmark = pytest.mark.testdata

OPTS = {"tile_px": 128, "tile_um": 256}
TILE_ARGS = ["--tile-px", "128", "--tile-um", "256", "--workers", "1", "--no-progress"]
MISSING = "no-such-bucket"
_n = itertools.count()


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer) -> str:
    return seaweed.make_bucket("rextract-bucket-errors")


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(seaweed.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def slide(cmu_slide: Path) -> Path:
    return cmu_slide


def _secrets(seaweed: SeaweedServer) -> list[str]:
    return [seaweed.secret_key, seaweed.read_only_secret, "not-the-secret"]


def _clean(text: str, seaweed: SeaweedServer) -> None:
    for secret in _secrets(seaweed):
        assert secret not in text


def _s3_args(slide: Path, out: str, options: dict[str, object]) -> list[str]:
    args = ["extract", str(slide), "--out", out, *TILE_ARGS]
    for key in ("key", "secret", "endpoint_url"):
        args += ["--storage-option", f"{key}={options[key]}"]
    return [*args, "--storage-option", "client_kwargs.region_name=us-east-1"]


def _bucket_is_missing(seaweed: SeaweedServer, name: str) -> None:
    """The bucket was not created: a read still answers NoSuchBucket."""
    store, key = store_for(f"s3://{name}/probe", seaweed.storage_options)
    with pytest.raises(StorageNotFoundError, match="no such bucket"):
        store.read_range(key, 0, 1)


def _one_error_line(result: object) -> str:
    stderr, stdout = result.stderr, result.stdout  # type: ignore[attr-defined]
    assert result.exit_code == 2, stdout + stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return str(lines[0])


def test_a_missing_bucket_is_reported_before_any_work(
    slide: Path, seaweed: SeaweedServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    options = {**seaweed.storage_options, "endpoint_url": proxy.url}
    scratch = tmp_path / "scratch"
    with pytest.raises(StorageNotFoundError) as info:
        extract_slides(
            [slide], f"s3://{MISSING}/run", workers=1, storage_options=options,
            scratch=scratch, **OPTS,
        )  # fmt: skip
    assert str(info.value) == (
        f"s3://{MISSING}: no such bucket; create it first (tilestream does not create buckets)"
    )
    assert isinstance(info.value, FileNotFoundError)
    assert proxy.counters.requests == 1  # one request, then nothing: no lease, no upload
    assert not scratch.exists() or list(scratch.iterdir()) == []
    _clean("".join(traceback.format_exception(info.value)), seaweed)
    _bucket_is_missing(seaweed, MISSING)


def test_the_cli_says_so_in_one_line(slide: Path, seaweed: SeaweedServer) -> None:
    out = f"s3://{MISSING}/run"
    result = CliRunner().invoke(cli, _s3_args(slide, out, seaweed.storage_options))
    line = _one_error_line(result)
    assert line == (
        f"error: s3://{MISSING}: no such bucket; "
        "create it first (tilestream does not create buckets)"
    )
    _clean(result.stdout + result.stderr, seaweed)
    _bucket_is_missing(seaweed, MISSING)


def test_wrong_credentials_are_refused_before_any_work(
    slide: Path, bucket: str, seaweed: SeaweedServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    prefix = f"t{os.getpid()}-{next(_n)}"
    out = f"s3://{bucket}/{prefix}"
    bad = {**seaweed.storage_options, "secret": "not-the-secret", "endpoint_url": proxy.url}
    # the bucket's HEAD is answered 403 without a body (no error code to say more)
    with pytest.raises(StorageAccessDeniedError, match=r"access denied \(HTTP 403\)") as info:
        extract_slides([slide], out, workers=1, storage_options=bad,
                       scratch=tmp_path / "scratch", **OPTS)  # fmt: skip
    assert str(info.value).startswith(f"s3://{bucket}: ")
    assert proxy.counters.requests == 1  # the bucket's HEAD only
    _clean("".join(traceback.format_exception(info.value)), seaweed)
    store, _ = store_for(f"s3://{bucket}", seaweed.storage_options)
    assert list(store.list(prefix)) == []
    result = CliRunner().invoke(cli, _s3_args(slide, out, bad))
    line = _one_error_line(result)
    assert f"s3://{bucket}: access denied" in line
    _clean(result.stdout + result.stderr, seaweed)
    assert list(store.list(prefix)) == []


def test_a_read_only_identity_is_refused_at_the_lease(
    slide: Path, bucket: str, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """It may read (the check passes); its first write, the lease, is refused: still no work."""
    prefix = f"t{os.getpid()}-{next(_n)}"
    with pytest.raises(StorageAccessDeniedError, match=r"\.lease/0: access denied"):
        extract_slides([slide], f"s3://{bucket}/{prefix}", workers=1,
                       storage_options=seaweed.read_only_options,
                       scratch=tmp_path / "scratch", **OPTS)  # fmt: skip
    store, _ = store_for(f"s3://{bucket}", seaweed.storage_options)
    assert list(store.list(prefix)) == []


@pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes:ResourceWarning")
def test_a_missing_gs_bucket_is_reported_before_any_work(
    slide: Path, fake_gcs: FakeGcsServer, tmp_path: Path
) -> None:
    """gcsfs answers a missing bucket and a missing object alike (404): the bucket is asked for."""
    scratch = tmp_path / "scratch"
    with pytest.raises(StorageError) as info:
        extract_slides([slide], f"gs://{MISSING}/run", workers=1,
                       storage_options=fake_gcs.storage_options, scratch=scratch,
                       **OPTS)  # fmt: skip
    assert isinstance(info.value, StorageNotFoundError)
    assert str(info.value) == (
        f"gs://{MISSING}: no such bucket; create it first (tilestream does not create buckets)"
    )
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert MISSING not in fake_gcs.buckets()
