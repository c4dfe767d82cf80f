"""Extraction of real slides end to end: outputs, pixels, resume, batches and bad input.

The tests that take ``storage`` run again with the slides read from SeaweedFS (by S3
URL and by the filer's HTTP URL), outputs in the local ``tmp_path``, and give the
same outputs byte for byte (``tests/extract/conftest.py``). Tests of the outputs and
pixels and of resuming run over both; those of the options run over S3 only, to keep
the suite's time down (the options act on pixels already read, whichever the store).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from _remote import Remote, storage_kinds
from tilestream.errors import ConfigError, ExtractionError
from tilestream.extract import ExtractConfig, extract_slides, extract_tiles
from tilestream.tfrecord import TFRecord, decode_image, load_index


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _coords(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_outputs_are_complete_and_consistent(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    result = extract_tiles(slide, tmp_path, tile_px=256, tile_um=128, **storage.kw)
    assert result.status == "done", result.error
    run = tmp_path / "256px_128um"
    name = "CMU-1-Small-Region"
    for rel in (
        f"{name}.tfrecords",
        f"{name}.index.npz",
        f"{name}.coords.csv",
        "manifest.json",
        "config.json",
        f"state/{name}.json",
        f"state/{name}.rejected.csv",
        f"previews/{name}.jpg",
        "summary.json",
        "report.html",
    ):
        assert (run / rel).is_file(), rel
    assert not list(run.rglob("*.tmp"))
    rows = _coords(run / f"{name}.coords.csv")
    manifest = json.loads((run / "manifest.json").read_text())
    state = json.loads((run / f"state/{name}.json").read_text())
    assert manifest == {f"{name}.tfrecords": {"total": len(rows)}}
    assert state["status"] == "done" and state["tiles"] == len(rows) == result.tiles
    # grid: 2220x2967 at 0.499 um/px, 128 um -> 256 px tiles: 8 x 11 positions
    assert state["grid"] == 8 * 11
    rejected = _coords(run / f"state/{name}.rejected.csv")
    assert len(rows) + len(rejected) == state["grid"]
    assert 0 < len(rows) < state["grid"]  # some background is rejected
    with TFRecord(run / f"{name}.tfrecords") as tfr:
        assert len(tfr) == len(rows)
        for i in (0, len(rows) // 2, len(rows) - 1):
            rec = tfr[i]
            assert rec["slide"] == name
            assert (int(rec["loc_x"]), int(rec["loc_y"])) == (
                int(rows[i]["loc_x"]),
                int(rows[i]["loc_y"]),
            )
            # Slideflow's convention: loc is the tile centre in level-0 pixels
            assert int(rows[i]["loc_x"]) == int(rows[i]["x"]) + int(rows[i]["width"]) // 2
            assert decode_image(rec["image_raw"]).shape == (256, 256, 3)
    index = load_index(run / f"{name}.tfrecords")
    locs = np.asarray(index.locations)
    assert locs.shape == (len(rows), 2)
    assert locs[:, 0].tolist() == [int(r["loc_x"]) for r in rows]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hash"] == ExtractConfig(tile_px=256, tile_um=128).hash()
    assert "tilestream" in cfg["versions"] and "openslide" in cfg["versions"]
    with Image.open(run / f"previews/{name}.jpg") as preview:
        assert preview.size[0] > 100
    html = (run / "report.html").read_text()
    assert f"previews/{name}.jpg" in html


def _compare_with_openslide(slide: Path, run: Path, tile_px: int) -> list[float]:
    rows = _coords(run / f"{slide.stem}.coords.csv")
    osr = openslide.OpenSlide(str(slide))
    psnrs = []
    with TFRecord(run / f"{slide.stem}.tfrecords") as tfr:
        for i in range(0, len(rows), max(1, len(rows) // 8)):
            x, y, size = int(rows[i]["x"]), int(rows[i]["y"]), int(rows[i]["width"])
            ref = osr.read_region((x, y), 0, (size, size)).convert("RGB")
            if size != tile_px:
                ref = ref.resize((tile_px, tile_px), Image.Resampling.LANCZOS)
            psnrs.append(_psnr(decode_image(tfr[i]["image_raw"]), np.asarray(ref)))
    osr.close()
    return psnrs


def test_pixels_match_openslide(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    """Tiles read back equal the same region read through OpenSlide (and resized the same way).

    At native resolution (no resize) every sampled tile is above 40 dB at JPEG
    quality 95. Resized tiles of this slide carry more high-frequency detail per
    pixel: JPEG quality 95 alone costs them 36-50 dB (measured on this slide
    with the tile re-encoded and compared to itself), so the bound there is
    35 dB per tile.
    """
    slide = storage.name(cmu_slide)
    native = extract_tiles(
        slide, tmp_path, tile_px=256, tile_um=256 * 0.499, quality=95, **storage.kw
    )
    assert native.status == "done", native.error
    assert native.extract_px == 256 and native.level == 0
    psnr_native = _compare_with_openslide(cmu_slide, tmp_path / "256px_127.744um", 256)
    assert min(psnr_native) > 40.0, psnr_native

    resized = extract_tiles(slide, tmp_path, tile_px=299, tile_um=302, quality=95, **storage.kw)
    assert resized.status == "done", resized.error
    assert resized.extract_px == round(302 / 0.499)
    psnr_resized = _compare_with_openslide(cmu_slide, tmp_path / "299px_302um", 299)
    assert min(psnr_resized) > 35.0, psnr_resized


def test_rerun_skips_and_config_change_reextracts(
    cmu_slide: Path, tmp_path: Path, storage: Remote
) -> None:
    slide = storage.name(cmu_slide)
    first = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, **storage.kw)
    tfr = tmp_path / "128px_256um" / "CMU-1-Small-Region.tfrecords"
    before = (tfr.stat().st_mtime_ns, tfr.read_bytes())
    again = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, **storage.kw)
    assert again.status == "skipped" and again.tiles == first.tiles
    assert (tfr.stat().st_mtime_ns, tfr.read_bytes()) == before
    changed = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, quality=60, **storage.kw)
    assert changed.status == "done" and changed.config_hash != first.config_hash
    assert tfr.read_bytes() != before[1]
    forced = extract_tiles(
        slide, tmp_path, tile_px=128, tile_um=256, quality=60, overwrite=True, **storage.kw
    )
    assert forced.status == "done"


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_to_images(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    slide = storage.name(cmu_slide)
    r = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, to_images=True, **storage.kw)
    folder = tmp_path / "128px_256um" / "CMU-1-Small-Region"
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == r.tiles > 0
    rows = _coords(tmp_path / "128px_256um" / "CMU-1-Small-Region.coords.csv")
    names = {f"CMU-1-Small-Region_{row['loc_x']}_{row['loc_y']}.jpg" for row in rows}
    assert {f.name for f in files} == names
    assert np.asarray(Image.open(files[0])).shape == (128, 128, 3)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_png_and_filters_change_selection(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    slide = storage.name(cmu_slide)
    loose = extract_tiles(
        slide,
        tmp_path / "a",
        tile_px=128,
        tile_um=256,
        tissue_method="none",
        grayspace_fraction=None,
        pen="off",
        **storage.kw,
    )
    strict = extract_tiles(
        slide, tmp_path / "b", tile_px=128, tile_um=256, whitespace_fraction=0.3, **storage.kw
    )
    assert loose.tiles == loose.grid  # no filter: every grid tile
    assert (
        strict.tiles < loose.tiles and strict.rejected["tissue"] + strict.rejected["whitespace"] > 0
    )
    png = extract_tiles(
        slide, tmp_path / "c", tile_px=64, tile_um=128, img_format="png", max_tiles=5, **storage.kw
    )
    assert png.tiles == 5 and png.rejected["max_tiles"] > 0
    with TFRecord(tmp_path / "c" / "64px_128um" / "CMU-1-Small-Region.tfrecords") as tfr:
        assert tfr.img_format == "png"
        assert decode_image(tfr[0]["image_raw"]).shape == (64, 64, 3)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_blur_qc_flags_and_filters(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    slide = storage.name(cmu_slide)
    flagged = extract_tiles(
        slide, tmp_path / "a", tile_px=128, tile_um=256, blur_threshold=1e9, **storage.kw
    )
    assert flagged.status == "done" and flagged.blurry == flagged.tiles and flagged.blurry_slide
    rows = _coords(tmp_path / "a" / "128px_256um" / "CMU-1-Small-Region.coords.csv")
    assert all(r["blurry"] == "1" and float(r["blur"]) > 0 for r in rows)
    none = extract_tiles(
        slide, tmp_path / "b", tile_px=128, tile_um=256, blur_threshold=1.0, **storage.kw
    )
    assert none.blurry == 0
    filtered = extract_tiles(
        slide,
        tmp_path / "c",
        tile_px=128,
        tile_um=256,
        blur_threshold=1e9,
        blur_filter=True,
        **storage.kw,
    )
    assert filtered.status == "failed" and "blurry" in (filtered.error or "")


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_rois_inside_and_outside(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    slide = storage.name(cmu_slide)
    roi = tmp_path / "roi.geojson"
    left = [[0, 0], [1100, 0], [1100, 2967], [0, 2967], [0, 0]]
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "left"}, "geometry": {"type": "Polygon", "coordinates": [left]}}
    ]}))  # fmt: skip
    common = {"tile_px": 128, "tile_um": 128, "tissue_method": "none", "grayspace_fraction": None,
              "pen": "off"}  # fmt: skip
    inside = extract_tiles(slide, tmp_path / "in", roi=roi, **common, **storage.kw)
    outside = extract_tiles(
        slide, tmp_path / "out", roi=roi, roi_method="outside", **common, **storage.kw
    )
    ignored = extract_tiles(
        slide, tmp_path / "ig", roi=roi, roi_method="ignore", **common, **storage.kw
    )
    rows_in = _coords(tmp_path / "in" / "128px_128um" / "CMU-1-Small-Region.coords.csv")
    rows_out = _coords(tmp_path / "out" / "128px_128um" / "CMU-1-Small-Region.coords.csv")
    assert all(int(r["loc_x"]) < 1100 for r in rows_in)
    assert all(int(r["loc_x"]) >= 1100 for r in rows_out)
    assert inside.tiles + outside.tiles == ignored.tiles == ignored.grid
    frac = extract_tiles(slide, tmp_path / "fr", roi=roi, roi_fraction=1.0, **common, **storage.kw)
    rows_fr = _coords(tmp_path / "fr" / "128px_128um" / "CMU-1-Small-Region.coords.csv")
    assert (
        all(int(r["x"]) + int(r["width"]) <= 1100 + 8 for r in rows_fr)
        and frac.tiles <= inside.tiles
    )


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_bad_rois_fail_the_slide_clearly(cmu_slide: Path, tmp_path: Path, storage: Remote) -> None:
    slide = storage.name(cmu_slide)
    far = tmp_path / "far.geojson"
    ring = [[50000, 50000], [60000, 50000], [60000, 60000], [50000, 50000]]
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    r = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, roi=far, **storage.kw)
    assert r.status == "failed" and "outside the slide" in (r.error or "")
    bad = tmp_path / "bad.csv"
    bad.write_text("ROI_name,X_base\na,1\n")
    r2 = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, roi=bad, **storage.kw)
    assert r2.status == "failed" and "bad.csv" in (r2.error or "") and r2.error_type == "ROIError"
    r3 = extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, roi_method="inside", **storage.kw)
    assert r3.status == "failed" and "no ROI" in (r3.error or "")


def test_upsampling_and_missing_mpp_are_refused(
    cmu_slide: Path, slides_dir: Path, tmp_path: Path
) -> None:
    up = extract_tiles(cmu_slide, tmp_path, tile_px=512, tile_um=100)
    assert up.status == "failed" and "upsampling" in (up.error or "")
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    no_mpp = extract_tiles(tcga, tmp_path, tile_px=256, tile_um=256)
    assert (
        no_mpp.status == "failed"
        and no_mpp.error_type == "MissingMPPError"
        and "mpp" in (no_mpp.error or "")
    )
    fixed = extract_tiles(tcga, tmp_path, tile_px=256, tile_um=256, mpp=0.5)
    assert fixed.status == "done" and fixed.tiles > 0 and fixed.mpp == 0.5


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_batch_over_every_real_slide(slides_dir: Path, tmp_path: Path, storage: Remote) -> None:
    """The whole shared folder: good slides extract, bad ones are recorded, the batch completes.

    Remote: the folder's copy under an S3 prefix, ending in ``/`` as a prefix to search
    does (an HTTP server lists no folders).
    """
    progress: list[int] = []
    run = extract_slides(
        [storage.put_tree(slides_dir) + "/"],
        tmp_path,
        tile_px=128,
        tile_um="10x",
        workers=2,
        progress=lambda p: progress.append(p.slides_done),
        **storage.kw,
    )
    by_name = {r.slide: r for r in run.results}
    expected_names = {
        "CMU-1-Small-Region", "tcga-cr-7395-01a-01-ts1", "openslide-python-small",
        "openslide-python-unreadable", "openslide-python-unopenable", "openslide-python-boxes",
        "dicom-openslide-boxes", "dicom-highdicom-jpegls", "dicom-pathml-small_dicom",
        "histolab-broken", "kidney-48-5", "test3-DAPI-2-387",
    }  # fmt: skip
    assert set(by_name) == expected_names
    assert by_name["CMU-1-Small-Region"].status == "done"
    for bad in ("histolab-broken", "openslide-python-unopenable", "dicom-highdicom-jpegls"):
        assert by_name[bad].status == "failed"
        assert by_name[bad].error_type in (
            "UnsupportedSlideError",
            "SlideError",
            "CorruptSlideError",
        )
    assert by_name["openslide-python-unreadable"].status == "failed"
    # no objective power and no mpp: 10x cannot be resolved
    assert by_name["tcga-cr-7395-01a-01-ts1"].error_type == "MissingMPPError"
    assert by_name["kidney-48-5"].error_type == "MissingMPPError"
    # the fluorescence (DAPI) slide is nearly black: its saturated nuclear signal is tissue,
    # its black background is not (white-background rules would keep everything or nothing)
    dapi = by_name["test3-DAPI-2-387"]
    assert dapi.status == "done" and 0 < dapi.tiles < dapi.grid and dapi.rejected["tissue"] > 0
    # 16 x 16 px slides are smaller than one tile: a clear failure, not an empty TFRecord
    for tiny in ("openslide-python-small", "dicom-openslide-boxes"):
        assert by_name[tiny].status == "failed" and "smaller than one tile" in (
            by_name[tiny].error or ""
        )
    assert (
        by_name["openslide-python-boxes"].error_type == "MissingMPPError"
    )  # 72 dpi is not a resolution
    assert progress and progress[-1] == len(expected_names)
    states = list((run.run_dir / "state").glob("*.json"))
    assert len(states) == len(expected_names)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["done"] == run.done and summary["failed"] == len(run.failed)
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert set(manifest) == {f"{r.slide}.tfrecords" for r in run.results if r.status == "done"}
    assert not list(run.run_dir.rglob("*.tmp"))


def test_csv_slide_list_with_overrides(slides_dir: Path, tmp_path: Path, storage: Remote) -> None:
    listing = tmp_path / "slides.csv"
    tcga, kidney = storage.put(
        [slides_dir / "tcga-cr-7395-01a-01-ts1.svs", slides_dir / "kidney-48-5.tif"]
    )
    missing = storage.join(tcga.rsplit("/", 1)[0], "missing.svs")
    listing.write_text(f"slide,mpp\n{tcga},0.5\n{kidney},0.8\n{missing},\n")
    # the kidney crop holds one small fragment of tissue: small tiles
    run = extract_slides(
        [listing], tmp_path / "out", tile_px=32, tile_um=32, workers=1, **storage.kw
    )
    by_name = {r.slide: r for r in run.results}
    assert by_name["tcga-cr-7395-01a-01-ts1"].status == "done"
    assert by_name["kidney-48-5"].status == "done" and by_name["kidney-48-5"].mpp == 0.8
    assert (
        by_name["missing"].status == "failed"
        and by_name["missing"].error_type == "SlideNotFoundError"
    )


def test_duplicate_names_and_no_slides(tmp_path: Path, cmu_slide: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.svs").write_bytes(cmu_slide.read_bytes())
    with pytest.raises(ConfigError, match="same name"):
        extract_slides([tmp_path / "a", tmp_path / "b"], tmp_path / "out", tile_px=64, tile_um=64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no slides"):
        extract_slides([tmp_path / "empty"], tmp_path / "out", tile_px=64, tile_um=64)


def test_output_folder_not_writable(cmu_slide: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExtractionError, match="a-file"):
        extract_tiles(cmu_slide, blocker / "out", tile_px=64, tile_um=64)


@pytest.mark.parametrize("storage", storage_kinds("local", "s3"), indirect=True)
def test_each_task_logs_its_memory_estimate(
    cmu_slide: Path, tmp_path: Path, storage: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    slide = storage.name(cmu_slide)
    with caplog.at_level("INFO", logger="tilestream.extract.engine"):
        extract_tiles(slide, tmp_path, tile_px=128, tile_um=256, threads=2, **storage.kw)
    estimates = [r.getMessage() for r in caplog.records if "memory estimate" in r.getMessage()]
    assert len(estimates) == 1 and "CMU-1-Small-Region" in estimates[0] and "MB" in estimates[0]
