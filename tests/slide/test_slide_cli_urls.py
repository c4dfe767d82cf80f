"""``tilestream slide info | thumbnail | region`` on a slide in S3, credentials from the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilestream.cli import main
from tilestream.slide import open_slide
from tilestream.storage import store_for
from tilestream.testing.seaweedfs import SeaweedServer

CMU = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def slide_url(seaweed: SeaweedServer, slides_dir: Path) -> str:
    bucket = seaweed.make_bucket("slidecli")
    store, key = store_for(f"s3://{bucket}/a/{CMU}", seaweed.storage_options)
    store.write_atomic(key, (slides_dir / CMU).read_bytes())
    return f"s3://{bucket}/a/{CMU}"


@pytest.fixture
def aws_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials where a user keeps them: the environment, not the command line."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)


def test_info_thumbnail_and_region_from_s3(
    slide_url: str,
    seaweed: SeaweedServer,
    slides_dir: Path,
    tmp_path: Path,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = ["--storage-option", f"endpoint_url={seaweed.endpoint_url}"]
    assert main(["slide", "info", "--json", *endpoint, slide_url]) == 0
    info = json.loads(capsys.readouterr().out)
    with open_slide(slides_dir / CMU) as local:
        assert info["dimensions"] == list(local.dimensions)
        assert info["properties"] == dict(local.properties)
        expected = local.read_region((500, 700), 0, (300, 200))
    out = tmp_path / "region.png"
    args = ["--x", "500", "--y", "700", "--width", "300", "--height", "200", "--level", "0"]
    assert main(["slide", "region", *args, "--out", str(out), *endpoint, slide_url]) == 0
    with Image.open(out) as written:
        assert np.array_equal(np.asarray(written), np.asarray(expected))
    thumb = tmp_path / "thumb.png"
    assert (
        main(["slide", "thumbnail", "--size", "256", "--out", str(thumb), *endpoint, slide_url])
        == 0
    )
    with Image.open(thumb) as small:
        assert max(small.size) == 256
    assert seaweed.secret_key not in capsys.readouterr().out


def test_missing_object_and_bad_option_are_one_line_errors(
    slide_url: str, seaweed: SeaweedServer, aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = ["--storage-option", f"endpoint_url={seaweed.endpoint_url}"]
    missing = slide_url.replace(CMU, "nope.svs")
    assert main(["slide", "info", *endpoint, missing]) == 1
    err = capsys.readouterr().err
    assert "nope.svs" in err and "Traceback" not in err
    assert main(["slide", "info", "--storage-option", "endpoint_url", slide_url]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_local_paths_still_work(slides_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "with space.svs"
    shutil.copy2(slides_dir / CMU, copy)
    assert main(["slide", "info", str(copy)]) == 0
