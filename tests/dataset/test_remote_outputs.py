"""The TFRecord utilities write their outputs to S3 as they write local files.

Every utility (merge, split, transform, shuffle, join, to-images) run from
``s3://`` inputs to ``s3://`` outputs stores the same bytes as the local run
from the local copies; ``shuffle`` and ``join`` read URLs; the CLI passes
``--storage-option``; no secret reaches an output, the console or a log; and
a failure, while reading or while uploading, leaves nothing under the final
key (against the real SeaweedFS, faults from a :class:`FaultProxy`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tilestream.cli import main
from tilestream.dataset.io import (
    join_tfrecord,
    merge_tfrecords,
    shuffle_tfrecord,
    split_tfrecord,
    tfrecord_to_images,
    transform_tfrecord,
)
from tilestream.errors import (
    ConfigError,
    CorruptRecordError,
    MissingDependencyError,
    StorageAccessDeniedError,
    StorageReadOnlyError,
    StorageUnavailableError,
)
from tilestream.storage import FsspecStore, Store, store_for
from tilestream.testing.faultproxy import FaultProxy
from tilestream.testing.seaweedfs import SeaweedServer
from tilestream.tfrecord import TFRecord

OUTPUTS_LOGGER = "tilestream.dataset.outputs"


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer, real_dir: Path) -> str:
    """The real per-slide TFRecords under ``s3://<bucket>/run/``, and a corrupt one."""
    name = seaweed.make_bucket("routs")
    store = store_for(f"s3://{name}", seaweed.storage_options)[0]
    files = sorted(real_dir.glob("*.tfrecords"))
    for f in files:
        store.write_atomic(f"run/{f.name}", f.read_bytes())
    store.write_atomic("bad/corrupt.tfrecords", _corrupt_last_record(files[0]))
    return name


@pytest.fixture(scope="module")
def store(bucket: str, seaweed: SeaweedServer) -> Store:
    return store_for(f"s3://{bucket}", seaweed.storage_options)[0]


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Uploads are staged here; every test leaves it empty, whatever happened."""
    path = tmp_path / "scratch"
    monkeypatch.setenv("TILESTREAM_SCRATCH", os.fspath(path))
    yield path
    assert not path.exists() or list(path.iterdir()) == []


def _corrupt_last_record(path: Path) -> bytes:
    """``path``'s bytes with one byte of its last record's payload flipped (a data CRC error)."""
    with TFRecord(path, create_index=False) as tfr:
        offset = int(tfr.index[-1, 0])
    data = bytearray(path.read_bytes())
    data[offset + 12 + 5] ^= 0xFF
    return bytes(data)


def _index(data: bytes) -> dict[str, bytes]:
    """An index's arrays but its mtime (which records when the file was written)."""
    with np.load(io.BytesIO(data)) as npz:
        return {k: npz[k].tobytes() for k in npz.files if k != "tfrecord_mtime_ns"}


def assert_same_output(store: Store, key: str, local: Path) -> None:
    """The object at ``key`` holds ``local``'s bytes; its index is the local index's."""
    assert store.read(key) == local.read_bytes()
    index = local.with_name(local.name.rsplit(".", 1)[0] + ".index.npz")
    stored = _index(store.read(key.rsplit(".", 1)[0] + ".index.npz"))
    assert stored == _index(index.read_bytes())
    assert np.frombuffer(stored["tfrecord_size"], np.int64)[0] == local.stat().st_size


