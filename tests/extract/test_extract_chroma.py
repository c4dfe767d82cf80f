"""Chroma subsampling of the tiles tilestream encodes: 4:4:4 by default, 4:2:0 as an option.

``jpeg_subsampling="420"`` writes what Slideflow writes (smaller tiles); the default
keeps full colour resolution and the hash of runs made before the option existed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tilestream.cli import cli
from tilestream.errors import ConfigError
from tilestream.extract import extract_tiles
from tilestream.extract.config import ExtractConfig
from tilestream.tfrecord import TFRecord, decode_image


def _sampling(jpeg: bytes) -> list[tuple[int, int]]:
    """(horizontal, vertical) sampling factors of each component, from the SOF0 segment."""
    i = jpeg.index(b"\xff\xc0")
    ncomp = jpeg[i + 9]
    return [(jpeg[i + 11 + 3 * k] >> 4, jpeg[i + 11 + 3 * k] & 15) for k in range(ncomp)]


def _records(out: Path) -> list[bytes]:
    (path,) = out.rglob("*.tfrecords")
    return [bytes(r["image_raw"]) for r in TFRecord(path)]


def test_the_default_is_444_and_keeps_the_earlier_hash() -> None:
    cfg = ExtractConfig(tile_px=299, tile_um=302)
    assert cfg.jpeg_subsampling == "444"
    assert cfg.hash() == cfg.replace(jpeg_subsampling="444").hash()
    assert cfg.hash() != cfg.replace(jpeg_subsampling="420").hash()
    assert "jpeg_subsampling" in cfg.to_dict()
    with pytest.raises(ConfigError, match="jpeg_subsampling"):
        cfg.replace(jpeg_subsampling="422")  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "factors"), [("444", (1, 1)), ("420", (2, 2))])
def test_encoded_tiles_have_the_sampling_asked_for(
    cmu_slide: Path, tmp_path: Path, option: str, factors: tuple[int, int]
) -> None:
    result = extract_tiles(
        cmu_slide, tmp_path, tile_px=128, tile_um=128, jpeg_subsampling=option, max_tiles=12
    )
    assert result.status == "done" and result.tiles > 0 and not result.passthrough
    for data in _records(tmp_path):
        luma, *chroma = _sampling(data)
        assert luma == factors and all(c == (1, 1) for c in chroma)
        assert decode_image(data).shape == (128, 128, 3)


def test_420_tiles_are_smaller_and_close_to_the_444_ones(cmu_slide: Path, tmp_path: Path) -> None:
    kw = {"tile_px": 128, "tile_um": 128, "max_tiles": 12}
    extract_tiles(cmu_slide, tmp_path / "a", jpeg_subsampling="444", **kw)  # type: ignore[arg-type]
    extract_tiles(cmu_slide, tmp_path / "b", jpeg_subsampling="420", **kw)  # type: ignore[arg-type]
    full, sub = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert len(full) == len(sub) > 0
    assert sum(map(len, sub)) < 0.9 * sum(map(len, full))
    for a, b in zip(full, sub, strict=True):
        pa, pb = decode_image(a).astype(np.float64), decode_image(b).astype(np.float64)
        psnr = 10 * np.log10(255**2 / max(float(np.mean((pa - pb) ** 2)), 1e-9))
        # the same tissue with its colour detail halved (these tiles are 2x reduced, dense
        # detail: about 30 dB); the mean colour is unchanged
        assert 25 < psnr < 60
        assert np.abs(pa.mean(axis=(0, 1)) - pb.mean(axis=(0, 1))).max() < 1.5


def test_the_cli_option_reaches_the_config(cmu_slide: Path, tmp_path: Path) -> None:
    args = ["extract", str(cmu_slide), "--out", str(tmp_path), "--tile-px", "128"]
    args += ["--tile-um", "128", "--max-tiles", "4", "--jpeg-subsampling", "420", "--no-progress"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    (config,) = tmp_path.rglob("config.json")
    assert json.loads(config.read_text())["config"]["jpeg_subsampling"] == "420"
    assert all(_sampling(d)[0] == (2, 2) for d in _records(tmp_path))
