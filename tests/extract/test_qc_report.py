"""The QC view of the report: per slide the outlined preview, areas in mm², rejected per reason.

``summary.json`` carries the same numbers as ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tilestream.extract import ExtractConfig, extract_tiles
from tilestream.extract.lowres import mask_downsample, read_lowres
from tilestream.extract.outlines import CLASS_COLORS
from tilestream.extract.preview import render_preview
from tilestream.extract.report import slide_qc, write_report
from tilestream.extract.roi import load_rois, rasterize_rois
from tilestream.slide import open_slide

OPTIONS: dict[str, Any] = {"tile_px": 64, "tile_um": 32}


@pytest.fixture(scope="module")
def cmu_run(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qc")
    result = extract_tiles(cmu_slide, out, threads=1, **OPTIONS)
    assert result.status == "done", result.error
    return out / "64px_32um"


def test_summary_and_report_carry_areas_and_rejections(cmu_run: Path) -> None:
    name = "CMU-1-Small-Region"
    state = json.loads((cmu_run / "state" / f"{name}.json").read_text())
    summary = json.loads((cmu_run / "summary.json").read_text())
    qc = summary["qc"][name]
    # the tissue area is the outline's: mask pixels x downsample² x mpp²
    outline = cmu_run / f"{name}.geojson"
    assert qc["outlines"] == outline.name
    rois = [r for r in load_rois(outline) if r.label == "Tissue"]
    with open_slide(state["path"]) as slide:
        lowres = read_lowres(slide, mask_downsample(slide.dimensions, state["extract_px"]))
    ds = lowres.downsample
    mask = rasterize_rois(rois, lowres.shape, ds)
    expected = mask.sum() * ds * ds * state["mpp"] ** 2 / 1e6
    assert qc["areas_mm2"]["tissue_mm2"] == pytest.approx(expected, rel=1e-3)
    assert 0.2 < qc["areas_mm2"]["tissue_mm2"] < 1.64  # the crop is 1.1 x 1.5 mm
    assert qc["rejected"] == state["rejected"] and qc["rejected"]["tissue"] > 0
    page = (cmu_run / "report.html").read_text()
    assert f"tissue: {qc['areas_mm2']['tissue_mm2']:.3f} mm²" in page
    for reason, n in qc["rejected"].items():
        assert f"<li>{reason}: {n}</li>" in page
    assert f'href="{name}.geojson"' in page and f"previews/{name}.jpg" in page


def test_recorded_pen_and_artifact_areas_and_new_reasons_are_shown(cmu_run: Path) -> None:
    """The QC pass records ``qc`` areas and new reject reasons: shown without a code change."""
    name = "CMU-1-Small-Region"
    path = cmu_run / "state" / f"{name}.json"
    original = path.read_text()
    state = json.loads(original)
    state["qc"] = {"tissue_mm2": 0.5, "pen_mm2": 0.125, "fold_mm2": 0.0625}
    state["rejected"] = {**state["rejected"], "pen": 7, "fold": 3}
    try:
        path.write_text(json.dumps(state))
        summary = write_report(cmu_run, ExtractConfig(**OPTIONS))
        qc = summary["qc"][name]
        assert qc["areas_mm2"] == state["qc"]
        assert qc["rejected"]["pen"] == 7 and qc["rejected"]["fold"] == 3
        on_disk = json.loads((cmu_run / "summary.json").read_text())
        assert on_disk["qc"] == summary["qc"]
        page = (cmu_run / "report.html").read_text()
        assert "pen: 0.125 mm²" in page and "fold: 0.062 mm²" in page
        assert "<li>pen: 7</li>" in page and "<li>fold: 3</li>" in page
        assert f"rgb{CLASS_COLORS['Pen']}" in page
    finally:
        path.write_text(original)
        write_report(cmu_run, ExtractConfig(**OPTIONS))


def test_slide_qc_of_a_failed_or_odd_state_is_empty(tmp_path: Path) -> None:
    qc = slide_qc(tmp_path, {"slide": "x", "status": "failed", "rejected": None, "qc": "junk"})
    assert qc == {"areas_mm2": {}, "rejected": {}, "outlines": None}
    (tmp_path / "x.geojson").write_text("{not json")
    assert slide_qc(tmp_path, {"slide": "x", "mpp": 0.5})["areas_mm2"] == {}


def test_preview_outlines_pen_and_artifacts_in_their_colours() -> None:
    img = np.full((60, 80, 3), 255, np.uint8)
    tissue = np.zeros((60, 80), bool)
    tissue[10:50, 10:70] = True
    pen = np.zeros_like(tissue)
    pen[20:30, 20:30] = True
    fold = np.zeros_like(tissue)
    fold[35:45, 40:60] = True
    out = np.asarray(
        render_preview(img, 1.0, tissue=tissue & ~pen, qc_masks={"pen": pen, "fold": fold})
    )
    assert (out[20, 25] == CLASS_COLORS["Pen"]).all()
    assert (out[40, 40] == CLASS_COLORS["Fold"]).all()
    assert (out[25, 25] == 255).all()  # inside the pen region: not drawn over