def test_merge_and_transform_s3_to_s3_equal_local(
    bucket: str, store: Store, seaweed: SeaweedServer, real_dir: Path, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    local = sorted(real_dir.glob("*.tfrecords"))
    out = f"s3://{bucket}/out1/merged.tfrecords"
    n = merge_tfrecords(f"s3://{bucket}/run/", out, storage_options=opts)
    assert n == merge_tfrecords(local, tmp_path / "merged.tfrecords") > 0
    assert_same_output(store, "out1/merged.tfrecords", tmp_path / "merged.tfrecords")
    with pytest.raises(ConfigError, match=re.escape(f"s3://{bucket}/out1/merged.tfrecords")):
        merge_tfrecords(f"s3://{bucket}/run/", out, storage_options=opts)  # exists
    with pytest.raises(ConfigError, match="one of the inputs"):
        merge_tfrecords([out], out, overwrite=True, storage_options=opts)
    assert merge_tfrecords(f"s3://{bucket}/run/", out, overwrite=True, storage_options=opts) == n

    src = f"s3://{bucket}/run/{local[0].name}"
    t_out = f"s3://{bucket}/out1/t.tfrecords"
    transform_tfrecord(src, t_out, "renamed", resize=32, img_format="png", storage_options=opts)
    transform_tfrecord(local[0], tmp_path / "t.tfrecords", "renamed", resize=32, img_format="png")
    assert_same_output(store, "out1/t.tfrecords", tmp_path / "t.tfrecords")
    # in place: the object is replaced by its transformed copy
    transform_tfrecord(t_out, t_out, hue_shift=0.1, storage_options=opts)
    transform_tfrecord(tmp_path / "t.tfrecords", tmp_path / "t.tfrecords", hue_shift=0.1)
    assert_same_output(store, "out1/t.tfrecords", tmp_path / "t.tfrecords")


def test_split_s3_to_s3_equals_local(
    bucket: str, store: Store, seaweed: SeaweedServer, real_dir: Path, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    merged = tmp_path / "merged.tfrecords"
    merge_tfrecords(sorted(real_dir.glob("*.tfrecords")), merged)
    store.write_atomic("in2/merged.tfrecords", merged.read_bytes())
    counts = split_tfrecord(
        f"s3://{bucket}/in2/merged.tfrecords", f"s3://{bucket}/out2/split", storage_options=opts
    )
    assert counts == split_tfrecord(merged, tmp_path / "split") and len(counts) == 3
    local = sorted(p.name for p in (tmp_path / "split").iterdir())
    keys = sorted(store.list("out2/split"))
    assert keys == [f"out2/split/{name}" for name in local]
    for name in local:
        if name.endswith(".tfrecords"):
            assert_same_output(store, f"out2/split/{name}", tmp_path / "split" / name)
    with pytest.raises(ConfigError, match="output exists"):
        split_tfrecord(
            f"s3://{bucket}/in2/merged.tfrecords", f"s3://{bucket}/out2/split", storage_options=opts
        )


def test_shuffle_and_join_read_and_write_s3_like_local(
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    real_dir: Path,
    tfrecords_dir: Path,
    tmp_path: Path,
) -> None:
    opts = seaweed.storage_options
    local = sorted(real_dir.glob("*.tfrecords"))
    src = f"s3://{bucket}/run/{local[0].name}"
    n = shuffle_tfrecord(
        src, output=f"s3://{bucket}/out3/s.tfrecords", seed=5, storage_options=opts
    )
    assert n == shuffle_tfrecord(local[0], output=tmp_path / "s.tfrecords", seed=5) > 1
    assert_same_output(store, "out3/s.tfrecords", tmp_path / "s.tfrecords")
    assert (tmp_path / "s.tfrecords").read_bytes() != local[0].read_bytes()  # shuffled
    # a GZIP object (real data) shuffled in place stays GZIP, as a local file does
    gz = tfrecords_dir / "tfx_penguin_train_data_tfrecord-00000-of-00001.gz"
    store.write_atomic("out3/penguin.tfrecord.gz", gz.read_bytes())
    shutil.copy(gz, tmp_path / "penguin.tfrecord.gz")
    shuffle_tfrecord(f"s3://{bucket}/out3/penguin.tfrecord.gz", seed=1, storage_options=opts)
    assert shuffle_tfrecord(tmp_path / "penguin.tfrecord.gz", seed=1) == 234
    shuffled = store.read("out3/penguin.tfrecord.gz")
    assert shuffled[:2] == b"\x1f\x8b" and shuffled != gz.read_bytes()
    assert shuffled == (tmp_path / "penguin.tfrecord.gz").read_bytes()
    # in place in the bucket
    store.write_atomic("out3/inplace.tfrecords", local[1].read_bytes())
    shuffle_tfrecord(f"s3://{bucket}/out3/inplace.tfrecords", seed=7, storage_options=opts)
    shuffle_tfrecord(local[1], output=tmp_path / "inplace.tfrecords", seed=7)
    assert_same_output(store, "out3/inplace.tfrecords", tmp_path / "inplace.tfrecords")

    out = f"s3://{bucket}/out3/joined.tfrecords"
    total = join_tfrecord(f"s3://{bucket}/run/", out, "all", seed=3, storage_options=opts)
    assert total == join_tfrecord(real_dir, tmp_path / "joined.tfrecords", "all", seed=3)
    assert total == sum(len(TFRecord(f, create_index=False)) for f in local)
    assert_same_output(store, "out3/joined.tfrecords", tmp_path / "joined.tfrecords")
    with pytest.raises(ConfigError, match="output exists"):
        join_tfrecord(f"s3://{bucket}/run/", out, seed=3, storage_options=opts)


def test_to_images_s3_to_s3_equals_local(
    bucket: str, store: Store, seaweed: SeaweedServer, real_dir: Path, tmp_path: Path
) -> None:
    opts = seaweed.storage_options
    first = sorted(real_dir.glob("*.tfrecords"))[0]
    dest = f"s3://{bucket}/out4/tiles"
    n = tfrecord_to_images(f"s3://{bucket}/run/{first.name}", dest, storage_options=opts)
    assert n == tfrecord_to_images(first, tmp_path / "tiles") > 0
    local = sorted(p for p in (tmp_path / "tiles").rglob("*") if p.is_file())
    keys = sorted(store.list("out4/tiles"))
    assert keys == [f"out4/tiles/{p.relative_to(tmp_path / 'tiles').as_posix()}" for p in local]
    assert all(store.read(k) == p.read_bytes() for k, p in zip(keys, local, strict=True))
    # again: the same tiles are fine; a tile with other content is refused unless overwrite
    assert tfrecord_to_images(first, dest, storage_options=opts) == n
    store.write_atomic(keys[0], b"other")
    with pytest.raises(ConfigError, match="other content"):
        tfrecord_to_images(first, dest, storage_options=opts)
    assert store.read(keys[0]) == b"other"
    tfrecord_to_images(first, dest, overwrite=True, storage_options=opts)
    assert store.read(keys[0]) == local[0].read_bytes()


def _cli(args: list[str]) -> None:
    assert main(args) == 0, args


def test_cli_writes_s3_outputs_without_leaking_the_secret(
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    real_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    options = seaweed.storage_options
    opts = []
    for k in ("key", "secret", "endpoint_url"):
        opts += ["--storage-option", f"{k}={options[k]}"]
    local = sorted(real_dir.glob("*.tfrecords"))
    root = f"s3://{bucket}/out5"
    _cli(["tfrecord", "merge", f"s3://{bucket}/run/", "-o", f"{root}/m.tfrecords", *opts])
    _cli(["tfrecord", "split", f"{root}/m.tfrecords", f"{root}/split", *opts])
    first = f"s3://{bucket}/run/{local[0].name}"
    _cli(["tfrecord", "shuffle", first, "-o", f"{root}/s.tfrecords", "--seed", "2", *opts])
    _cli(["tfrecord", "join", f"s3://{bucket}/run/", f"{root}/j.tfrecords", "--seed", "4", *opts])
    _cli(["tfrecord", "transform", first, f"{root}/t.tfrecords", "--slide", "x", *opts])
    _cli(["tfrecord", "to-images", first, "-o", f"{root}/tiles", *opts])

    merge_tfrecords(local, tmp_path / "m.tfrecords")
    assert_same_output(store, "out5/m.tfrecords", tmp_path / "m.tfrecords")
    split_tfrecord(tmp_path / "m.tfrecords", tmp_path / "split")
    for p in (tmp_path / "split").glob("*.tfrecords"):
        assert_same_output(store, f"out5/split/{p.name}", p)
    shuffle_tfrecord(local[0], output=tmp_path / "s.tfrecords", seed=2)
    assert_same_output(store, "out5/s.tfrecords", tmp_path / "s.tfrecords")
    join_tfrecord(real_dir, tmp_path / "j.tfrecords", seed=4)
    assert_same_output(store, "out5/j.tfrecords", tmp_path / "j.tfrecords")
    transform_tfrecord(local[0], tmp_path / "t.tfrecords", "x")
    assert_same_output(store, "out5/t.tfrecords", tmp_path / "t.tfrecords")
    assert len(list(store.list("out5/tiles"))) == tfrecord_to_images(local[0], tmp_path / "i")

    captured = capsys.readouterr()
    assert f"{root}/j.tfrecords" in captured.out.replace("\n", "")
    secret = seaweed.secret_key
    assert secret not in captured.out + captured.err + caplog.text
    assert any(r.name == OUTPUTS_LOGGER for r in caplog.records)  # uploads are logged
    for key in store.list("out5"):
        assert secret.encode() not in store.read(key)


def test_unwritable_outputs_give_clear_errors(
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    real_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = sorted(real_dir.glob("*.tfrecords"))[0]
    http = f"{seaweed.filer_url}/buckets/{bucket}/out6/m.tfrecords"
    with pytest.raises(StorageReadOnlyError, match="read-only") as ro:
        merge_tfrecords([first], http)
    assert "out6/m.tfrecords" in str(ro.value)
    assert main(["tfrecord", "shuffle", os.fspath(first), "-o", http]) == 1
    assert "read-only" in capsys.readouterr().err
    # credentials that may only read: refused at the upload, nothing left, no secret
    with pytest.raises(StorageAccessDeniedError) as denied:
        merge_tfrecords(
            [first], f"s3://{bucket}/out6/m.tfrecords", storage_options=seaweed.read_only_options
        )
    assert f"{bucket}/out6/m.tfrecords" in str(denied.value)
    assert seaweed.read_only_secret not in str(denied.value)
    assert not list(store.list("out6"))
    # the extra a protocol needs, missing: the install hint
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(MissingDependencyError, match=r"tilestream\[gcs\]"):
        join_tfrecord(real_dir, "gs://bucket/j.tfrecords")


def test_file_urls_are_local_outputs(real_dir: Path, tmp_path: Path) -> None:
    local = sorted(real_dir.glob("*.tfrecords"))
    merge_tfrecords(local, (tmp_path / "m.tfrecords").as_uri())
    merge_tfrecords(local, tmp_path / "l.tfrecords")
    assert (tmp_path / "m.tfrecords").read_bytes() == (tmp_path / "l.tfrecords").read_bytes()
    assert (tmp_path / "m.index.npz").exists()
    split_tfrecord(tmp_path / "m.tfrecords", (tmp_path / "split").as_uri())
    assert len(list((tmp_path / "split").glob("*.tfrecords"))) == 3
    with pytest.raises(ConfigError, match="one of the inputs"):
        merge_tfrecords([tmp_path / "m.tfrecords"], (tmp_path / "m.tfrecords").as_uri())


def test_an_output_file_url_needs_a_name(
    bucket: str, seaweed: SeaweedServer, real_dir: Path
) -> None:
    first = sorted(real_dir.glob("*.tfrecords"))[0]
    for url in (f"s3://{bucket}/out10/", f"s3://{bucket}"):
        with pytest.raises(ConfigError, match="needs a name") as info:
            shuffle_tfrecord(first, output=url, storage_options=seaweed.storage_options)
        assert bucket in str(info.value)


def test_a_corrupt_record_uploads_nothing(
    bucket: str, store: Store, seaweed: SeaweedServer
) -> None:
    """The last record fails its CRC after the others were written: no output appears."""
    opts = seaweed.storage_options
    bad = f"s3://{bucket}/bad/corrupt.tfrecords"
    before = store.read("bad/corrupt.tfrecords")
    out = f"s3://{bucket}/out7"
    calls: list[Callable[[], Any]] = [
        lambda: merge_tfrecords([bad], f"{out}/m.tfrecords", storage_options=opts),
        lambda: split_tfrecord(bad, f"{out}/split", storage_options=opts),
        lambda: transform_tfrecord(bad, f"{out}/t.tfrecords", "x", storage_options=opts),
        lambda: shuffle_tfrecord(bad, output=f"{out}/s.tfrecords", storage_options=opts),
        lambda: shuffle_tfrecord(bad, storage_options=opts),  # in place
        lambda: join_tfrecord(f"s3://{bucket}/bad/", f"{out}/j.tfrecords", storage_options=opts),
        lambda: tfrecord_to_images(bad, f"{out}/tiles", storage_options=opts),
    ]
    for call in calls:
        with pytest.raises(CorruptRecordError, match=re.escape("bad/corrupt.tfrecords")):
            call()
    assert list(store.list("out7")) == []
    assert store.read("bad/corrupt.tfrecords") == before
    assert list(store.list("bad")) == ["bad/corrupt.tfrecords"]


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(seaweed.endpoint_url) as proxy:
        yield proxy


class _OnUpload(logging.Handler):
    """Runs ``action`` when the first upload starts (the sink logs it just before)."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self.action = action
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and record.getMessage().startswith("uploading"):
            self.fired = True
            self.action()


@pytest.fixture
def on_upload(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[Callable[[], None]], None]]:
    caplog.set_level(logging.INFO, logger=OUTPUTS_LOGGER)
    logger = logging.getLogger(OUTPUTS_LOGGER)
    handlers: list[logging.Handler] = []

    def install(action: Callable[[], None]) -> None:
        handlers.append(_OnUpload(action))
        logger.addHandler(handlers[-1])

    yield install
    for h in handlers:
        logger.removeHandler(h)


def _big_inputs(real_dir: Path) -> list[Path]:
    """The real TFRecords, repeated until a merge of them is over two upload parts (16 MiB)."""
    files = sorted(real_dir.glob("*.tfrecords"))
    size = sum(f.stat().st_size for f in files)
    return files * (((20 << 20) // size) + 1)


def _after_first_part(proxy: FaultProxy, action: Callable[[], None]) -> Callable[[], None]:
    """At the first upload: wait (on a thread) until a whole part went through, then ``action``."""

    def start() -> None:
        sent = proxy.counters.bytes_up

        def wait() -> None:
            deadline = time.monotonic() + 60
            while proxy.counters.bytes_up < sent + (8 << 20) and time.monotonic() < deadline:
                time.sleep(0.001)
            action()

        threading.Thread(target=wait, daemon=True).start()

    return start


def _pending_uploads(store: Store, bucket: str, prefix: str) -> list[str]:
    """Keys under ``prefix`` with a multipart upload begun and neither completed nor aborted."""
    uploads = cast(FsspecStore, store).fs.list_multipart_uploads(bucket)
    return [u["Key"] for u in uploads if u["Key"].startswith(prefix)]


def test_a_fault_mid_upload_aborts_it_and_the_rerun_gives_the_same_bytes(
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
    real_dir: Path,
    tmp_path: Path,
    on_upload: Callable[[Callable[[], None]], None],
) -> None:
    """Part 2 of the upload fails: it is aborted (nothing pending) and run again from the file."""
    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    inputs = _big_inputs(real_dir)
    proxy.latency = 0.02
    on_upload(_after_first_part(proxy, lambda: proxy.fail_next(1, status=503)))
    merge_tfrecords(inputs, f"s3://{bucket}/out9/big.tfrecords", storage_options=opts)
    assert proxy.counters.failures == 1
    merge_tfrecords(inputs, tmp_path / "big.tfrecords")
    assert (tmp_path / "big.tfrecords").stat().st_size > 16 << 20
    assert_same_output(store, "out9/big.tfrecords", tmp_path / "big.tfrecords")
    assert _pending_uploads(store, bucket, "out9/") == []


def test_a_store_down_mid_upload_leaves_nothing_under_the_key(
    bucket: str,
    store: Store,
    seaweed: SeaweedServer,
    proxy: FaultProxy,
    real_dir: Path,
    on_upload: Callable[[Callable[[], None]], None],
) -> None:
    """After the first part every request fails: the upload is given up after its retries,
    with a clear error; no object is under the key (or its index's)."""
    opts = {**seaweed.storage_options, "endpoint_url": proxy.url}
    proxy.latency = 0.02
    on_upload(_after_first_part(proxy, lambda: proxy.fail_next(10_000, status=500)))
    with pytest.raises(StorageUnavailableError, match=re.escape("out8/big.tfrecords")) as info:
        merge_tfrecords(
            _big_inputs(real_dir), f"s3://{bucket}/out8/big.tfrecords", storage_options=opts
        )
    proxy.clear()
    assert seaweed.secret_key not in str(info.value)
    assert proxy.counters.failures >= 3 and proxy.counters.bytes_up > 8 << 20
    assert list(store.list("out8")) == []
