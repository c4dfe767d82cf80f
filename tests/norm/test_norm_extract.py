"""Stain normalisation during extraction: ``normalizer=``, ``normalizer_source=`` and the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilestream.cli import main
from tilestream.errors import ConfigError
from tilestream.extract import ExtractConfig, extract_tiles
from tilestream.norm import StainNormalizer, build_normalizer
from tilestream.tfrecord import TFRecord, decode_image

pytestmark = pytest.mark.testdata

# 256 um at 0.499 um/px: 513 px read and resized to 256 px; a 4 x 5 grid on CMU-1-Small-Region.
# Pen detection off: the slide's inked margins would take a few of its few tiles.
OPTIONS = {"tile_px": 256, "tile_um": 256, "img_format": "png", "pen": "off"}


def _tiles(run: Path, name: str) -> dict[tuple[int, int], np.ndarray]:
    with TFRecord(run / f"{name}.tfrecords") as tfr:
        return {
            (int(r["loc_x"]), int(r["loc_y"])): decode_image(r["image_raw"])
            for r in (tfr[i] for i in range(len(tfr)))
        }


@pytest.fixture(scope="module")
def plain(
    cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[int, int], np.ndarray]:
    out = tmp_path_factory.mktemp("plain")
    result = extract_tiles(cmu_slide, out, **OPTIONS)
    assert result.status == "done", result.error
    return _tiles(out / "256px_256um", "CMU-1-Small-Region")


@pytest.mark.parametrize(("method", "threads"), [("macenko", 1), ("reinhard", 2)])
def test_extraction_normalises_every_tile_before_encoding(
    method: str, threads: int, cmu_slide: Path, plain: dict, tmp_path: Path
) -> None:
    result = extract_tiles(cmu_slide, tmp_path, threads=threads, normalizer=method, **OPTIONS)
    assert result.status == "done", result.error
    run = tmp_path / "256px_256um"
    tiles = _tiles(run, "CMU-1-Small-Region")
    assert tiles.keys() == plain.keys() and len(tiles) > 5
    norm = StainNormalizer(method)
    changed = 0
    for loc, tile in tiles.items():
        # PNG is lossless: the stored tile is exactly the normalised plain tile.
        np.testing.assert_array_equal(tile, norm.transform(plain[loc]))
        changed += not np.array_equal(tile, plain[loc])
    assert changed >= len(tiles) - norm.skipped and changed > 0
    written = json.loads((run / "config.json").read_text())
    config = written["config"]
    assert config["normalizer"] == method and config["normalizer_source"] is None
    assert written["hash"] != ExtractConfig(**OPTIONS).hash()
    state = json.loads((run / "state" / "CMU-1-Small-Region.json").read_text())
    assert state["timings"]["normalize"] > 0


def test_cli_normalizer_source_fits_the_reference(
    cmu_slide: Path, plain: dict, tcga_tiles: np.ndarray, tmp_path: Path
) -> None:
    ref = tmp_path / "reference.png"
    Image.fromarray(np.ascontiguousarray(tcga_tiles[0])).save(ref)
    out = tmp_path / "out"
    code = main(
        [
            "extract", str(cmu_slide), "--out", str(out), "--tile-px", "256", "--tile-um", "256",
            "--img-format", "png", "--normalizer", "reinhard", "--normalizer-source", str(ref),
            "--workers", "1", "--no-progress",
        ]
    )  # fmt: skip
    assert code in (0, None)
    run = out / "256px_256um"
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["normalizer"], config["normalizer_source"]) == ("reinhard", str(ref))
    norm = build_normalizer("reinhard", ref)
    assert norm.get_fit() != StainNormalizer("reinhard").get_fit()
    tiles = _tiles(run, "CMU-1-Small-Region")
    for loc, tile in tiles.items():
        np.testing.assert_array_equal(tile, norm.transform(plain[loc]))
    # The CMU tiles took the TCGA reference's colour: their mean LAB is close to its target.
    stats = StainNormalizer("reinhard").fit(list(tiles.values())).get_fit()["target_means"]
    assert np.abs(np.subtract(stats, norm.get_fit()["target_means"])).max() < 3


def test_a_reference_without_tissue_fails_the_slide_clearly(
    cmu_slide: Path, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(blank)
    result = extract_tiles(
        cmu_slide, tmp_path / "out", normalizer="macenko", normalizer_source=blank, **OPTIONS
    )
    assert result.status == "failed"
    assert "no tissue" in result.error and "blank.png" in result.error


def test_config_checks_the_normalizer_options() -> None:
    with pytest.raises(ConfigError, match="normalizer must be one of"):
        ExtractConfig(tile_px=256, tile_um=128, normalizer="fancy")
    with pytest.raises(ConfigError, match="normalizer_source needs a normalizer"):
        ExtractConfig(tile_px=256, tile_um=128, normalizer_source="ref.png")
    a = ExtractConfig(
        tile_px=256, tile_um=128, normalizer="macenko", normalizer_source=Path("a.png")
    )
    assert a.normalizer_source == "a.png"
    assert a.hash() != a.replace(normalizer_source="b.png").hash()
    assert a.hash() != a.replace(normalizer="vahadane").hash()
